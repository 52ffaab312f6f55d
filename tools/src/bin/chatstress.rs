//! `chatstress`: bounded stress and soak runs against a chatd it starts
//! itself; README.md, "Limits and failure behaviour", gives the figures.
//! Everything but this entry point is the library's [`chatd_tools::stress`].
//!
//! ```text
//! chatstress capacity|slow|flood|soak [options]     (chatstress --help)
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    chatd_tools::stress::main()
}
