//! `chatload`, the load generator behind BENCHMARKS.md, one idea per module.
//!
//! It works against any line-based chat server (Go's, tokio's example,
//! chatd): it only speaks the wire protocol, and only needs the server to
//! broadcast a line to everyone, sender included, with the text intact.
//!
//! Why a single mio poll loop and no threads per client: the generator must
//! hold 10,000 connections on the same 2-core machine as the server it
//! measures, and every thread it spends is CPU stolen from the server. One
//! loop, like the server's, keeps the tool's own footprint small and its
//! timing honest (senders pace with the poll timeout, never `sleep`).
//!
//! ```text
//! args --> scenario (fanout / ladder) --> swarm (mio loop of clients,
//!   |                     |                  plain or TLS: client::Conn)
//!   |                     \--> storm (a second swarm on a thread: TLS
//!   |                           clients all at once during a step)
//!   \--> suite / smoke --> chatd (child process) + scenario
//!   |                       marker, tally, procstat --> report
//!   \--> suite --cluster --> cluster (redis-server + N chatd on one port,
//!                             linked; scenario against the shared port)
//! ```

mod args;
mod client;
mod cluster;
mod marker;
mod scenario;
mod storm;
mod suite;
mod swarm;
mod tally;

use std::process::ExitCode;

use args::Mode;

pub use args::Options;
pub use suite::{Smoke, smoke};

/// Runs the subcommand chosen on the command line; the exit status is 0
/// only when every check that was asked for passed, 1 when one failed, and
/// 2 on a usage error or when chatd could not be started.
pub fn main() -> ExitCode {
    let opts = match args::parse() {
        Ok(opts) => opts,
        Err(msg) => {
            eprintln!("chatload: {msg}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let status = match opts.mode {
        Mode::Help => {
            println!("{}", args::USAGE);
            0
        }
        Mode::Fanout => scenario::run_cli(&opts),
        Mode::Suite => suite::run_suite(&opts),
        Mode::Smoke => suite::run_smoke(&opts),
    };
    ExitCode::from(status)
}
