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

    let bad = run(bin, &["--metrics", "127.0.0.1:1", "--server-pid", "1"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(text(&help.stdout).contains("--metrics URL"));
    assert!(text(&help.stdout).contains("--scrape-ms N"));

    // TLS flags: --ca only with TLS clients, a storm needs a TLS address.
    for flag in ["--tls", "--ca FILE", "--tls-storm N", "[--tls]"] {
        assert!(text(&help.stdout).contains(flag), "help lacks {flag}");
    }
    let bad = run(bin, &["--ca", "/tmp/ca.pem"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    let bad = run(bin, &["--tls-storm", "10"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));

    // The cluster set: documented, and only for the suite.
    for flag in ["--cluster LIST", "--cluster-cost", "--redis-server PATH"] {
        assert!(text(&help.stdout).contains(flag), "help lacks {flag}");
    }
    let bad = run(bin, &["suite", "--cluster", "1,none"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    let bad = run(bin, &["--cluster", "2"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
}

#[test]
fn chatload_reports_an_unreachable_metrics_endpoint() {
    // Nothing listens on the address once the listener is gone: the
    // session must say it could not read the server, not invent figures.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let chat = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = chat.local_addr().expect("addr").to_string();
    drop(chat);
    let out = run(
        env!("CARGO_BIN_EXE_chatload"),
        &[
            "--addr",
            &addr,
            "--metrics",
            &format!("http://127.0.0.1:{port}/metrics"),
            "--clients",
            "1",
            "--senders",
            "1",
            "--duration",
            "0",
            "--connect-timeout",
            "2",
            "--quiet",
            "--check",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot sample the server before connecting"),
        "{}",
        text(&out.stderr)
    );
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
    for scenario in [
        "capacity", "slow", "flood", "soak", "crowd", "churn", "rooms",
    ] {
        assert!(usage.contains(scenario), "{usage}");
    }

    let bad = run(bin, &["soak", "--mb", "1"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("--mb is not an option of soak"));

    let bad = run(bin, &["rooms", "--no-total-flag"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("--no-total-flag is not an option of rooms"));

    let missing = run(bin, &["soak", "--chatd", "/nonexistent/chatd"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("chatd not found"));
}
