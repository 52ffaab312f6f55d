//! `chatload`: the load generator that produces the figures in BENCHMARKS.md.
//!
//! It lives in its own module tree (`src/load/`) rather than in the library,
//! because it is a measuring instrument, not part of the server: nothing in
//! chatd depends on it, and it must work against any line-based chat server
//! (Go's, tokio's example, chatd), so it only speaks the wire protocol.

#[path = "../load/mod.rs"]
mod load;

fn main() {
    std::process::exit(load::main());
}
