//! PROTOCOL.md "Metrics (v2)" over real loopback TCP: the exposition's
//! figures against a known scenario, `promtool check metrics` on the real
//! output, the 404 / 431 answers, the 5 s request deadline, and the
//! `metrics listening on ADDR` log line of the real binary.

mod common;

use chatd::Config;
use common::http::{http, metrics_page, series_value};
use common::{RealServer, TestServer, wait_for};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A server with `--metrics 127.0.0.1:0`.
fn server() -> TestServer {
    TestServer::start(Config {
        metrics: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::ephemeral()
    })
}

/// `GET /metrics`, split into head and body; the status must be 200.
fn scrape(addr: SocketAddr) -> (String, String) {
    let (head, body) = metrics_page(addr);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (head, body)
}

#[test]
fn figures_match_a_known_scenario() {
    let server = server();
    let addr = server.metrics.expect("metrics address");
    let (head, body) = scrape(addr);
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert_eq!(series_value(&body, "chatd_connections"), 0.0);
    for reason in ["full", "ip_limit", "banned"] {
        let series = format!("chatd_connections_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(series_value(&body, &series), 0.0, "{series} present at 0");
    }
    for reason in [
        "closed", "quit", "idle", "too_slow", "kicked", "error", "shutdown",
    ] {
        let series = format!("chatd_disconnects_total{{reason=\"{reason}\"}}");
        assert_eq!(series_value(&body, &series), 0.0, "{series} present at 0");
    }

    // Three users, two chat lines.
    let mut a = server.join();
    let mut b = server.join_seen_by(&mut a);
    let mut c = server.join_seen_by(&mut a);
    b.skip_until(&format!("{} has arrived", c.name));
    a.send("one");
    b.send("two");
    let a_name = a.name.clone();
    for client in [&mut a, &mut b, &mut c] {
        client.skip_until(&format!("{a_name}: one"));
    }
    let b_name = b.name.clone();
    for client in [&mut a, &mut b, &mut c] {
        client.skip_until(&format!("{b_name}: two"));
    }
    let (_, body) = scrape(addr);
    assert_eq!(series_value(&body, "chatd_connections"), 3.0);
    assert_eq!(series_value(&body, "chatd_rooms"), 1.0);
    assert!(series_value(&body, "chatd_connections_accepted_total") >= 3.0);
    assert!(series_value(&body, "chatd_lines_received_total") >= 2.0);
    assert!(series_value(&body, "chatd_deliveries_total") >= 6.0);
    assert!(series_value(&body, "chatd_history_lines_total") >= 2.0);
    assert!(series_value(&body, "chatd_bytes_received_total") >= 8.0);
    assert!(series_value(&body, "chatd_bytes_sent_total") > 0.0);
    assert!(series_value(&body, "process_resident_memory_bytes") > 0.0);
    assert!(series_value(&body, "process_open_fds") > 0.0);

    // A quit and a close are counted by reason.
    c.send("/quit");
    c.expect("Bye");
    let c_name = c.name.clone();
    a.skip_until(&format!("{c_name} has left"));
    let (_, body) = scrape(addr);
    assert_eq!(series_value(&body, "chatd_connections"), 2.0);
    assert_eq!(
        series_value(&body, r#"chatd_disconnects_total{reason="quit"}"#),
        1.0
    );
}

#[test]
fn other_paths_are_404_and_huge_heads_431() {
    let server = server();
    let addr = server.metrics.expect("metrics address");
    let answer = http(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 9000));
    huge.extend_from_slice(b"\r\n\r\n");
    let answer = http(addr, &huge);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // The chat goes on.
    let mut a = server.join();
    a.send("still here");
    a.skip_until(&format!("{}: still here", a.name.clone()));
}

#[test]
fn a_request_not_complete_within_5_s_is_closed() {
    let server = server();
    let addr = server.metrics.expect("metrics address");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let start = Instant::now();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let took = start.elapsed();
    assert!(rest.is_empty(), "no answer to an unfinished head");
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_secs(7),
        "closed after {took:?}"
    );
}

#[test]
fn promtool_accepts_the_exposition() {
    let Ok(version) = Command::new("promtool").arg("--version").output() else {
        eprintln!(
            "\n!!! promtool_accepts_the_exposition DID NOT RUN: promtool is missing (apt-get install prometheus) !!!\n"
        );
        assert!(std::env::var_os("CI").is_none(), "CI must have promtool");
        return;
    };
    assert!(version.status.success());
    let server = server();
    let addr = server.metrics.expect("metrics address");
    let mut a = server.join();
    a.send("hello");
    a.skip_until(&format!("{}: hello", a.name.clone()));
    let (_, body) = scrape(addr);
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_binary_logs_where_metrics_listen() {
    let server = RealServer::start(&["--metrics", "127.0.0.1:0"]);
    let mut addr = None;
    assert!(wait_for(common::READ_TIMEOUT, || {
        addr = server.log_text().lines().find_map(|l| {
            l.split_once("metrics listening on ")
                .map(|(_, a)| a.trim().to_string())
        });
        addr.is_some()
    }));
    let addr: SocketAddr = addr.unwrap().parse().unwrap();
    let (_, body) = scrape(addr);
    assert!(body.contains("chatd_connections 0"), "{body}");
}
