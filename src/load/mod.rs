//! The load generator's module tree, one idea per module.
//!
//! Why a single mio poll loop and no threads per client: the generator must
//! hold 10,000 connections on the same 2-core machine as the server it
//! measures, and every thread it spends is CPU stolen from the server. One
//! loop, like the server's, keeps the tool's own footprint small and its
//! timing honest (senders pace with the poll timeout, never `sleep`).
//!
//! ```text
//! args --> scenario (fanout / ladder) --> swarm (mio loop of clients)
//!   \--> suite / smoke --> chatd (child process) + scenario   stats, procstat --> report
//! ```

mod args;
mod chatd;
mod client;
mod lines;
mod marker;
mod procstat;
mod report;
mod scenario;
mod stats;
mod suite;
mod swarm;

use args::Mode;

/// Runs the subcommand chosen on the command line; returns the exit status
/// (0 only when every check that was asked for passed).
pub fn main() -> i32 {
    let opts = match args::parse() {
        Ok(opts) => opts,
        Err(msg) => {
            eprintln!("chatload: {msg}\n\n{}", args::USAGE);
            return 2;
        }
    };
    match opts.mode {
        Mode::Help => {
            println!("{}", args::USAGE);
            0
        }
        Mode::Fanout => scenario::run_cli(&opts),
        Mode::Suite => suite::run_suite(&opts),
        Mode::Smoke => suite::run_smoke(&opts),
    }
}
