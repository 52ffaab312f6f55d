//! `chatload`: the load generator that produces the figures in BENCHMARKS.md
//! (`chatload --help`). Everything but this entry point is the library's
//! [`chatd_tools::load`].

use std::process::ExitCode;

fn main() -> ExitCode {
    chatd_tools::load::main()
}
