//! The real `chatd` binary, as a user runs it: its flags, its log line,
//! a session through the real `nc`, and SIGTERM.

mod common;

use common::{CHATD, Client, READ_TIMEOUT, RealServer};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn help_and_version_work() {
    let help = Command::new(CHATD).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--idle-timeout",
        "--max-line",
        "--max-clients",
        "--max-outbound",
        "--flood-rate",
        "--flood-burst",
        "--log-level",
    ] {
        assert!(text.contains(flag), "--help mentions {flag}");
    }
    let version = Command::new(CHATD).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("chatd "));
}

#[test]
fn bad_flags_are_refused_with_status_2() {
    for args in [
        &["--max-line", "lots"][..],
        &["--log-level", "loud"],
        &["--listen", "nowhere"],
        &["--frobnicate"],
    ] {
        let out = Command::new(CHATD).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn sigterm_tells_everyone_and_exits_zero() {
    let mut server = RealServer::start(&[]);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::join(server.addr)).collect();
    let last = clients[2].name.clone();
    clients[2].send("ready");
    for client in clients.iter_mut() {
        client.skip_until(&format!("{last}: ready"));
    }
    server.terminate();
    for client in clients.iter_mut() {
        client.expect("Server is shutting down");
        client.expect_eof();
    }
    assert_eq!(server.wait().code(), Some(0));
}

/// A session through netcat-openbsd, as README.md shows it.
#[test]
fn real_nc_session() {
    if Command::new("nc").arg("-h").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "nc is required in CI (.ci/run installs netcat-openbsd)"
        );
        eprintln!("\n!!! real_nc_session DID NOT RUN: `nc` is not installed !!!\n");
        return;
    }
    let server = RealServer::start(&[]);
    let mut watcher = Client::join(server.addr);
    let port = server.addr.port().to_string();
    let mut nc = Command::new("nc")
        .args(["-N", "127.0.0.1", &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("nc starts");
    let mut input = nc.stdin.take().unwrap();
    let output = nc.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let next = || {
        lines_rx
            .recv_timeout(READ_TIMEOUT)
            .expect("nc printed a line")
    };

    let greeting = next();
    let nc_name = greeting
        .strip_prefix("You are ")
        .expect("greeting")
        .to_string();
    watcher.expect(&format!("{nc_name} has arrived"));
    input.write_all(b"/nick netcat\r\nhello from nc\n").unwrap();
    assert_eq!(next(), format!("{nc_name} is now known as netcat"));
    assert_eq!(next(), "netcat: hello from nc");
    watcher.expect(&format!("{nc_name} is now known as netcat"));
    watcher.expect("netcat: hello from nc");
    watcher.send("hi nc");
    assert_eq!(next(), format!("{}: hi nc", watcher.name));
    input.write_all(b"who\n").unwrap();
    assert_eq!(next(), "2 users in #lobby:");
    assert_eq!(next(), format!("  {}", watcher.name));
    assert_eq!(next(), "  netcat (you)");
    // Closing nc's input makes it half-close (-N): the server sees EOF.
    drop(input);
    watcher.expect(&format!("{}: hi nc", watcher.name));
    watcher.expect("netcat has left");
    let end = Instant::now() + READ_TIMEOUT;
    while nc.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < end,
            "nc did not exit after the server closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--max-outbound` must leave room for one longest line: below
/// `--max-line` + 256 the server refuses to start, with status 2 and a
/// message; exactly that much is fine.
#[test]
fn max_outbound_below_max_line_plus_256_exits_2() {
    for args in [
        &["--max-outbound", "2048"][..],
        &["--max-outbound", "4351"],
        &["--max-line", "100", "--max-outbound", "355"],
    ] {
        let out = Command::new(CHATD)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let message = String::from_utf8_lossy(&out.stderr);
        assert!(message.contains("--max-outbound"), "{args:?}: {message}");
    }
    for args in [
        &["--max-outbound", "4352"][..],
        &["--max-line", "100", "--max-outbound", "356"],
    ] {
        let mut server = RealServer::start(args);
        let mut client = Client::join(server.addr);
        client.send("fits");
        client.expect(&format!("{}: fits", client.name));
        server.terminate();
        client.expect("Server is shutting down");
        assert_eq!(server.wait().code(), Some(0), "{args:?}");
    }
}
