//! The HTTP side of `--metrics ADDR`: just enough HTTP/1.1 to answer a
//! Prometheus scrape, on the chat server's own event loop.
//!
//! A metrics endpoint needs one request per connection and nothing else, so
//! this is not an HTTP server: every connection reads one request head
//! (bounded by [`MAX_HEAD`]), gets one response with `Content-Length` and
//! `Connection: close`, and is closed; a request body, keep-alive and
//! pipelining are ignored by design. That keeps the state per connection to
//! two buffers and a small enum, and lets it live on the same single-threaded
//! mio loop as the chat without a thread of its own. Parsing is `httparse`'s
//! (strict, no allocation); what to answer ([`parse_head`], [`route`],
//! [`response`]) is pure and tested without sockets, and [`MetricsConn`] is
//! the thin I/O layer the loop drives.
//!
//! The answers, from PROTOCOL.md ("Metrics (v2)"):
//!
//! | request | answer |
//! |---|---|
//! | `GET /metrics` | `200`, `Content-Type: text/plain; version=0.0.4` |
//! | `HEAD /metrics` | the same status and headers (the `Content-Length` of the `GET` body), no body |
//! | another method on `/metrics` | `405`, with `Allow: GET, HEAD` |
//! | any other path, any method | `404` |
//! | head not valid HTTP/1.x | `400` |
//! | head over 8 KiB (or over [`MAX_HEADERS`] header lines) | `431` |
//!
//! A query string is ignored (`/metrics?x=1` is `/metrics`), and so is the
//! authority of an absolute-form target (`http://host/metrics`). The 5 s
//! limit on a connection is kept by the server's timer (see
//! [`REQUEST_TIMEOUT`]), not here.

use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::Duration;

/// The largest request head accepted, terminating blank line included
/// (PROTOCOL.md: "larger than 8 KiB is answered `431`").
pub const MAX_HEAD: usize = 8 * 1024;

/// The most header lines a head may have; more is answered `431` too, as
/// the status's name ("Request Header Fields Too Large") says. A scraper
/// sends about five.
pub const MAX_HEADERS: usize = 64;

/// How long a metrics connection may live, from accept to close, whatever
/// state it is in (PROTOCOL.md: a head "not complete within 5 s is closed").
/// The server's timer enforces it by dropping the [`MetricsConn`]; a
/// well-behaved scrape is over in a millisecond, so one limit for the whole
/// connection (head, response, the wait for the client's close) is enough.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The one path that is served.
pub const METRICS_PATH: &str = "/metrics";

/// The exposition format's content type, exactly as PROTOCOL.md gives it.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The content type of the short error bodies.
const ERROR_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// After the response, input is read and thrown away until the client
/// closes (see [`MetricsConn`]); a client that sends more than this after
/// its head is cut off at once.
const DISCARD_LIMIT: usize = 1024 * 1024;

/// What the bytes received so far make of a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head<'a> {
    /// Valid so far, but the blank line that ends the head has not come.
    Incomplete,
    /// Longer than [`MAX_HEAD`], or more than [`MAX_HEADERS`] header lines:
    /// answer `431` and close.
    TooLarge,
    /// Not an HTTP/1.0 or HTTP/1.1 request head: answer `400` and close.
    Bad,
    /// A complete head. Bytes after it (a body, a pipelined request) are
    /// not looked at.
    Request {
        /// The method, as sent (methods are case-sensitive).
        method: &'a str,
        /// The request target, as sent (`/metrics?x=1`).
        path: &'a str,
    },
}

/// Parses the start of `buf` as a request head.
///
/// Only the first [`MAX_HEAD`] bytes are looked at: a head that is not
/// complete within them is [`Head::TooLarge`] as soon as more bytes than
/// that have arrived, and [`Head::Incomplete`] before. A head may arrive in
/// any number of pieces; call again with everything received so far.
pub fn parse_head(buf: &[u8]) -> Head<'_> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(window) {
        Ok(httparse::Status::Complete(_)) => match (request.method, request.path) {
            (Some(method), Some(path)) => Head::Request { method, path },
            _ => Head::Bad,
        },
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Head::TooLarge,
        Ok(httparse::Status::Partial) => Head::Incomplete,
        Err(httparse::Error::TooManyHeaders) => Head::TooLarge,
        Err(_) => Head::Bad,
    }
}

/// The statuses this endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `200 OK`: the metrics.
    Ok,
    /// `400 Bad Request`: the head is not HTTP.
    BadRequest,
    /// `404 Not Found`: a path other than [`METRICS_PATH`].
    NotFound,
    /// `405 Method Not Allowed`: [`METRICS_PATH`] with a method other than
    /// `GET` or `HEAD`.
    MethodNotAllowed,
    /// `431 Request Header Fields Too Large`: see [`Head::TooLarge`].
    HeadTooLarge,
}

impl Status {
    /// The numeric status code.
    pub fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::HeadTooLarge => 431,
        }
    }

    /// The reason phrase of the status line.
    pub fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::HeadTooLarge => "Request Header Fields Too Large",
        }
    }
}

/// What a complete request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The metrics: render them and answer `200`.
    Metrics {
        /// `HEAD`: the headers only, without the body.
        head_only: bool,
    },
    /// An error answer with a short text body.
    Error(Status),
}

/// Decides the answer to a complete request (see the module's table).
///
/// The path decides first: PROTOCOL.md says "any other path answers
/// `404`", so `POST /other` is a 404, and only `/metrics` with the wrong
/// method is a 405.
pub fn route(method: &str, path: &str) -> Route {
    if target_path(path) != METRICS_PATH {
        return Route::Error(Status::NotFound);
    }
    match method {
        "GET" => Route::Metrics { head_only: false },
        "HEAD" => Route::Metrics { head_only: true },
        _ => Route::Error(Status::MethodNotAllowed),
    }
}

/// The path part of a request target: without the query, and without the
/// scheme and authority of an absolute-form target (RFC 9112 §3.2.2).
fn target_path(target: &str) -> &str {
    let target = match target.find("://") {
        Some(at) if !target.starts_with('/') => {
            let after_scheme = &target[at + "://".len()..];
            after_scheme
                .find('/')
                .map_or("/", |slash| &after_scheme[slash..])
        }
        _ => target,
    };
    target.split_once('?').map_or(target, |(path, _query)| path)
}

/// A complete response: status line, `Content-Type`, `Content-Length`,
/// `Allow` for a 405, `Connection: close`, then `body`.
pub fn response(status: Status, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_response(status, content_type, body, true, &mut out);
    out
}

/// The answer to an error route: the reason phrase as a one-line body.
fn error_response(status: Status) -> Vec<u8> {
    let body = format!("{}\n", status.reason());
    response(status, ERROR_CONTENT_TYPE, body.as_bytes())
}

/// Appends a response to `out`; with `with_body` false (for `HEAD`) the
/// headers still give the length of `body`, which is left out.
fn write_response(
    status: Status,
    content_type: &str,
    body: &[u8],
    with_body: bool,
    out: &mut Vec<u8>,
) {
    out.reserve(160 + if with_body { body.len() } else { 0 });
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        status.code(),
        status.reason(),
        body.len(),
    );
    if status == Status::MethodNotAllowed {
        out.extend_from_slice(b"Allow: GET, HEAD\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    if with_body {
        out.extend_from_slice(body);
    }
}

/// What the loop should do next with a [`MetricsConn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing now: wait for the next event on the socket (or the
    /// connection's deadline).
    Pending,
    /// The request is `GET`/`HEAD /metrics`: render the metrics and pass
    /// them to [`MetricsConn::send_metrics`] right away.
    WantsMetrics,
    /// Finished or failed: deregister the socket and drop the connection.
    Close,
}

/// Where a connection is in its one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting the request head.
    Reading,
    /// A metrics request is complete; waiting for the server's rendering.
    Rendering {
        /// `HEAD`: send the headers only.
        head_only: bool,
    },
    /// The response is queued; part of it may wait for writability.
    Writing,
    /// The response is sent and our side shut down; waiting for the
    /// client to close.
    Lingering,
}

/// One HTTP connection to the metrics listener, driven by the server loop.
///
/// Register the socket edge-triggered for both `READABLE` and `WRITABLE`
/// (mio's usual mode) and arm a timer for [`REQUEST_TIMEOUT`] at accept.
/// Then, on each event for it:
///
/// 1. readable, read-closed or error: [`on_readable`](Self::on_readable);
/// 2. writable (and the connection is still open):
///    [`on_writable`](Self::on_writable);
/// 3. whenever either returns [`Progress::WantsMetrics`]: render the
///    metrics and call [`send_metrics`](Self::send_metrics) with them;
/// 4. whenever anything returns [`Progress::Close`], and when the timer
///    fires, whatever the state: deregister and drop it.
///
/// After the response is written the connection shuts down its sending
/// side and keeps reading, throwing the input away, until the client
/// closes: closing a socket with unread input makes the kernel send a
/// reset, which can destroy the response before the client has read it
/// (RFC 9112 §9.6), the 431 to an oversized head above all.
///
/// Memory: the input buffer holds at most [`MAX_HEAD`] plus one read and
/// is freed once the head is parsed; the output buffer holds one response.
#[derive(Debug)]
pub struct MetricsConn {
    socket: TcpStream,
    state: State,
    /// The request head so far (state `Reading` only).
    input: Vec<u8>,
    /// The response (states `Writing`).
    output: Vec<u8>,
    /// Bytes at the front of `output` the kernel has taken.
    written: usize,
    /// Input read after the head, and thrown away.
    discarded: usize,
    /// The client has closed its sending side.
    read_eof: bool,
}

impl MetricsConn {
    /// A freshly accepted connection, waiting for its request.
    pub fn new(socket: TcpStream) -> Self {
        MetricsConn {
            socket,
            state: State::Reading,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            discarded: 0,
            read_eof: false,
        }
    }

    /// The socket, to register it with the poll and deregister it.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    /// Reads everything the socket has (until `WouldBlock` or EOF, as
    /// edge-triggered readiness requires), through `scratch` (the loop's
    /// shared read buffer, any non-zero size), and acts on a complete head.
    pub fn on_readable(&mut self, scratch: &mut [u8]) -> Progress {
        while !self.read_eof {
            match self.socket.read(scratch) {
                Ok(0) => self.read_eof = true,
                Ok(n) => {
                    let chunk = &scratch[..n];
                    if self.state == State::Reading {
                        self.input.extend_from_slice(chunk);
                        // A head can only end, or go wrong, at a newline,
                        // so a head trickled byte by byte is not parsed
                        // again for every byte.
                        if chunk.contains(&b'\n') || self.input.len() > MAX_HEAD {
                            self.parse_input();
                        }
                    } else {
                        self.discarded = self.discarded.saturating_add(n);
                        if self.discarded > DISCARD_LIMIT {
                            return Progress::Close;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Progress::Close,
            }
        }
        match self.state {
            State::Writing => self.flush(),
            _ => self.progress(),
        }
    }

    /// Writes what the kernel refused earlier.
    pub fn on_writable(&mut self) -> Progress {
        match self.state {
            State::Writing => self.flush(),
            _ => self.progress(),
        }
    }

    /// Answers a metrics request with `body` (the rendered metrics; only
    /// its length for `HEAD`) and starts writing it. Outside
    /// [`Progress::WantsMetrics`] it does nothing.
    pub fn send_metrics(&mut self, body: &[u8]) -> Progress {
        let State::Rendering { head_only } = self.state else {
            return self.progress();
        };
        self.output.clear();
        write_response(
            Status::Ok,
            METRICS_CONTENT_TYPE,
            body,
            !head_only,
            &mut self.output,
        );
        self.written = 0;
        self.state = State::Writing;
        self.flush()
    }

    /// Parses the input so far and, once there is an answer, moves on.
    fn parse_input(&mut self) {
        let route = match parse_head(&self.input) {
            Head::Incomplete => return,
            Head::TooLarge => Route::Error(Status::HeadTooLarge),
            Head::Bad => Route::Error(Status::BadRequest),
            Head::Request { method, path } => route(method, path),
        };
        self.input = Vec::new();
        match route {
            Route::Metrics { head_only } => self.state = State::Rendering { head_only },
            Route::Error(status) => {
                self.output = error_response(status);
                self.written = 0;
                self.state = State::Writing;
            }
        }
    }

    /// Writes the response until done or `WouldBlock`; once done, shuts
    /// down the sending side (the client sees EOF after the body).
    fn flush(&mut self) -> Progress {
        while self.written < self.output.len() {
            match self.socket.write(&self.output[self.written..]) {
                Ok(0) => return Progress::Close,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Progress::Close,
            }
        }
        self.output = Vec::new();
        self.written = 0;
        self.state = State::Lingering;
        if self.socket.shutdown(Shutdown::Write).is_err() {
            return Progress::Close;
        }
        self.progress()
    }

    /// What the current state waits for.
    fn progress(&self) -> Progress {
        match self.state {
            // EOF before a complete head: there is no request to answer.
            State::Reading | State::Lingering if self.read_eof => Progress::Close,
            State::Reading | State::Writing | State::Lingering => Progress::Pending,
            State::Rendering { .. } => Progress::WantsMetrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{self, Counters, Gauges};
    use mio::net::TcpListener;
    use mio::{Events, Interest, Poll, Token};
    use std::net::SocketAddr;
    use std::time::Instant;

    const SCRAPE: &[u8] =
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\nUser-Agent: Prometheus/2.42.0\r\n\
          Accept: text/plain;version=0.0.4\r\nAccept-Encoding: gzip\r\n\r\n";

    fn expect_request<'a>(head: Head<'a>) -> (&'a str, &'a str) {
        match head {
            Head::Request { method, path } => (method, path),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn a_scrape_parses() {
        assert_eq!(expect_request(parse_head(SCRAPE)), ("GET", "/metrics"));
    }

    #[test]
    fn a_head_arriving_byte_by_byte_is_incomplete_until_its_blank_line() {
        for end in 0..SCRAPE.len() {
            assert_eq!(
                parse_head(&SCRAPE[..end]),
                Head::Incomplete,
                "after {end} bytes"
            );
        }
        assert_eq!(expect_request(parse_head(SCRAPE)), ("GET", "/metrics"));
        // Bare newlines end lines too.
        let bare = b"GET /x HTTP/1.0\nHost: a\n\n";
        for end in 0..bare.len() {
            assert_eq!(
                parse_head(&bare[..end]),
                Head::Incomplete,
                "after {end} bytes"
            );
        }
        assert_eq!(expect_request(parse_head(bare)), ("GET", "/x"));
    }

    #[test]
    fn bytes_after_a_complete_head_are_not_looked_at() {
        let mut pipelined = SCRAPE.to_vec();
        pipelined.extend_from_slice(b"\x00\xff junk GET / HTTP/7\r\n\r\n");
        pipelined.extend_from_slice(&[b'x'; 3 * MAX_HEAD]);
        assert_eq!(expect_request(parse_head(&pipelined)), ("GET", "/metrics"));
    }

    /// A head of `len` bytes in all, padded with one long header.
    fn head_of_len(len: usize) -> Vec<u8> {
        let start = b"GET /metrics HTTP/1.1\r\nX-Pad: ";
        let end = b"\r\n\r\n";
        let mut head = start.to_vec();
        head.resize(len - end.len(), b'a');
        head.extend_from_slice(end);
        assert_eq!(head.len(), len);
        head
    }

    #[test]
    fn eight_kib_is_the_largest_head() {
        let largest = head_of_len(MAX_HEAD);
        assert_eq!(expect_request(parse_head(&largest)), ("GET", "/metrics"));

        let too_large = head_of_len(MAX_HEAD + 1);
        assert_eq!(parse_head(&too_large[..MAX_HEAD]), Head::Incomplete);
        assert_eq!(parse_head(&too_large), Head::TooLarge);
        // Also when far more than that arrives in one read.
        let huge = head_of_len(10 * MAX_HEAD);
        assert_eq!(parse_head(&huge), Head::TooLarge);
    }

    #[test]
    fn too_many_header_lines_are_too_large() {
        let mut head = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for n in 0..MAX_HEADERS {
            head.extend_from_slice(format!("X-{n}: y\r\n").as_bytes());
        }
        let mut at_limit = head.clone();
        at_limit.extend_from_slice(b"\r\n");
        assert!(matches!(parse_head(&at_limit), Head::Request { .. }));
        head.extend_from_slice(b"X-last: y\r\n\r\n");
        assert_eq!(parse_head(&head), Head::TooLarge);
    }

    #[test]
    fn bad_request_lines_are_bad() {
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],            // HTTP/0.9: no version
            b"GET /metrics HTTP/2.0\r\n\r\n",        // not HTTP/1.x
            b"GET  /metrics HTTP/1.1\r\n\r\n",       // two spaces
            b"GET /met rics HTTP/1.1\r\n\r\n",       // space in the target
            b"hello\r\n",                            // nc and a typed line
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc", // a TLS ClientHello
            b"GET /metrics HTTP/1.1\r\nNo colon\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(bad),
                Head::Bad,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Bad is known as soon as the bad byte arrives, not at the blank line.
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nNo colon\r\n"),
            Head::Bad
        );
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("GET", "/metrics"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            route("HEAD", "/metrics"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(
            route("GET", "/metrics?name[]=x"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            route("GET", "http://example.com:9100/metrics"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            route("POST", "/metrics"),
            Route::Error(Status::MethodNotAllowed)
        );
        assert_eq!(
            route("get", "/metrics"),
            Route::Error(Status::MethodNotAllowed)
        );
        for path in [
            "/",
            "/metrics/",
            "/Metrics",
            "/metricsx",
            "*",
            "http://h",
            "/x?/metrics",
        ] {
            assert_eq!(route("GET", path), Route::Error(Status::NotFound), "{path}");
        }
        assert_eq!(route("POST", "/other"), Route::Error(Status::NotFound));
    }

    #[test]
    fn responses_are_exact() {
        assert_eq!(
            response(Status::Ok, METRICS_CONTENT_TYPE, b"a 1\n"),
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
              Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        assert_eq!(
            error_response(Status::MethodNotAllowed),
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 19\r\nAllow: GET, HEAD\r\nConnection: close\r\n\r\n\
              Method Not Allowed\n"
        );
        let mut head_only = Vec::new();
        write_response(
            Status::Ok,
            METRICS_CONTENT_TYPE,
            b"a 1\n",
            false,
            &mut head_only,
        );
        assert!(head_only.ends_with(b"Content-Length: 4\r\nConnection: close\r\n\r\n"));
    }

    // The loopback tests: a real MetricsConn on a tiny mio loop, a blocking
    // client on a thread.

    const LISTENER: Token = Token(0);
    const CONN: Token = Token(1);
    /// How long any loopback exchange may take before the test fails.
    const TEST_LIMIT: Duration = Duration::from_secs(5);

    /// How the test client behaves.
    #[derive(Clone, Copy)]
    enum Client {
        /// Sends the request, reads the response to EOF, then closes.
        Plain,
        /// Sends the request and shuts down its sending side at once
        /// (`nc -N`), then reads.
        HalfClose,
        /// Sends the request one byte per write.
        Trickle,
        /// Sends the request in pieces of this many bytes, pausing between
        /// them, so that most of it arrives after the server has answered.
        Chunked(usize),
    }

    /// What the loop saw.
    struct Outcome {
        /// Everything the client read before EOF.
        response: Vec<u8>,
        /// The metrics body that was rendered for it.
        body: Vec<u8>,
        /// How often the connection asked for the metrics.
        renders: usize,
    }

    /// Runs one exchange: a mio loop on this thread serves one MetricsConn
    /// until it says Close; the client runs on a thread.
    fn exchange(request: Vec<u8>, client: Client) -> Outcome {
        exchange_allowing_errors(request, client).unwrap_or_else(|e| panic!("client: {e}"))
    }

    /// [`exchange`], with the client's error (a reset, a broken pipe) as
    /// the result instead of a panic.
    fn exchange_allowing_errors(request: Vec<u8>, client: Client) -> io::Result<Outcome> {
        let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut listener = TcpListener::bind(any_port).unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("addr: {e}"));
        let mut poll = Poll::new().unwrap_or_else(|e| panic!("poll: {e}"));
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .unwrap_or_else(|e| panic!("register: {e}"));

        let client = std::thread::spawn(move || -> io::Result<Vec<u8>> {
            let mut socket = std::net::TcpStream::connect(addr)?;
            socket.set_read_timeout(Some(TEST_LIMIT))?;
            socket.set_nodelay(true)?;
            match client {
                Client::Trickle => {
                    for byte in &request {
                        socket.write_all(std::slice::from_ref(byte))?;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                Client::Chunked(size) => {
                    for piece in request.chunks(size) {
                        socket.write_all(piece)?;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Client::Plain | Client::HalfClose => socket.write_all(&request)?,
            }
            if matches!(client, Client::HalfClose) {
                socket.shutdown(Shutdown::Write)?;
            }
            let mut response = Vec::new();
            socket.read_to_end(&mut response)?;
            Ok(response)
        });

        let mut body = Vec::new();
        metrics::render(&Counters::new(), &Gauges::default(), None, &mut body);
        let mut renders = 0;
        let mut scratch = vec![0; 16 * 1024];
        let mut events = Events::with_capacity(16);
        let mut conn: Option<MetricsConn> = None;
        let mut closed = false;
        let started = Instant::now();
        while !closed {
            assert!(
                started.elapsed() < TEST_LIMIT,
                "the connection never closed"
            );
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .unwrap_or_else(|e| panic!("poll: {e}"));
            for event in events.iter() {
                if event.token() == LISTENER {
                    if let Ok((socket, _)) = listener.accept() {
                        let mut accepted = MetricsConn::new(socket);
                        poll.registry()
                            .register(
                                accepted.socket_mut(),
                                CONN,
                                Interest::READABLE | Interest::WRITABLE,
                            )
                            .unwrap_or_else(|e| panic!("register: {e}"));
                        conn = Some(accepted);
                    }
                    continue;
                }
                let Some(c) = conn.as_mut() else { continue };
                let mut progress = Progress::Pending;
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    progress = c.on_readable(&mut scratch);
                }
                if progress != Progress::Close && event.is_writable() {
                    progress = c.on_writable();
                }
                if progress == Progress::WantsMetrics {
                    renders += 1;
                    progress = c.send_metrics(&body);
                }
                if progress == Progress::Close {
                    let _ = poll.registry().deregister(c.socket_mut());
                    conn = None;
                    closed = true;
                }
            }
        }
        let response = match client.join() {
            Ok(response) => response?,
            Err(_) => panic!("client thread panicked"),
        };
        Ok(Outcome {
            response,
            body,
            renders,
        })
    }

    /// The status line and headers of a response, and its body.
    fn split(response: &[u8]) -> (String, &[u8]) {
        let at = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(response)));
        (
            String::from_utf8_lossy(&response[..at]).into_owned(),
            &response[at + 4..],
        )
    }

    #[test]
    fn get_metrics_over_loopback() {
        let outcome = exchange(SCRAPE.to_vec(), Client::Plain);
        let (head, body) = split(&outcome.response);
        let expected = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
             Content-Length: {}\r\nConnection: close",
            outcome.body.len()
        );
        assert_eq!(head, expected);
        assert_eq!(body, outcome.body);
        assert_eq!(outcome.renders, 1);
    }

    #[test]
    fn head_metrics_gets_the_headers_only() {
        let outcome = exchange(b"HEAD /metrics HTTP/1.1\r\n\r\n".to_vec(), Client::Plain);
        let (head, body) = split(&outcome.response);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}\r\n", outcome.body.len())));
        assert!(body.is_empty());
    }

    #[test]
    fn other_paths_get_404_and_other_methods_405() {
        let outcome = exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), Client::Plain);
        assert_eq!(outcome.response, error_response(Status::NotFound));
        assert_eq!(outcome.renders, 0);
        let outcome = exchange(b"POST /metrics HTTP/1.0\r\n\r\n".to_vec(), Client::Plain);
        assert_eq!(outcome.response, error_response(Status::MethodNotAllowed));
    }

    #[test]
    fn an_oversized_head_gets_431() {
        let outcome = exchange(head_of_len(MAX_HEAD + 1), Client::Plain);
        assert_eq!(outcome.response, error_response(Status::HeadTooLarge));
        assert_eq!(outcome.renders, 0);
    }

    /// Far more than one read, most of it sent after the answer: the client
    /// can send it all (no broken pipe) and then reads the 431 intact, not
    /// a reset for input the server left unread.
    #[test]
    fn a_huge_head_gets_431_not_a_reset() {
        let outcome = exchange(head_of_len(128 * 1024), Client::Chunked(8 * 1024));
        assert_eq!(outcome.response, error_response(Status::HeadTooLarge));
        let outcome = exchange(head_of_len(256 * 1024), Client::Plain);
        assert_eq!(outcome.response, error_response(Status::HeadTooLarge));
    }

    /// A client that never stops sending after its answer is cut off.
    #[test]
    fn input_after_the_answer_is_bounded() {
        let mut request = SCRAPE.to_vec();
        request.resize(SCRAPE.len() + DISCARD_LIMIT + 256 * 1024, b'x');
        let outcome = exchange_allowing_errors(request, Client::Chunked(64 * 1024));
        assert!(outcome.is_err(), "the client should have been cut off");
    }

    #[test]
    fn a_half_closing_client_is_answered_and_closed() {
        let outcome = exchange(SCRAPE.to_vec(), Client::HalfClose);
        let (head, body) = split(&outcome.response);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert_eq!(body, outcome.body);
        // EOF before the head is complete: closed without an answer.
        let outcome = exchange(b"GET /metrics HTTP/1.1\r\n".to_vec(), Client::HalfClose);
        assert!(outcome.response.is_empty());
    }

    #[test]
    fn a_trickled_head_and_junk_get_answers() {
        let outcome = exchange(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Client::Trickle,
        );
        assert!(outcome.response.starts_with(b"HTTP/1.1 200 OK\r\n"));
        let outcome = exchange(b"hello chatd\n".to_vec(), Client::Plain);
        assert_eq!(outcome.response, error_response(Status::BadRequest));
    }
}
