//! `Stream::Tls` and the certificate loading over real loopback sockets:
//! an in-process rustls client against a small mio loop (tls_support).

mod common;
mod tls_support;

use chatd::stream::TLS_SEND_BUFFER_LIMIT;
use chatd::tls::{Reloadable, TlsError, TlsFiles, load_config};
use rustls::version::{TLS12, TLS13};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;
use tls_support::*;

/// A server with a fresh certificate, and the directory holding it.
fn server(mode: Mode) -> (TestServer, TestCert, TempDir) {
    let dir = TempDir::new("srv");
    let cert = TestCert::new();
    let files = cert.write_to(&dir);
    let tls = Reloadable::load(files).expect("load test certificate");
    (TestServer::start(tls, mode), cert, dir)
}

/// Echoes short lines and a line over 64 KiB through `client`.
fn echo_lines(client: &mut TlsClient) {
    for line in [&b"hello\n"[..], b"second line\n", b"\n"] {
        send(client, line);
        expect_bytes(client, line);
    }
    // Over 64 KiB, so it spans several records each way and more than
    // rustls's send buffer limit.
    let mut big: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    big.push(b'\n');
    send(client, &big);
    expect_bytes(client, &big);
    // Several lines in one write come back in one piece.
    send(client, b"one\ntwo\nthree\n");
    expect_bytes(client, b"one\ntwo\nthree\n");
}

#[test]
fn tls13_handshake_then_echo_including_a_line_over_64k() {
    let (server, cert, _dir) = server(Mode::Echo);
    let mut client = connect(server.addr, &TLS13);
    assert!(matches!(
        server.next(),
        Report::Accepted {
            handshaking: true,
            ..
        }
    ));
    assert!(matches!(server.next(), Report::HandshakeDone { .. }));
    assert_eq!(
        client.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(served_cert(&client), cert.cert_der);
    echo_lines(&mut client);
}

#[test]
fn tls12_handshake_then_echo_including_a_line_over_64k() {
    let (server, _cert, _dir) = server(Mode::Echo);
    let mut client = connect(server.addr, &TLS12);
    server.wait_for("handshake", |r| matches!(r, Report::HandshakeDone { .. }));
    assert_eq!(
        client.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    echo_lines(&mut client);
}

#[test]
fn a_greeting_written_during_the_handshake_waits_and_arrives_first() {
    const GREETING: &[u8] = b"You are 127.0.0.1\n";
    let (server, _cert, _dir) = server(Mode::Greet(GREETING));
    let mut client = connect(server.addr, &TLS13);
    server.wait_for("accept", |r| matches!(r, Report::Accepted { .. }));
    // No keys yet: the stream takes nothing and the outbox keeps it.
    assert!(matches!(
        server.next(),
        Report::EarlyWrite {
            result: Err(std::io::ErrorKind::WouldBlock),
            ..
        }
    ));
    server.wait_for("handshake", |r| matches!(r, Report::HandshakeDone { .. }));
    expect_bytes(&mut client, GREETING);
    send(&mut client, b"and then\n");
    expect_bytes(&mut client, b"and then\n");
}

#[test]
fn small_reads_get_every_byte_of_large_records() {
    let (server, _cert, _dir) = server(Mode::EchoSmallReads(7));
    let mut client = connect(server.addr, &TLS13);
    let mut line: Vec<u8> = (0..40_000u32).map(|i| b'0' + (i % 10) as u8).collect();
    line.push(b'\n');
    send(&mut client, &line);
    expect_bytes(&mut client, &line);
}

#[test]
fn a_key_update_from_the_client_keeps_traffic_going() {
    let (server, _cert, _dir) = server(Mode::Echo);
    let mut client = connect(server.addr, &TLS13);
    send(&mut client, b"before\n");
    expect_bytes(&mut client, b"before\n");
    for round in 0..3 {
        client.conn.refresh_traffic_keys().expect("key update");
        let line = format!("after update {round}\n");
        send(&mut client, line.as_bytes());
        expect_bytes(&mut client, line.as_bytes());
    }
}

/// Sends `garbage` to the TLS port in the clear; the server reports a
/// failed handshake (no panic), answers with an alert, and keeps serving
/// others.
fn garbage_fails_the_handshake(garbage: &[u8]) {
    let (server, _cert, _dir) = server(Mode::Echo);
    let mut raw = tcp(server.addr);
    raw.write_all(garbage).expect("write garbage");
    let failed = server.wait_for("failure", |r| matches!(r, Report::Failed { .. }));
    let Report::Failed {
        peer,
        message,
        tls_handshake,
        ..
    } = failed
    else {
        unreachable!()
    };
    assert_eq!(peer, raw.local_addr().expect("local addr"));
    assert_eq!(tls_handshake, Some(true), "{message}");
    assert!(message.starts_with("TLS handshake failed: "), "{message}");
    // The server sent a fatal decode_error alert (record type 21, level 2,
    // description 50), then closed.
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert_eq!(answer, [21, 3, 3, 0, 2, 2, 50], "not the alert");
    // Others are unaffected.
    let mut client = connect(server.addr, &TLS13);
    send(&mut client, b"still here\n");
    expect_bytes(&mut client, b"still here\n");
}

#[test]
fn plain_text_to_the_tls_port_fails_the_handshake() {
    garbage_fails_the_handshake(b"hello everyone\n");
}

#[test]
fn http_to_the_tls_port_fails_the_handshake() {
    garbage_fails_the_handshake(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
}

#[test]
fn a_silent_client_is_still_handshaking_without_error() {
    let (server, _cert, _dir) = server(Mode::Echo);
    let raw = tcp(server.addr);
    assert!(matches!(
        server.next(),
        Report::Accepted {
            handshaking: true,
            ..
        }
    ));
    // Nothing else happens while it says nothing.
    let seen = server.drain_until_quiet(Duration::from_millis(300));
    assert!(seen.is_empty(), "{seen:?}");
    // Hanging up then is a handshake that failed because the client left.
    raw.shutdown(Shutdown::Both).expect("shutdown");
    let failed = server.wait_for("failure", |r| matches!(r, Report::Failed { .. }));
    assert!(
        matches!(
            &failed,
            Report::Failed { message, kind: std::io::ErrorKind::UnexpectedEof, tls_handshake: Some(true), .. }
                if message == "TLS handshake failed: connection closed by the client"
        ),
        "{failed:?}"
    );
}

#[test]
fn a_client_refusing_the_certificate_fails_the_handshake_with_its_alert() {
    let (server, _cert, _dir) = server(Mode::Echo);
    // A client trusting no one: the self-signed certificate is refused.
    let config = rustls::ClientConfig::builder_with_provider(chatd::tls::provider())
        .with_protocol_versions(&[&TLS13])
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
    let mut client = rustls::StreamOwned::new(conn, tcp(server.addr));
    let refused = client.conn.complete_io(&mut client.sock);
    assert!(refused.is_err(), "the client accepted an unknown issuer");
    let failed = server.wait_for("failure", |r| matches!(r, Report::Failed { .. }));
    assert!(
        matches!(
            &failed,
            Report::Failed { message, tls_handshake: Some(true), .. }
                if message.contains("BadCertificate") || message.contains("UnknownCA")
        ),
        "{failed:?}"
    );
}

#[test]
fn a_handshake_message_trickled_in_tiny_records_is_cut_off_at_a_bound() {
    let (server, _cert, _dir) = server(Mode::Echo);
    let mut raw = tcp(server.addr);
    // A ClientHello announcing 65,000 bytes (under rustls's 64 KiB limit for
    // one handshake message), sent 16 bytes per record: 21 bytes on the
    // wire for each 16, all of which must be held until the message is
    // whole, 85 KB in all.
    let mut body = vec![1u8, 0x00, 0xfd, 0xe8];
    body.resize(65_004, 0);
    let mut wire = Vec::new();
    for piece in body.chunks(16) {
        wire.extend_from_slice(&[22, 3, 1, 0, piece.len() as u8]);
        wire.extend_from_slice(piece);
    }
    // The server may close before taking it all.
    let _ = raw.write_all(&wire);
    let failed = server.wait_for("failure", |r| matches!(r, Report::Failed { .. }));
    assert!(
        matches!(
            &failed,
            Report::Failed { message, tls_handshake: Some(true), .. }
                if message.contains("without a complete message")
        ),
        "{failed:?}"
    );
}

#[test]
fn a_corrupted_record_after_the_handshake_fails_that_connection_only() {
    let (server, _cert, _dir) = server(Mode::Echo);
    let mut client = connect(server.addr, &TLS13);
    send(&mut client, b"fine\n");
    expect_bytes(&mut client, b"fine\n");
    // An application-data record the server cannot decrypt.
    let mut record = vec![23u8, 3, 3, 0, 40];
    record.extend((0..40u8).map(|i| i.wrapping_mul(37)));
    client.sock.write_all(&record).expect("write record");
    let failed = server.wait_for("failure", |r| matches!(r, Report::Failed { .. }));
    assert!(
        matches!(
            &failed,
            Report::Failed { message, tls_handshake: Some(false), .. }
                if message.starts_with("TLS error: ")
        ),
        "{failed:?}"
    );
    let mut other = connect(server.addr, &TLS12);
    send(&mut other, b"unaffected\n");
    expect_bytes(&mut other, b"unaffected\n");
}

#[test]
fn mangled_client_hellos_never_bring_the_server_down() {
    let (server, _cert, _dir) = server(Mode::Echo);
    let hellos = [client_hello(&TLS13), client_hello(&TLS12)];
    // xorshift: the same cases on every run.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for case in 0..120 {
        let mut bytes = hellos[case % 2].clone();
        match case % 3 {
            // A few bytes flipped anywhere, headers included.
            0 => {
                for _ in 0..1 + random() % 4 {
                    let at = (random() as usize) % bytes.len();
                    bytes[at] ^= 1 + (random() % 255) as u8;
                }
            }
            // Cut short, then random bytes.
            1 => {
                bytes.truncate((random() as usize) % bytes.len());
                bytes.extend((0..random() % 64).map(|_| random() as u8));
            }
            // Random lengths in the record and handshake headers.
            _ => {
                bytes[3] = random() as u8;
                bytes[4] = random() as u8;
                bytes[6] = random() as u8;
                bytes[7] = random() as u8;
                bytes[8] = random() as u8;
            }
        }
        let mut raw = tcp(server.addr);
        let _ = raw.write_all(&bytes);
        let _ = raw.shutdown(Shutdown::Write);
        let mut rest = Vec::new();
        let _ = raw.read_to_end(&mut rest);
    }
    let mut client = connect(server.addr, &TLS13);
    send(&mut client, b"survived\n");
    expect_bytes(&mut client, b"survived\n");
}

/// Sends `hello` (part or all of a ClientHello), then closes the sending
/// side; the server must report a handshake cut short, never panic.
fn stop_mid_handshake(hello: &[u8]) {
    let (server, _cert, _dir) = server(Mode::Echo);
    let mut raw = tcp(server.addr);
    raw.write_all(hello).expect("write hello");
    raw.shutdown(Shutdown::Write).expect("half close");
    let failed = server.wait_for("failure", |r| matches!(r, Report::Failed { .. }));
    assert!(
        matches!(
            &failed,
            Report::Failed {
                tls_handshake: Some(true),
                ..
            }
        ),
        "{failed:?}"
    );
    // The server closed its side: the client reads to EOF.
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
}

#[test]
fn a_client_stopping_half_way_through_its_hello() {
    let hello = client_hello(&TLS13);
    stop_mid_handshake(&hello[..hello.len() / 2]);
}

#[test]
fn a_client_stopping_after_its_hello() {
    stop_mid_handshake(&client_hello(&TLS13));
}

#[test]
fn close_notify_reads_as_end_of_stream() {
    let (server, _cert, _dir) = server(Mode::Echo);
    let mut client = connect(server.addr, &TLS13);
    send(&mut client, b"bye\n");
    expect_bytes(&mut client, b"bye\n");
    client.conn.send_close_notify();
    client
        .conn
        .complete_io(&mut client.sock)
        .expect("send close_notify");
    let eof = server.wait_for("end", |r| {
        matches!(r, Report::Eof { .. } | Report::Failed { .. })
    });
    assert!(matches!(eof, Report::Eof { .. }), "{eof:?}");
}

#[test]
fn an_abrupt_close_after_the_handshake_reads_as_end_of_stream() {
    let (server, _cert, _dir) = server(Mode::Echo);
    let mut client = connect(server.addr, &TLS13);
    send(&mut client, b"going\n");
    expect_bytes(&mut client, b"going\n");
    // TCP FIN without close_notify.
    client.sock.shutdown(Shutdown::Both).expect("shutdown");
    let end = server.wait_for("end", |r| {
        matches!(r, Report::Eof { .. } | Report::Failed { .. })
    });
    assert!(matches!(end, Report::Eof { .. }), "{end:?}");
}

#[test]
fn a_client_that_never_reads_gets_would_block_with_bounded_tls_buffers() {
    const BLAST: usize = 10 * 1024 * 1024;
    let (server, _cert, _dir) = server(Mode::Blast(BLAST));
    let client = connect(server.addr, &TLS13);
    server.wait_for("handshake", |r| matches!(r, Report::HandshakeDone { .. }));
    // The first WouldBlock comes once the socket buffers are full; then
    // nothing moves, since the client reads nothing.
    let first = server.wait_for("would block", |r| matches!(r, Report::Blocked { .. }));
    let mut last = first;
    for report in server.drain_until_quiet(Duration::from_millis(500)) {
        assert!(matches!(report, Report::Blocked { .. }), "{report:?}");
        last = report;
    }
    let Report::Blocked {
        accepted, pending, ..
    } = last
    else {
        unreachable!()
    };
    assert!(accepted < BLAST, "write never blocked: {accepted} bytes");
    // rustls holds at most its limit plus one record's header and tag.
    assert!(pending > 0, "rustls holds nothing: the socket took it all?");
    assert!(
        pending <= TLS_SEND_BUFFER_LIMIT + 64,
        "rustls holds {pending} bytes"
    );
    drop(client);
}

#[test]
fn reload_keeps_the_old_certificate_on_bad_files_and_swaps_on_good_ones() {
    let dir = TempDir::new("reload");
    let old = TestCert::new();
    let files = old.write_to(&dir);
    let server = TestServer::start(Reloadable::load(files.clone()).expect("load"), Mode::Echo);
    let mut before = connect(server.addr, &TLS13);
    assert_eq!(served_cert(&before), old.cert_der);

    let new = TestCert::new();
    let reload = || server.tls.lock().expect("lock").reload();

    // A key that does not belong to the certificate: refused, names the key.
    write(&files.cert, &new.cert_pem);
    let error = reload().expect_err("mismatched key must be refused");
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
    assert!(
        error.to_string().contains(&files.key.display().to_string()),
        "{error}"
    );
    assert_eq!(served_cert(&connect(server.addr, &TLS13)), old.cert_der);

    // Garbage certificate: refused.
    write(&files.cert, "not a certificate\n");
    let error = reload().expect_err("garbage must be refused");
    assert_eq!(error.path(), files.cert.as_path());
    assert_eq!(served_cert(&connect(server.addr, &TLS13)), old.cert_der);

    // A missing key file: refused.
    write(&files.cert, &new.cert_pem);
    std::fs::remove_file(&files.key).expect("remove key");
    let error = reload().expect_err("missing key must be refused");
    assert!(matches!(error, TlsError::Read { .. }), "{error}");
    assert_eq!(error.path(), files.key.as_path());
    assert_eq!(served_cert(&connect(server.addr, &TLS13)), old.cert_der);

    // Both new files: swapped in for new handshakes.
    new.write_to(&dir);
    reload().expect("good files reload");
    assert_eq!(served_cert(&connect(server.addr, &TLS13)), new.cert_der);

    // The connection made before all this noticed nothing.
    send(&mut before, b"still fine\n");
    expect_bytes(&mut before, b"still fine\n");
}

// ------------------------------------------------------------ config errors

/// A directory with a good certificate and key written in it.
fn good_files() -> (TempDir, TlsFiles, TestCert) {
    let dir = TempDir::new("cfg");
    let cert = TestCert::new();
    let files = cert.write_to(&dir);
    (dir, files, cert)
}

/// The error loading `files` gives, which must name `path`.
fn load_error(files: &TlsFiles, path: &std::path::Path) -> TlsError {
    let error = load_config(files).expect_err("bad files must be refused");
    assert_eq!(error.path(), path, "{error}");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    error
}

#[test]
fn good_files_load() {
    let (_dir, files, _cert) = good_files();
    load_config(&files).expect("good files");
}

#[test]
fn missing_files_are_named() {
    let (dir, files, _cert) = good_files();
    let no_cert = TlsFiles {
        cert: dir.path("missing-cert.pem"),
        key: files.key.clone(),
    };
    let error = load_error(&no_cert, &no_cert.cert);
    assert!(matches!(error, TlsError::Read { .. }), "{error}");
    let no_key = TlsFiles {
        cert: files.cert.clone(),
        key: dir.path("missing-key.pem"),
    };
    let error = load_error(&no_key, &no_key.key);
    assert!(matches!(error, TlsError::Read { .. }), "{error}");
}

#[test]
fn a_cert_file_without_certificate_is_named() {
    let (_dir, files, cert) = good_files();
    write(&files.cert, "garbage, no PEM at all\n");
    let error = load_error(&files, &files.cert);
    assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
    // A key where the certificate should be.
    write(&files.cert, &cert.key_pem);
    let error = load_error(&files, &files.cert);
    assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
}

#[test]
fn a_malformed_certificate_is_named() {
    let (_dir, files, _cert) = good_files();
    // Broken base64 inside the markers.
    write(
        &files.cert,
        "-----BEGIN CERTIFICATE-----\n@@@@ not base64 @@@@\n-----END CERTIFICATE-----\n",
    );
    let error = load_error(&files, &files.cert);
    assert!(matches!(error, TlsError::BadCertificate { .. }), "{error}");
    // Good base64, but not a certificate.
    write(
        &files.cert,
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    );
    let error = load_error(&files, &files.cert);
    assert!(matches!(error, TlsError::BadCertificate { .. }), "{error}");
}

#[test]
fn a_key_file_without_key_is_named() {
    let (_dir, files, cert) = good_files();
    write(&files.key, &cert.cert_pem);
    let error = load_error(&files, &files.key);
    assert!(matches!(error, TlsError::NoKey { .. }), "{error}");
    write(&files.key, "");
    let error = load_error(&files, &files.key);
    assert!(matches!(error, TlsError::NoKey { .. }), "{error}");
}

#[test]
fn a_malformed_key_is_named() {
    let (_dir, files, _cert) = good_files();
    write(
        &files.key,
        "-----BEGIN PRIVATE KEY-----\naGVsbG8gd29ybGQ=\n-----END PRIVATE KEY-----\n",
    );
    let error = load_error(&files, &files.key);
    assert!(matches!(error, TlsError::BadKey { .. }), "{error}");
}

#[test]
fn a_key_that_does_not_belong_to_the_certificate_names_the_key_file() {
    let (_dir, files, _cert) = good_files();
    write(&files.key, &TestCert::new().key_pem);
    let error = load_error(&files, &files.key);
    assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error}");
    assert!(error.to_string().contains("does not belong"), "{error}");
}
