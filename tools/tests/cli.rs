//! The two binaries' command lines and exit statuses, without a server:
//! 0 for help, 2 for a usage error or a chatd that cannot be found (the
//! runs themselves are exercised by `tests/chatload_smoke.rs` at the
//! workspace root, which has the chatd binary to hand).

use std::process::{Command, Output};

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin).args(args).output().expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn chatload_help_and_usage_errors() {
    let bin = env!("CARGO_BIN_EXE_chatload");
    let help = run(bin, &["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).starts_with("usage: chatload"));

    let bad = run(bin, &["--no-such-flag"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("usage: chatload"));

    let bad = run(bin, &["--clients", "2", "--senders", "3"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
}

#[test]
fn chatload_without_chatd_says_where_it_looked() {
    let out = run(
        env!("CARGO_BIN_EXE_chatload"),
        &["smoke", "--chatd", "/nonexistent/chatd"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("chatd not found at /nonexistent/chatd"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn chatstress_help_and_usage_errors() {
    let bin = env!("CARGO_BIN_EXE_chatstress");
    let help = run(bin, &["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let usage = text(&help.stdout);
    for scenario in ["capacity", "slow", "flood", "soak"] {
        assert!(usage.contains(scenario), "{usage}");
    }

    let bad = run(bin, &["soak", "--mb", "1"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("--mb is not an option of soak"));

    let missing = run(bin, &["soak", "--chatd", "/nonexistent/chatd"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("chatd not found"));
}
