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

use std::path::Path;
use std::process::ExitCode;

use crate::chatd::{self, Chatd};
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
