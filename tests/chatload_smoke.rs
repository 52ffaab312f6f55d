//! CI smoke for the load generator: `chatload smoke`, run from the tools'
//! library against the chatd binary this package builds. It pushes a couple
//! of seconds of fan-out through chatd and fails unless every expected line
//! reached every client, once and in order, and chatd exited 0 on SIGTERM.
//!
//! Why here, among the server's tests: it is the one check that exercises
//! the server's real mio loop end to end under concurrent load, with counts
//! that must be exact, and only this package can name its binary
//! (`CARGO_BIN_EXE_chatd`). Every phase of the run has its own deadline; the
//! test also gives up after [`LIMIT`], so a hang fails CI instead of stalling
//! it.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use chatd_tools::load::{self, Options};

/// Longest the smoke may take before it is considered hung.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn chatload_smoke_delivers_every_line() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let opts = Options {
            quiet: true,
            ..Options::default()
        };
        let _ = tx.send(load::smoke(Path::new(env!("CARGO_BIN_EXE_chatd")), &opts));
    });
    let smoke = match rx.recv_timeout(LIMIT) {
        Ok(run) => run.expect("chatd starts"),
        Err(_) => panic!("chatload smoke did not finish within {LIMIT:?}"),
    };
    assert!(
        smoke.passed(),
        "chatload smoke failed:\n{}\n{}",
        smoke.text(),
        smoke.problems().join("\n")
    );
    assert!(smoke.text().contains("check: PASS"), "{}", smoke.text());
}
