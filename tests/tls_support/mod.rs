//! What the TLS tests share: certificates made with rcgen in a temporary
//! directory, an in-process rustls client, and a small mio loop standing in
//! for the server (accept, wrap in `Stream::Tls`, echo lines back or blast
//! bytes at a client that does not read), reporting what it saw on a channel.
//!
//! Every wait is bounded by [`TIMEOUT`], so a broken stream fails a test
//! instead of hanging it.
//!
//! The chat user [`TlsUser`] is the plain client's [`LineClient`] over TLS,
//! and [`TempDir`] is the common one: a test that has `mod tls_support;`
//! has `mod common;` beside it.

#![allow(dead_code)]

use chatd::stream::{Stream, tls_failure};
use chatd::tls::{Reloadable, TlsFiles};
use chatd_tools::tls::AcceptAnyServerCert;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::pki_types::ServerName;
use rustls::{
    ClientConfig, ClientConnection, StreamOwned, SupportedCipherSuite, SupportedProtocolVersion,
};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::common::LineClient;
pub use crate::common::tempdir::TempDir;

/// The longest any expected event may take: the bound on a line.
pub const TIMEOUT: Duration = crate::common::READ_TIMEOUT;

/// Connections the test server can hold without its table growing (so the
/// table's own allocation is not counted per connection).
pub const MAX_CONNS: usize = 1024;

// ---------------------------------------------------------------- files

/// A self-signed certificate for `localhost` and its key, both PEM.
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

impl TestCert {
    /// A new certificate with a new ECDSA P-256 key.
    pub fn new() -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("rcgen certificate");
        TestCert {
            cert_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
            cert_der: made.cert.der().to_vec(),
        }
    }

    /// Writes the certificate and key as `cert.pem` and `key.pem` in `dir`.
    pub fn write_to(&self, dir: &TempDir) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.path("cert.pem"),
            key: dir.path("key.pem"),
        };
        write(&files.cert, &self.cert_pem);
        write(&files.key, &self.key_pem);
        files
    }
}

impl Default for TestCert {
    fn default() -> Self {
        TestCert::new()
    }
}

/// Replaces the file at `path` with `text`.
pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write test file");
}

// ---------------------------------------------------------------- client

// The client accepts any server certificate (the tests check which one was
// served) but still checks the handshake signatures with it: the tools'
// `AcceptAnyServerCert`.

/// A client config speaking only `version` (TLS 1.2 or 1.3).
pub fn client_config(version: &'static SupportedProtocolVersion) -> Arc<ClientConfig> {
    client_config_with(version, None)
}

/// A client config speaking only `version`, offering only `suite` if given.
pub fn client_config_with(
    version: &'static SupportedProtocolVersion,
    suite: Option<SupportedCipherSuite>,
) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suite) = suite {
        provider.cipher_suites = vec![suite];
    }
    let provider = Arc::new(provider);
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[version])
        .expect("client versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::with_provider(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// A blocking TLS client with time-bounded reads and writes.
pub type TlsClient = StreamOwned<ClientConnection, TcpStream>;

/// A TCP connection to `addr` with both directions bounded by [`TIMEOUT`].
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    sock.set_write_timeout(Some(TIMEOUT))
        .expect("write timeout");
    sock
}

/// Connects to `addr` and completes a handshake with `config`.
pub fn connect_with(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsClient {
    handshake_on(tcp(addr), config)
}

/// Connects to `addr` over `version` and completes the handshake.
pub fn connect(addr: SocketAddr, version: &'static SupportedProtocolVersion) -> TlsClient {
    connect_with(addr, client_config(version))
}

/// The DER of the certificate the server presented to `client`.
pub fn served_cert(client: &TlsClient) -> Vec<u8> {
    client
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
        .expect("server certificate")
}

/// The client's first flight (its ClientHello record), as bytes.
pub fn client_hello(version: &'static SupportedProtocolVersion) -> Vec<u8> {
    let mut conn = ClientConnection::new(
        client_config(version),
        ServerName::try_from("localhost").expect("name"),
    )
    .expect("client connection");
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).expect("client hello");
    }
    hello
}

// ---------------------------------------------------------------- server

/// What the test server does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Echo every complete line back.
    Echo,
    /// Write this line as soon as the connection is accepted (during the
    /// handshake), then echo.
    Greet(&'static [u8]),
    /// Echo, reading at most this many bytes per `read` call.
    EchoSmallReads(usize),
    /// Write this many bytes and never read.
    Blast(usize),
}

/// What the test server saw, in order, per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A connection was accepted and wrapped.
    Accepted { peer: SocketAddr, handshaking: bool },
    /// What `write` said to the greeting written during the handshake.
    EarlyWrite {
        peer: SocketAddr,
        result: Result<usize, io::ErrorKind>,
    },
    /// `take_handshake_completed` said `true`.
    HandshakeDone { peer: SocketAddr },
    /// `read` returned `Ok(0)`.
    Eof { peer: SocketAddr },
    /// `read` or `write` failed; the connection was dropped.
    Failed {
        peer: SocketAddr,
        message: String,
        kind: io::ErrorKind,
        /// `Some(during_handshake)` when the error carried a `TlsFailure`.
        tls_handshake: Option<bool>,
    },
    /// `write` said `WouldBlock` while blasting.
    Blocked {
        peer: SocketAddr,
        /// Plaintext bytes `write` had accepted so far.
        accepted: usize,
        /// `tls_pending_bytes()` at that moment.
        pending: usize,
    },
    /// Heap bytes and blocks live on the server thread (see `heap`).
    Heap { bytes: isize, blocks: isize },
}

/// A probe of the server thread's live heap: bytes and blocks.
pub type HeapProbe = fn() -> (isize, isize);

/// Asks the server thread for something.
enum Command {
    Heap,
}

/// The mio loop on its own thread; stopped and joined on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub tls: Arc<Mutex<Reloadable>>,
    reports: Receiver<Report>,
    commands: Sender<Command>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

impl TestServer {
    /// Starts a server on 127.0.0.1:0 serving `tls`'s current config.
    pub fn start(tls: Reloadable, mode: Mode) -> TestServer {
        TestServer::start_probed(tls, mode, None)
    }

    /// [`TestServer::start`], able to answer [`TestServer::heap`].
    pub fn start_probed(tls: Reloadable, mode: Mode, probe: Option<HeapProbe>) -> TestServer {
        let tls = Arc::new(Mutex::new(tls));
        let poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).expect("waker"));
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = listener.local_addr().expect("local addr");
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .expect("register listener");
        let (report_tx, reports) = mpsc::channel();
        let (commands, command_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let looper = Loop {
            poll,
            listener,
            tls: Arc::clone(&tls),
            mode,
            reports: report_tx,
            commands: command_rx,
            stop: Arc::clone(&stop),
            probe,
            conns: HashMap::with_capacity(MAX_CONNS),
            next: FIRST_CONN,
        };
        let thread = std::thread::spawn(move || looper.run());
        TestServer {
            addr,
            tls,
            reports,
            commands,
            waker,
            stop,
            thread: Some(thread),
        }
    }

    /// The next report, or a panic after [`TIMEOUT`].
    pub fn next(&self) -> Report {
        match self.reports.recv_timeout(TIMEOUT) {
            Ok(report) => report,
            Err(error) => panic!("no report from the test server: {error}"),
        }
    }

    /// Reports until one matches `wanted`, which is returned.
    pub fn wait_for(&self, what: &str, wanted: impl Fn(&Report) -> bool) -> Report {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok(report) if wanted(&report) => return report,
                Ok(_) => {}
                Err(error) => panic!("waiting for {what}: {error}"),
            }
        }
    }

    /// Every report until none came for `quiet`.
    pub fn drain_until_quiet(&self, quiet: Duration) -> Vec<Report> {
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            match self.reports.recv_timeout(quiet) {
                Ok(report) => seen.push(report),
                Err(RecvTimeoutError::Timeout) => return seen,
                Err(RecvTimeoutError::Disconnected) => panic!("test server gone"),
            }
        }
        panic!("the test server never went quiet: {seen:?}");
    }

    /// Live heap (bytes, blocks) on the server thread, from the probe given
    /// to [`TestServer::start_probed`].
    pub fn heap(&self) -> (isize, isize) {
        self.commands.send(Command::Heap).expect("command");
        self.waker.wake().expect("wake");
        match self.wait_for("heap", |r| matches!(r, Report::Heap { .. })) {
            Report::Heap { bytes, blocks } => (bytes, blocks),
            _ => unreachable!(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One connection of the test server.
struct Conn {
    stream: Stream,
    peer: SocketAddr,
    /// Bytes of an unfinished line.
    input: Vec<u8>,
    /// Echoed bytes the stream has not taken yet.
    output: Vec<u8>,
    /// Bytes still to blast.
    blast_left: usize,
    /// Bytes blasted so far.
    accepted: usize,
    joined: bool,
}

struct Loop {
    poll: Poll,
    listener: TcpListener,
    tls: Arc<Mutex<Reloadable>>,
    mode: Mode,
    reports: Sender<Report>,
    commands: Receiver<Command>,
    stop: Arc<AtomicBool>,
    probe: Option<HeapProbe>,
    conns: HashMap<Token, Conn>,
    next: usize,
}

/// Bytes a blasting connection writes per call.
static BLAST_CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut buf = vec![0u8; 16 * 1024];
        while !self.stop.load(Ordering::SeqCst) {
            if let Err(error) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(200)))
            {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                panic!("poll: {error}");
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => self.answer(),
                    token => {
                        let Some(conn) = self.conns.get_mut(&token) else {
                            continue;
                        };
                        if !serve(conn, &mut buf, self.mode, &self.reports)
                            && let Some(mut conn) = self.conns.remove(&token)
                        {
                            let _ = self.poll.registry().deregister(&mut conn.stream);
                        }
                    }
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let (socket, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) => panic!("accept: {error}"),
            };
            let config = self.tls.lock().expect("tls lock").current();
            let mut stream = Stream::tls(socket, config).expect("server connection");
            let token = Token(self.next);
            self.next += 1;
            self.poll
                .registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .expect("register");
            let handshaking = stream.is_handshaking();
            let _ = self.reports.send(Report::Accepted { peer, handshaking });
            let mut output = Vec::new();
            if let Mode::Greet(greeting) = self.mode {
                // Like the chat server's "You are ..." line: written at once,
                // kept in the outbox for as long as the stream refuses it.
                let result = stream.write(greeting);
                if let Ok(n) = result {
                    output.extend_from_slice(&greeting[n..]);
                } else {
                    output.extend_from_slice(greeting);
                }
                let result = result.map_err(|e| e.kind());
                let _ = self.reports.send(Report::EarlyWrite { peer, result });
            }
            self.conns.insert(
                token,
                Conn {
                    stream,
                    peer,
                    input: Vec::new(),
                    output,
                    blast_left: match self.mode {
                        Mode::Blast(bytes) => bytes,
                        _ => 0,
                    },
                    accepted: 0,
                    joined: false,
                },
            );
        }
    }

    fn answer(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Heap => {
                    let (bytes, blocks) = self.probe.map(|probe| probe()).unwrap_or((0, 0));
                    let _ = self.reports.send(Report::Heap { bytes, blocks });
                }
            }
        }
    }
}

/// Handles an event on `conn`; `false` when it is closed.
fn serve(conn: &mut Conn, buf: &mut [u8], mode: Mode, reports: &Sender<Report>) -> bool {
    let peer = conn.peer;
    let failed = |error: io::Error| Report::Failed {
        peer,
        message: error.to_string(),
        kind: error.kind(),
        tls_handshake: tls_failure(&error).map(|failure| failure.during_handshake),
    };
    // Read until WouldBlock (edge-triggered).
    let read_size = match mode {
        Mode::EchoSmallReads(size) => size,
        _ => buf.len(),
    };
    loop {
        match conn.stream.read(&mut buf[..read_size]) {
            Ok(0) => {
                let _ = reports.send(Report::Eof { peer });
                return false;
            }
            Ok(n) => conn.input.extend_from_slice(&buf[..n]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                let _ = reports.send(failed(error));
                return false;
            }
        }
    }
    if conn.stream.take_handshake_completed() {
        conn.joined = true;
        let _ = reports.send(Report::HandshakeDone { peer });
    }
    match mode {
        // Also where an outbox refused during the handshake goes out, as the
        // stream's contract asks once `take_handshake_completed` said so.
        Mode::Echo | Mode::Greet(_) | Mode::EchoSmallReads(_) => {
            if let Some(last) = conn.input.iter().rposition(|&b| b == b'\n') {
                conn.output.extend(conn.input.drain(..=last));
            }
            while !conn.output.is_empty() {
                match conn.stream.write(&conn.output) {
                    Ok(n) => {
                        conn.output.drain(..n);
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) => {
                        let _ = reports.send(failed(error));
                        return false;
                    }
                }
            }
        }
        Mode::Blast(_) if conn.joined => {
            while conn.blast_left > 0 {
                let chunk = conn.blast_left.min(BLAST_CHUNK.len());
                match conn.stream.write(&BLAST_CHUNK[..chunk]) {
                    Ok(n) => {
                        conn.blast_left -= n;
                        conn.accepted += n;
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        let _ = reports.send(Report::Blocked {
                            peer,
                            accepted: conn.accepted,
                            pending: conn.stream.tls_pending_bytes(),
                        });
                        break;
                    }
                    Err(error) => {
                        let _ = reports.send(failed(error));
                        return false;
                    }
                }
            }
        }
        Mode::Blast(_) => {}
    }
    // TLS records rustls still holds go out on writable events too.
    match conn.stream.flush() {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
        Err(error) => {
            let _ = reports.send(failed(error));
            return false;
        }
    }
    // Hold no buffer while idle, so heap figures are the stream's own.
    if conn.input.is_empty() {
        conn.input = Vec::new();
    }
    if conn.output.is_empty() {
        conn.output = Vec::new();
    }
    true
}

/// Reads from `client` until `expected.len()` bytes came, and compares.
pub fn expect_bytes(client: &mut impl Read, expected: &[u8]) {
    let mut got = vec![0u8; expected.len()];
    client.read_exact(&mut got).expect("read echo");
    assert!(got == expected, "echo differs ({} bytes)", expected.len());
}

/// Writes `bytes` to `client` and flushes its TLS records.
pub fn send(client: &mut impl Write, bytes: &[u8]) {
    client.write_all(bytes).expect("client write");
    client.flush().expect("client flush");
}

// ---------------------------------------------------------------- chat user

/// Completes a client handshake with `config` on an already connected
/// `sock` (whose timeouts the caller set), e.g. one bound to another source
/// address or with a small receive buffer, or one left silent for a while.
pub fn handshake_on(sock: TcpStream, config: Arc<ClientConfig>) -> TlsClient {
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").expect("name"))
        .expect("client connection");
    let mut client = StreamOwned::new(conn, sock);
    while client.conn.is_handshaking() {
        client
            .conn
            .complete_io(&mut client.sock)
            .expect("client handshake");
    }
    client
}

/// A chat user over TLS, with the same line-level calls as the plain
/// `common::Client` (reads bounded by the socket's timeout, [`TIMEOUT`]).
pub type TlsUser = LineClient<TlsClient>;

/// The read errors that end a TLS connection: close_notify missing (TCP
/// EOF), reset, or a write side already gone.
const TLS_ENDS: &[io::ErrorKind] = &[
    io::ErrorKind::UnexpectedEof,
    io::ErrorKind::ConnectionReset,
    io::ErrorKind::ConnectionAborted,
    io::ErrorKind::BrokenPipe,
];

impl LineClient<TlsClient> {
    /// Wraps a client whose handshake is done; reads nothing.
    pub fn from_client(client: TlsClient) -> TlsUser {
        let name = client.sock.local_addr().expect("local addr").to_string();
        LineClient::new(client, name, " (TLS)", TLS_ENDS)
    }

    /// Connects over TLS 1.3 and completes the handshake; reads nothing.
    pub fn connect(addr: SocketAddr) -> TlsUser {
        TlsUser::from_client(connect(addr, &rustls::version::TLS13))
    }

    /// Connects over TLS 1.3 and checks the greeting `You are ADDR`.
    pub fn join(addr: SocketAddr) -> TlsUser {
        TlsUser::join_with(addr, &rustls::version::TLS13)
    }

    /// Connects over `version` and checks the greeting `You are ADDR`.
    pub fn join_with(addr: SocketAddr, version: &'static SupportedProtocolVersion) -> TlsUser {
        let mut user = TlsUser::from_client(connect(addr, version));
        user.expect_greeting();
        user
    }

    /// The rustls client underneath.
    pub fn client(&mut self) -> &mut TlsClient {
        self.stream_mut()
    }

    /// The DER of the certificate the server presented.
    pub fn served_cert(&self) -> Vec<u8> {
        served_cert(self.stream())
    }

    /// The TLS version negotiated.
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream().conn.protocol_version()
    }

    /// Reads the end of the connection and says whether it was a clean
    /// TLS close (the server's close_notify) rather than a bare TCP end.
    pub fn end_is_close_notify(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => {
                assert!(rest.is_empty(), "{}: more bytes: {rest:?}", self.name);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => false,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("{}: no end within {TIMEOUT:?}: {e}", self.name),
        }
    }

    /// Sends `/who` and returns the listed names (` (you)` kept); the
    /// reply must be the next line.
    pub fn who(&mut self) -> Vec<String> {
        self.send("/who");
        let header = self.line();
        let count: usize = header
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a who head: {header:?}"));
        self.who_lines(count)
    }

    /// Sends a TLS close_notify (and keeps the TCP connection open).
    pub fn close_notify(&mut self) {
        let client = self.client();
        client.conn.send_close_notify();
        while client.conn.wants_write() {
            client
                .conn
                .write_tls(&mut client.sock)
                .expect("send close_notify");
        }
    }
}
