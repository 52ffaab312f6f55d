//! The real `chatd` binary, as a user runs it: its flags, its log line,
//! a session through the real `nc`, and SIGTERM.

mod common;

use common::{Client, READ_TIMEOUT};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

/// The real server on a free port; killed on drop if still running.
struct RealServer {
    child: Child,
    addr: SocketAddr,
}

impl RealServer {
    /// Starts `chatd --listen 127.0.0.1:0 ARGS` and reads its bound address
    /// from the `listening on ADDR` log line.
    fn start(args: &[&str]) -> RealServer {
        let mut child = Command::new(CHATD)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chatd starts");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("chatd logs before exiting")
                .expect("stderr is text");
            if let Some((_, addr)) = line.split_once("listening on ") {
                break addr.trim().parse().expect("a socket address");
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        RealServer { child, addr }
    }

    /// Waits (bounded) for the process to exit and returns its status.
    fn wait(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + READ_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "chatd did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    // SAFETY: kill only sends a signal to our own child process.
    let sent = unsafe { libc::kill(server.child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
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
    assert_eq!(next(), "2 users online:");
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
