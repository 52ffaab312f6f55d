//! CI smoke for the load generator: `chatload smoke` starts the chatd built
//! alongside it, pushes a couple of seconds of fan-out through it, and fails
//! unless every expected line reached every client, once and in order.
//!
//! Why an integration test and not a unit test: it is the one check that
//! exercises the server's real mio loop end to end under concurrent load,
//! with counts that must be exact. It is bounded in time: a hung run is
//! killed and reported as a failure rather than stalling CI.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest the smoke may take before it is considered hung.
const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn chatload_smoke_delivers_every_line() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatload"))
        .args(["smoke", "--quiet", "--chatd", env!("CARGO_BIN_EXE_chatd")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chatload starts");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chatload") {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chatload smoke did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    assert!(
        status.success(),
        "chatload smoke failed ({status}):\n{out}\n{err}"
    );
    assert!(out.contains("check: PASS"), "no PASS line:\n{out}\n{err}");
}
