//! `chatstress`: bounded stress and soak scenarios against a chatd it
//! starts itself, one per point of README.md's "Limits and failure
//! behaviour" that needs more than a unit test: capacity (point 2), slow
//! consumers (3), floods (4) and the soak (7; abrupt ends, point 5, happen
//! in it too); and three for the server's bounds under crowds and rooms:
//! a crowd closing at once (`--max-outbound-total`), connection churn (the
//! idle wheel), and rooms with users moving and chatting (every delivery
//! checked against the room it was said in).
//!
//! Each scenario prints its figures and a line per check, and returns an
//! error naming the checks that failed; [`main`] turns that into the exit
//! status. Traffic goes to 127.0.0.1 only.

mod args;
mod capacity;
mod churn;
mod crowd;
mod flood;
mod rng;
mod rooms;
mod slow;
mod soak;

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use crate::chatd::{self, Chatd};
use crate::procstat::ProcSample;
use crate::report::mib;
use args::{Command, Scenario};

/// What a scenario returns: Ok, or which checks failed.
type Outcome = Result<(), String>;

/// Runs the scenario named on the command line. Exit status: 0 if every
/// check passed, 1 if one failed, 2 on a usage error or when chatd cannot
/// be found.
pub fn main() -> ExitCode {
    let command = match args::parse() {
        Ok(command) => command,
        Err(usage) => {
            eprintln!("chatstress: {usage}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    let outcome = match command {
        Command::Help => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Command::CapacityChild { addr, count } => capacity::child(addr, count),
        Command::CrowdChild { addr, count } => crowd::child(addr, count),
        Command::Run { chatd, scenario } => {
            let path = match chatd::locate(chatd.as_deref()) {
                Ok(path) => path,
                Err(e) => {
                    eprintln!("chatstress: {e}");
                    return ExitCode::from(2);
                }
            };
            match scenario {
                Scenario::Capacity(o) => capacity::run(&path, o),
                Scenario::Slow(o) => slow::run(&path, o),
                Scenario::Flood(o) => flood::run(&path, o),
                Scenario::Soak(o) => soak::run(&path, o),
                Scenario::Crowd(o) => crowd::run(&path, o),
                Scenario::Churn(o) => churn::run(&path, o),
                Scenario::Rooms(o) => rooms::run(&path, o),
            }
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("chatstress: FAILED: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// Collects failed checks so a scenario can report all of them.
#[derive(Debug, Default)]
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    /// Records and prints one check.
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        println!("  [{}] {what}", if ok { "ok" } else { "FAIL" });
        if !ok {
            self.failed.push(what);
        }
    }

    /// The checks every scenario ends with on the server's health: it is
    /// still running and its log shows no panic.
    fn server_healthy(&mut self, server: &mut Chatd) {
        self.check(server.alive(), "server alive");
        self.check(server.panic_count() == 0, "no panic in the log");
    }

    /// Stops the server (exiting 0 on SIGTERM is the last check) and gives
    /// the outcome.
    fn stop_server(mut self, server: Chatd) -> Outcome {
        self.check(server.stop(), "server exits 0 on SIGTERM");
        self.outcome()
    }

    /// Ok if every check passed.
    fn outcome(self) -> Outcome {
        if self.failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} check(s) failed: {}",
                self.failed.len(),
                self.failed.join("; ")
            ))
        }
    }
}

/// Broken invariants seen during a run: how many, and the first few in
/// full for the report.
#[derive(Debug, Default)]
struct Violations {
    count: u64,
    samples: Vec<String>,
}

impl Violations {
    /// Counts one, keeping its text while fewer than `keep` are kept.
    fn record(&mut self, what: String, keep: usize) {
        self.count += 1;
        if self.samples.len() < keep {
            self.samples.push(what);
        }
    }

    /// Prints the kept ones, one line each.
    fn print(&self) {
        for v in &self.samples {
            println!("  violation: {v}");
        }
    }
}

/// Prints what the server cost over a run: RSS at the start, the peak
/// sampled, VmHWM and RSS at the end, and its CPU time.
fn print_server_cost(base: &ProcSample, peak: u64, end: &ProcSample) {
    println!(
        "  server RSS: start {}, peak {} (VmHWM {}), end {}; CPU {:.1} s",
        mib(base.rss),
        mib(peak),
        mib(end.hwm),
        mib(end.rss),
        end.cpu_s
    );
}

/// Writes as much of `buf` as a non-blocking `stream` takes now (up to
/// `WouldBlock`, a 0-byte write or an error, retrying after `EINTR`);
/// returns how many bytes went.
fn write_some(stream: &mut impl Write, buf: &[u8]) -> usize {
    let mut written = 0;
    while written < buf.len() {
        match stream.write(&buf[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    written
}

/// A connection's own address as text: the name chatd greets it with
/// (PROTOCOL.md: "its peer address as printed by Rust's `SocketAddr`
/// `Display`"); empty if the socket is gone.
fn own_name(stream: Option<&mio::net::TcpStream>) -> String {
    stream
        .and_then(|s| s.local_addr().ok())
        .map(|a| a.to_string())
        .unwrap_or_default()
}

/// Extra chatd flags from `CHATSTRESS_CHATD_ARGS` (space-separated), for
/// experiments with flags the scenarios do not set.
fn extra_args() -> Vec<String> {
    std::env::var("CHATSTRESS_CHATD_ARGS")
        .map(|a| a.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// Starts `bin` with `args` and those of `CHATSTRESS_CHATD_ARGS`, and waits
/// until it listens.
fn start_chatd(bin: &Path, args: &[&str]) -> Result<Chatd, String> {
    let args = args.iter().map(|a| a.to_string()).chain(extra_args());
    Chatd::start(bin, args)
}
