//! One simulated user: a non-blocking connection and its two small buffers.
//!
//! A client owns no policy. The swarm decides when it sends and what a line
//! it receives means; the client only moves bytes, keeping an outgoing queue
//! that is bounded (a sender the server stops reading from drops lines and
//! counts them, instead of growing without limit) and the unfinished tail of
//! its input.
//!
//! The bytes travel over a [`Conn`], plain TCP or TLS; the swarm drives both
//! the same way (see [`Conn`] for how TLS is driven without blocking).

use std::io::{self, BufRead, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::ClientConnection;

use crate::lines::{HistorySkip, LineSplitter};
use crate::tls::TlsClient;

/// Most bytes queued for sending per client before lines are refused.
pub const MAX_OUT: usize = 256 * 1024;

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `connect` issued, waiting for the TCP handshake and, over TLS, the
    /// TLS handshake.
    Connecting,
    /// Connected (over TLS: the handshake is complete).
    Open,
    /// Failed or closed; it stays in the table so indices stay stable.
    Closed,
}

/// What one [`Conn::read_some`] call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Data came (and was handed over); `more` says the socket read filled
    /// the whole buffer, so there may be more to read before `WouldBlock`.
    Data {
        /// Read again before waiting for the next edge.
        more: bool,
    },
    /// The socket has nothing more for now.
    WouldBlock,
    /// The peer closed (TCP EOF, or TLS `close_notify`).
    Closed,
}

/// A client's byte stream: plain TCP, or TLS through rustls.
///
/// TLS is rustls's buffered [`ClientConnection`] driven by hand on the
/// swarm's non-blocking socket, as in rustls's `tlsclient-mio` example:
///
/// - in: the swarm reads the socket into its one shared buffer (64 KiB, so
///   one `read` takes what a plain client's would), hands the bytes to
///   `read_tls` (which takes at most 4 KiB per call) and `process_new_packets`
///   in turn, and takes the plaintext out of rustls's `reader()` without
///   copying it again (`BufRead`), so rustls's 16 KiB plaintext limit is never
///   reached;
/// - out: plaintext goes into `writer()`, which encrypts it into rustls's
///   send buffer, and `write_tls` pushes records to the socket until it
///   would block; whatever waits there is written on the next writable
///   event (`wants_write`);
/// - the handshake runs on the same events: every read may produce
///   handshake messages to send, so each is followed by `write_tls`.
#[derive(Debug)]
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP; boxed, so plain clients stay small.
    Tls(Box<TlsConn>),
}

/// A TLS client connection and its socket.
#[derive(Debug)]
pub struct TlsConn {
    socket: TcpStream,
    tls: ClientConnection,
    /// The TCP connect has completed (the handshake may still be going).
    tcp_up: bool,
}

impl Conn {
    /// Wraps a socket whose connect is in progress; with `tls`, a TLS
    /// client starts on it (its ClientHello waits in rustls until the
    /// socket is writable).
    pub fn new(socket: TcpStream, tls: Option<&TlsClient>) -> io::Result<Conn> {
        match tls {
            None => Ok(Conn::Plain(socket)),
            Some(t) => {
                let tls = ClientConnection::new(t.config.clone(), t.name.clone())
                    .map_err(io::Error::other)?;
                Ok(Conn::Tls(Box::new(TlsConn {
                    socket,
                    tls,
                    tcp_up: false,
                })))
            }
        }
    }

    /// The TCP socket underneath.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.socket,
        }
    }

    /// True for a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Conn::Tls(_))
    }

    /// Checks a connecting socket after an event: `Ok(true)` once it is
    /// ready for chat lines (TCP connected and, over TLS, the handshake
    /// complete), `Ok(false)` while either is still going. Over TLS this
    /// does the handshake's I/O, reading until the socket would block, so
    /// every byte that came with the handshake's end is already in rustls:
    /// the caller must [`read_some`](Conn::read_some) once the connection is
    /// open, since no new edge will tell it.
    pub fn progress_connect(&mut self, scratch: &mut [u8]) -> io::Result<bool> {
        if !matches!(self, Conn::Tls(t) if t.tcp_up) {
            let socket = self.socket();
            if let Some(e) = socket.take_error()? {
                return Err(e);
            }
            match socket.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        let Conn::Tls(t) = self else {
            return Ok(true);
        };
        t.tcp_up = true;
        loop {
            t.write_out()?;
            if !t.tls.is_handshaking() {
                return Ok(true);
            }
            let n = match t.read_socket(scratch) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            // Plaintext before the handshake's end is not expected (chatd
            // sends none); any that comes stays in rustls for read_some.
            t.feed(&scratch[..n], &mut |_| false)?;
        }
    }

    /// Reads once from the socket into `scratch` and hands the plaintext to
    /// `on_data` (over TLS, first whatever rustls already holds, then what
    /// the read decrypts to, possibly in several pieces).
    pub fn read_some(
        &mut self,
        scratch: &mut [u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> io::Result<ReadOutcome> {
        match self {
            Conn::Plain(s) => loop {
                match io::Read::read(s, scratch) {
                    Ok(0) => return Ok(ReadOutcome::Closed),
                    Ok(n) => {
                        on_data(&scratch[..n]);
                        return Ok(ReadOutcome::Data {
                            more: n == scratch.len(),
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(ReadOutcome::WouldBlock);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            },
            Conn::Tls(t) => {
                let mut sink = |data: &[u8]| {
                    on_data(data);
                    true
                };
                if t.drain(&mut sink)? {
                    return Ok(ReadOutcome::Closed);
                }
                let n = match t.read_socket(scratch) {
                    Ok(0) => return Ok(ReadOutcome::Closed),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(ReadOutcome::WouldBlock);
                    }
                    Err(e) => return Err(e),
                };
                let closed = t.feed(&scratch[..n], &mut sink)?;
                // Alerts or key updates rustls wants to answer.
                t.write_out()?;
                if closed {
                    return Ok(ReadOutcome::Closed);
                }
                Ok(ReadOutcome::Data {
                    more: n == scratch.len(),
                })
            }
        }
    }

    /// Writes as much of `data` as the connection takes now: the socket
    /// (plain), or rustls's send buffer (TLS, encrypted and pushed to the
    /// socket until it would block). `Ok(0)` with `data` non-empty means
    /// nothing could be taken.
    fn write_some(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => loop {
                match s.write(data) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                    Ok(0) if !data.is_empty() => return Err(io::ErrorKind::WriteZero.into()),
                    other => return other,
                }
            },
            Conn::Tls(t) => {
                let mut taken = 0;
                loop {
                    // rustls accepts plaintext up to its buffer limit
                    // (64 KiB of records waiting); then the socket must
                    // take some first.
                    let n = t.tls.writer().write(&data[taken..])?;
                    taken += n;
                    t.write_out()?;
                    // Done, or the socket is full, or rustls took nothing
                    // with nothing waiting (not before the handshake ends).
                    if taken == data.len() || t.tls.wants_write() || n == 0 {
                        return Ok(taken);
                    }
                }
            }
        }
    }

    /// True while encrypted bytes wait in rustls for the socket.
    fn tls_pending(&self) -> bool {
        match self {
            Conn::Plain(_) => false,
            Conn::Tls(t) => t.tls.wants_write(),
        }
    }

    /// Closes the connection at once (both directions, no `close_notify`).
    pub fn shutdown(&self) {
        let _ = self.socket().shutdown(Shutdown::Both);
    }
}

impl TlsConn {
    /// One read of the socket, retried on `EINTR`.
    fn read_socket(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match io::Read::read(&mut self.socket, buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    /// Hands `bytes` read from the socket to rustls, passing the plaintext
    /// to `sink` as it is decrypted (a sink returning false leaves it in
    /// rustls). Returns true once the peer's `close_notify` came.
    fn feed(&mut self, mut bytes: &[u8], sink: &mut dyn FnMut(&[u8]) -> bool) -> io::Result<bool> {
        while !bytes.is_empty() {
            if self.tls.read_tls(&mut bytes)? == 0 {
                break;
            }
            if let Err(e) = self.tls.process_new_packets() {
                // The alert rustls queued for the peer, best effort.
                let _ = self.write_out();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if self.drain(sink)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Passes the plaintext rustls holds to `sink` until it is empty or the
    /// sink declines. Returns true once the peer's `close_notify` came.
    fn drain(&mut self, sink: &mut dyn FnMut(&[u8]) -> bool) -> io::Result<bool> {
        let mut reader = self.tls.reader();
        loop {
            match reader.fill_buf() {
                Ok([]) => return Ok(true),
                Ok(chunk) => {
                    let n = chunk.len();
                    if !sink(chunk) {
                        return Ok(false);
                    }
                    reader.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Pushes rustls's waiting records to the socket until they are all
    /// written or the socket would block.
    fn write_out(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Source for Conn {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.register(registry, token, interests),
            Conn::Tls(t) => t.socket.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.reregister(registry, token, interests),
            Conn::Tls(t) => t.socket.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.deregister(registry),
            Conn::Tls(t) => t.socket.deregister(registry),
        }
    }
}

/// One connection of the swarm.
#[derive(Debug)]
pub struct Client {
    /// The connection, plain or TLS.
    pub conn: Conn,
    /// Where it is in its life.
    pub state: State,
    /// False for `--slow` clients, which never read.
    pub reads: bool,
    /// The unfinished tail of its input.
    pub input: LineSplitter,
    /// Recognises replayed history, which is not counted.
    pub history: HistorySkip,
    /// Bytes queued for sending; `out[out_pos..]` is still unwritten.
    out: Vec<u8>,
    out_pos: usize,
    /// Saw the registration token.
    pub registered: bool,
    /// Marked lines received in the current step.
    pub received: u64,
    /// Marked lines sent in the current step.
    pub sent: u64,
    /// Next expected sequence number per sender (only with order checking).
    pub next_seq: Vec<u64>,
}

impl Client {
    /// Wraps a connection whose connect is in progress.
    pub fn new(conn: Conn, reads: bool) -> Self {
        Client {
            conn,
            state: State::Connecting,
            reads,
            input: LineSplitter::default(),
            history: HistorySkip::default(),
            out: Vec::new(),
            out_pos: 0,
            registered: false,
            received: 0,
            sent: 0,
            next_seq: Vec::new(),
        }
    }

    /// Queues one line (terminator included) and writes what the connection
    /// takes. `Ok(false)` means the queue was full and the line was dropped.
    pub fn send(&mut self, line: &[u8]) -> io::Result<bool> {
        if self.out.len() - self.out_pos + line.len() > MAX_OUT {
            return Ok(false);
        }
        if self.out_pos > 0 && self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        self.out.extend_from_slice(line);
        self.flush()?;
        Ok(true)
    }

    /// Writes queued bytes until done or the connection would block (a
    /// writable event will bring us back).
    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.conn.write_some(&self.out[self.out_pos..])? {
                0 => break,
                n => self.out_pos += n,
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            if self.out.capacity() > 64 * 1024 {
                self.out = Vec::new();
            }
        }
        if self.conn.tls_pending()
            && let Conn::Tls(t) = &mut self.conn
        {
            t.write_out()?;
        }
        Ok(())
    }

    /// True while bytes wait to be written (in the queue, or encrypted in
    /// rustls).
    pub fn wants_write(&self) -> bool {
        self.out_pos < self.out.len() || self.conn.tls_pending()
    }
}
