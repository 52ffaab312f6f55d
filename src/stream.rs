//! A connection's byte stream, plain TCP or TLS, behind one `Read + Write`.
//!
//! The rest of the server frames lines from what [`Stream`] reads and writes
//! its outbox into it, and must not care whether the bytes are encrypted.
//! The TLS side is driven like rustls's mio example (`tlsserver-mio`): socket
//! bytes in, records processed, plaintext out; plaintext in, records out;
//! everything non-blocking under the server's edge-triggered loop.
//!
//! # Why rustls's unbuffered API
//!
//! rustls's buffered `ServerConnection` keeps a 4 KiB receive buffer for the
//! whole life of a connection, even an idle one, and it cannot be released
//! from outside: measured, an idle TLS connection cost about 7.9 KB of RSS
//! with it, over the server's 8 KiB budget once the connection's own state is
//! added. With `UnbufferedServerConnection` the buffers are this module's:
//! TLS bytes read but not processed, plaintext decrypted but not read, and
//! records encrypted but not written each live in a `Vec` that is allocated
//! when needed and released as soon as it is empty, the way the plain side's
//! framer and outbox behave. An idle TLS connection then holds only rustls's
//! connection state: about 3.5 KB of heap in 8 blocks with TLS 1.3 (the
//! 1.2 KB `TlsStream` box, most of it rustls's connection struct; 640 bytes
//! of handshake reassembly index rustls allocates up front; two AEAD keys of
//! 560 bytes, ring's size for every suite; the ~220-byte traffic state; two
//! small queues and the SNI name), 3.6-3.7 KB of RSS per connection
//! measured over 1,000 and 5,000 connections. A connection that never sends
//! anything holds about 2 KB. `tests/tls_memory.rs` counts the heap (and
//! checks a budget); `examples/tls_bench.rs idle` measures the RSS.
//!
//! A busy connection holds, on top: while reading, one socket read's room
//! (one maximal record) plus at most a partial record, and the plaintext of
//! the records read but not yet taken; while writing, at most
//! [`TLS_SEND_BUFFER_LIMIT`] plus one record's overhead of encrypted bytes.
//! Only a handshake message split over many records is held longer, and
//! never beyond 64 KiB plus one record (then the handshake fails).
//!
//! # Read
//!
//! [`Read::read`] returns plaintext. The handshake progresses inside it: the
//! loop reads a TLS connection like any other on a readable event, gets
//! `WouldBlock` while there is nothing to hand over (during the whole
//! handshake, for instance), and after each read checks
//! [`Stream::take_handshake_completed`]. `WouldBlock` is returned only once
//! the socket itself said `WouldBlock`, so edge-triggered readiness holds.
//! `Ok(0)` is the end of the stream: the client's `close_notify`, or a TCP
//! EOF after the handshake (a chat line cut short by a missing `close_notify`
//! is no security matter, and the plain side treats EOF the same way). A
//! protocol failure, or an EOF before the handshake finished, is an
//! `io::Error` carrying a [`TlsFailure`] (see [`tls_failure`]) so the server
//! can log it at info with the peer address; the alert, if any, has already
//! been sent, best effort.
//!
//! # Write
//!
//! [`Write::write`] takes plaintext, encrypts it and pushes the records to
//! the socket. Encrypted records the socket refused wait here, at most
//! [`TLS_SEND_BUFFER_LIMIT`] bytes of plaintext's worth: past that, `write`
//! returns `WouldBlock` and the caller's outbox keeps its bytes and grows
//! until the client is cut as too slow, exactly as for a plain socket.
//! Records still waiting are pushed by [`Write::flush`], which the loop calls
//! on a writable event even when its outbox is empty ([`Stream::wants_write`]
//! says whether any wait).
//!
//! Before the handshake has finished there are no keys to encrypt with, and
//! `write` returns `WouldBlock` without taking anything; no writable event
//! will come for that, so the loop must write its outbox again when
//! [`Stream::take_handshake_completed`] says `true`.

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedStatus,
};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;

/// The most plaintext that may wait here encrypted, beyond what the socket
/// took: one full TLS record. Past it [`Write::write`] says `WouldBlock`, so
/// the server's `--max-outbound` keeps judging slow clients; a TLS client can
/// make the server hold at most this (plus one record's header and tag) more
/// than a plain one.
pub const TLS_SEND_BUFFER_LIMIT: usize = 16 * 1024;

/// The largest TLS record on the wire (16 KiB of plaintext, 256 bytes of
/// expansion, the 5-byte header): one socket read takes this much, so a
/// full record usually arrives in one call.
const MAX_RECORD: usize = 16 * 1024 + 256 + 5;

/// The most unprocessed TLS bytes held for a connection. Records are
/// processed as soon as they are whole, so only a handshake message split
/// over several records makes this grow; rustls's own buffered API allows
/// 64 KiB for those, and no client hello comes near.
const MAX_INCOMING: usize = 64 * 1024 + MAX_RECORD;

/// Room reserved for one record's header, content type, explicit nonce and
/// tag beyond its plaintext (at most 29 bytes with the suites offered).
const RECORD_OVERHEAD: usize = 64;

/// One connection's byte stream; the server reads and writes it the same
/// way whichever it is.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP; boxed so that plain connections do not pay for it.
    Tls(Box<TlsStream>),
}

/// A TLS server connection over a non-blocking socket, with its buffers.
pub struct TlsStream {
    /// The TCP socket the records travel on.
    socket: TcpStream,
    /// rustls's state: handshake, keys, sequence numbers.
    conn: UnbufferedServerConnection,
    /// TLS bytes read from the socket and not yet processed (a partial
    /// record, usually). Released when empty.
    incoming: Vec<u8>,
    /// Decrypted plaintext not yet returned by `read`, from `plaintext_read`
    /// on. Released when empty.
    plaintext: Vec<u8>,
    /// How much of `plaintext` was returned already.
    plaintext_read: usize,
    /// Encoded records not yet taken by the socket, from `outgoing_sent` on.
    /// Released when empty.
    outgoing: Vec<u8>,
    /// How much of `outgoing` the socket took already.
    outgoing_sent: usize,
    /// The socket reported EOF.
    eof: bool,
    /// The client sent `close_notify`.
    peer_closed: bool,
    /// We sent (queued) `close_notify`: nothing more may be written.
    closed: bool,
    /// A fatal TLS error happened; nothing more is processed.
    failed: bool,
    /// [`Stream::take_handshake_completed`] has already said `true`.
    completion_reported: bool,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("socket", &self.socket)
            .field("handshaking", &self.conn.is_handshaking())
            .field("incoming", &self.incoming.len())
            .field("plaintext", &(self.plaintext.len() - self.plaintext_read))
            .field("outgoing", &self.pending())
            .finish_non_exhaustive()
    }
}

/// A TLS failure reported by [`Stream`]'s `read` or `write` (inside an
/// `io::Error`): the handshake failed (plain text or HTTP sent to the TLS
/// port, a client that refused the certificate, a client that hung up half
/// way), or the peer broke the protocol later. Only ever about its own
/// connection.
#[derive(Debug)]
pub struct TlsFailure {
    /// The handshake had not finished: the client never joined.
    pub during_handshake: bool,
    /// rustls's error; `None` when the client closed the connection before
    /// the handshake finished.
    pub error: Option<rustls::Error>,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.during_handshake {
            "TLS handshake failed"
        } else {
            "TLS error"
        };
        match &self.error {
            Some(error) => write!(f, "{what}: {error}"),
            None => write!(f, "{what}: connection closed by the client"),
        }
    }
}

impl std::error::Error for TlsFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error
            .as_ref()
            .map(|error| error as &(dyn std::error::Error + 'static))
    }
}

impl From<TlsFailure> for io::Error {
    fn from(failure: TlsFailure) -> io::Error {
        let kind = match failure.error {
            Some(_) => io::ErrorKind::InvalidData,
            None => io::ErrorKind::UnexpectedEof,
        };
        io::Error::new(kind, failure)
    }
}

/// The [`TlsFailure`] inside an error returned by a [`Stream`], if it is one
/// (otherwise the error came from the socket).
pub fn tls_failure(error: &io::Error) -> Option<&TlsFailure> {
    error.get_ref()?.downcast_ref::<TlsFailure>()
}

impl Stream {
    /// A plain TCP stream.
    pub fn plain(socket: TcpStream) -> Stream {
        Stream::Plain(socket)
    }

    /// A TLS stream over a freshly accepted `socket`, using `config` (from
    /// [`crate::tls::Reloadable::current`]). The handshake starts with the
    /// first read. Fails only for a config rustls cannot use for a server.
    pub fn tls(socket: TcpStream, config: Arc<ServerConfig>) -> Result<Stream, rustls::Error> {
        Ok(Stream::Tls(Box::new(TlsStream {
            socket,
            conn: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            plaintext_read: 0,
            outgoing: Vec::new(),
            outgoing_sent: 0,
            eof: false,
            peer_closed: false,
            closed: false,
            failed: false,
            completion_reported: false,
        })))
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// The socket, for what is the same for both kinds: `SO_LINGER`,
    /// `shutdown`, addresses. (`Stream` itself is a mio `Source`, for
    /// registering.)
    pub fn socket(&self) -> &TcpStream {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => &tls.socket,
        }
    }

    /// The socket, mutably (see [`Stream::socket`]).
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => &mut tls.socket,
        }
    }

    /// The client's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket().peer_addr()
    }

    /// Whether the TLS handshake has not finished yet (always `false` for a
    /// plain stream). Stays `true` for a connection whose handshake failed.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(tls) => tls.conn.is_handshaking(),
        }
    }

    /// `true` exactly once for a TLS stream: on the first call after the
    /// handshake finished (it finishes inside a `read`). The loop calls it
    /// after reading; on `true` the user has joined for real, and the loop
    /// must write its outbox: whatever `write` refused during the handshake
    /// gets no writable event of its own. Always `false` for a plain stream.
    pub fn take_handshake_completed(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(tls) => {
                if tls.completion_reported || tls.failed || tls.conn.is_handshaking() {
                    false
                } else {
                    tls.completion_reported = true;
                    true
                }
            }
        }
    }

    /// Whether TLS records are waiting for the socket; if so the loop should
    /// call [`Write::flush`] on the next writable event, even with an empty
    /// outbox. Always `false` for a plain stream.
    pub fn wants_write(&self) -> bool {
        self.tls_pending_bytes() > 0
    }

    /// Bytes of TLS records waiting for the socket (0 for a plain stream).
    /// Application data keeps this at most [`TLS_SEND_BUFFER_LIMIT`] plus one
    /// record's overhead; handshake messages and alerts add to it briefly.
    pub fn tls_pending_bytes(&self) -> usize {
        match self {
            Stream::Plain(_) => 0,
            Stream::Tls(tls) => tls.pending(),
        }
    }

    /// Sends a TLS `close_notify` alert, as far as the socket takes it now,
    /// ignoring errors (the connection is about to close anyway); nothing is
    /// written after it. Does nothing for a plain stream or a connection
    /// still in its handshake.
    pub fn send_close_notify(&mut self) {
        if let Stream::Tls(tls) = self {
            if !tls.failed && !tls.closed && !tls.conn.is_handshaking() {
                // Only errors can come back; the connection is closing.
                let _ = tls.pump(Want::CloseNotify);
                tls.closed = true;
            }
            tls.push_best_effort();
        }
    }
}

/// What [`TlsStream::pump`] should do once rustls allows application data.
#[derive(Clone, Copy)]
enum Want<'a> {
    /// Nothing: just process what came in and encode what rustls queued.
    Nothing,
    /// Encrypt these bytes (all of them, as records).
    Encrypt(&'a [u8]),
    /// Encrypt a `close_notify` alert.
    CloseNotify,
}

/// Where [`TlsStream::pump`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pumped {
    /// Nothing more can happen without bytes from the socket (the handshake
    /// waits for the client, or everything that came in is processed and
    /// `Want::Nothing` was asked for).
    NeedInput,
    /// Decrypted plaintext is waiting in `plaintext`.
    Plaintext,
    /// The `Want` was done: the bytes or the alert are in `outgoing`.
    Done,
    /// Both sides sent `close_notify`: nothing more will ever happen.
    Closed,
}

/// What one step of `pump` decided, once rustls's borrow has ended.
enum Step {
    Continue,
    Stop(Pumped),
    Fail(rustls::Error),
}

impl TlsStream {
    /// Bytes of encoded records waiting for the socket.
    fn pending(&self) -> usize {
        self.outgoing.len() - self.outgoing_sent
    }

    /// Runs rustls over what came in until it needs something from outside,
    /// encoding whatever it wants to send (handshake messages, alerts, key
    /// updates) into `outgoing` and collecting decrypted plaintext, and once
    /// application data may flow, does `want`. Stops as soon as plaintext is
    /// waiting, so what is held stays bounded.
    fn pump(&mut self, want: Want<'_>) -> Result<Pumped, rustls::Error> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let step = match state {
                Err(error) => Step::Fail(error),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut step = Step::Stop(Pumped::Plaintext);
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                self.plaintext.extend_from_slice(record.payload);
                            }
                            Err(error) => {
                                step = Step::Fail(error);
                                break;
                            }
                        }
                    }
                    step
                }
                // Early data is off (`max_early_data_size` 0): never offered.
                Ok(ConnectionState::ReadEarlyData(_)) => {
                    Step::Fail(rustls::Error::General("unexpected early data".into()))
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    match encode_record(&mut encode, &mut self.outgoing) {
                        Ok(()) => Step::Continue,
                        Err(error) => Step::Fail(rustls::Error::General(error.to_string())),
                    }
                }
                // The encoded records are in `outgoing`; they are pushed to
                // the socket by the caller, as far as it takes them.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    Step::Continue
                }
                Ok(ConnectionState::BlockedHandshake) => Step::Stop(Pumped::NeedInput),
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Step::Continue
                }
                Ok(ConnectionState::Closed) => Step::Stop(Pumped::Closed),
                Ok(ConnectionState::WriteTraffic(_)) if matches!(want, Want::Nothing) => {
                    Step::Stop(Pumped::NeedInput)
                }
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let start = self.outgoing.len();
                    let mut attempt = |outgoing: &mut Vec<u8>, room: usize| {
                        outgoing.resize(start + room, 0);
                        let buf = &mut outgoing[start..];
                        match want {
                            Want::Encrypt(data) => traffic.encrypt(data, buf),
                            // (`Nothing` stopped above.)
                            Want::CloseNotify | Want::Nothing => traffic.queue_close_notify(buf),
                        }
                    };
                    // Enough for one record's header and tag; rustls says
                    // how much it needs if that is short.
                    let guess = match want {
                        Want::Encrypt(data) => data.len() + RECORD_OVERHEAD,
                        Want::Nothing | Want::CloseNotify => RECORD_OVERHEAD,
                    };
                    let mut result = attempt(&mut self.outgoing, guess);
                    if let Err(EncryptError::InsufficientSize(size)) = result {
                        result = attempt(&mut self.outgoing, size.required_size);
                    }
                    match result {
                        Ok(written) => {
                            self.outgoing.truncate(start + written);
                            Step::Stop(Pumped::Done)
                        }
                        Err(error) => {
                            self.outgoing.truncate(start);
                            Step::Fail(rustls::Error::General(error.to_string()))
                        }
                    }
                }
                Ok(_) => Step::Fail(rustls::Error::General("unknown TLS state".into())),
            };
            self.incoming.drain(..discard);
            match step {
                Step::Continue => {}
                Step::Stop(pumped) => return Ok(pumped),
                Step::Fail(error) => return Err(error),
            }
        }
    }

    /// Writes pending records until none are left or the socket would
    /// block; other socket errors are returned.
    fn push(&mut self) -> io::Result<()> {
        while self.pending() > 0 {
            match self.socket.write(&self.outgoing[self.outgoing_sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.outgoing_sent += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
        if self.pending() == 0 {
            // Hold no buffer while there is nothing to send.
            self.outgoing = Vec::new();
            self.outgoing_sent = 0;
        } else if self.outgoing_sent >= TLS_SEND_BUFFER_LIMIT {
            self.outgoing.drain(..self.outgoing_sent);
            self.outgoing_sent = 0;
        }
        Ok(())
    }

    /// [`TlsStream::push`] where a failure does not matter now: the next
    /// read or write meets the broken socket again and reports it.
    fn push_best_effort(&mut self) {
        let _ = self.push();
    }

    /// Gives up on the connection after rustls's `error` (or the client's
    /// EOF mid-handshake, `None`): sends the alert rustls queued, if any,
    /// and returns the failure to report.
    fn fail(&mut self, error: Option<rustls::Error>) -> io::Error {
        let during_handshake = self.conn.is_handshaking();
        if !self.failed {
            self.failed = true;
            // rustls queued its alert: encode what it queued, and only that.
            // With nothing queued, `process_tls_records` would parse the
            // input again, meeting the same error (a debug assertion in
            // rustls); and the input must stay as it is, since rustls keeps
            // positions into it while a handshake message is incomplete.
            while self.conn.wants_write() {
                let UnbufferedStatus { discard, state } =
                    self.conn.process_tls_records(&mut self.incoming);
                let encoded = match state {
                    Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                        encode_record(&mut encode, &mut self.outgoing).is_ok()
                    }
                    _ => false,
                };
                self.incoming.drain(..discard);
                if !encoded {
                    break;
                }
            }
            self.push_best_effort();
            // Nothing is processed after a failure: give the memory back.
            self.incoming = Vec::new();
            self.plaintext = Vec::new();
            self.plaintext_read = 0;
        }
        TlsFailure {
            during_handshake,
            error,
        }
        .into()
    }

    /// The error for any call after a failure.
    fn failed_error() -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, "the TLS connection has failed")
    }

    /// Copies waiting plaintext into `buf`; releases the buffer once empty.
    fn take_plaintext(&mut self, buf: &mut [u8]) -> usize {
        let waiting = &self.plaintext[self.plaintext_read..];
        let n = waiting.len().min(buf.len());
        buf[..n].copy_from_slice(&waiting[..n]);
        self.plaintext_read += n;
        if self.plaintext_read == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.plaintext_read = 0;
        }
        n
    }

    /// Reads what the socket has into `incoming`, at most one record's
    /// worth. Refuses to hold more than [`MAX_INCOMING`].
    fn fill(&mut self) -> io::Result<usize> {
        let used = self.incoming.len();
        if used >= MAX_INCOMING {
            return Err(self.fail(Some(rustls::Error::General(format!(
                "more than {MAX_INCOMING} bytes of TLS without a complete message"
            )))));
        }
        self.incoming
            .resize(used + MAX_RECORD.min(MAX_INCOMING - used), 0);
        let result = self.socket.read(&mut self.incoming[used..]);
        self.incoming
            .truncate(used + *result.as_ref().unwrap_or(&0));
        result
    }

    /// Gives back what an idle connection should not hold; called on the
    /// way out of `read` and `write`.
    fn trim(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        } else {
            // A partial record: keep its bytes, not a whole read's room.
            self.incoming.shrink_to_fit();
        }
    }

    fn read_plaintext(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(Self::failed_error());
        }
        loop {
            if self.plaintext_read < self.plaintext.len() {
                return Ok(self.take_plaintext(buf));
            }
            if self.peer_closed {
                return Ok(0);
            }
            match self.pump(Want::Nothing) {
                Ok(Pumped::Plaintext) => continue,
                Ok(Pumped::Closed) => return Ok(0),
                Ok(Pumped::NeedInput) | Ok(Pumped::Done) => {}
                Err(error) => return Err(self.fail(Some(error))),
            }
            if self.peer_closed {
                continue;
            }
            // Replies (handshake flights, key update answers) go out before
            // waiting for more from the client.
            self.push_best_effort();
            if self.eof {
                return if self.conn.is_handshaking() {
                    Err(self.fail(None))
                } else {
                    Ok(0)
                };
            }
            match self.fill() {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }

    fn write_plaintext(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(Self::failed_error());
        }
        if self.closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        // Make room first: what the socket takes now leaves the buffer.
        self.push()?;
        let room = TLS_SEND_BUFFER_LIMIT.saturating_sub(self.pending());
        if room == 0 || self.conn.is_handshaking() {
            // Full and the socket refused more (a writable event will
            // come), or no keys yet (take_handshake_completed will say).
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let chunk = &buf[..buf.len().min(room)];
        loop {
            match self.pump(Want::Encrypt(chunk)) {
                Ok(Pumped::Done) => break,
                // Records that came in were decrypted on the way (they wait
                // for the next read); go on to the encryption.
                Ok(Pumped::Plaintext) => {}
                Ok(Pumped::NeedInput) => return Err(io::ErrorKind::WouldBlock.into()),
                Ok(Pumped::Closed) => return Err(io::ErrorKind::BrokenPipe.into()),
                Err(error) => return Err(self.fail(Some(error))),
            }
        }
        self.push()?;
        Ok(chunk.len())
    }
}

/// Appends the record rustls wants sent to `outgoing`.
fn encode_record<Data>(
    encode: &mut EncodeTlsData<'_, Data>,
    outgoing: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = outgoing.len();
    let mut result = encode.encode(&mut []);
    if let Err(EncodeError::InsufficientSize(size)) = result {
        outgoing.resize(start + size.required_size, 0);
        result = encode.encode(&mut outgoing[start..]);
    }
    match result {
        Ok(written) => {
            outgoing.truncate(start + written);
            Ok(())
        }
        Err(error) => {
            outgoing.truncate(start);
            Err(error)
        }
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let result = self.read_plaintext(buf);
        if self.pending() > 0 {
            self.push_best_effort();
        }
        self.trim();
        result
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let result = self.write_plaintext(buf);
        self.trim();
        result
    }

    /// Pushes TLS records still waiting for the socket; `WouldBlock` if some
    /// remain (a writable event will come).
    fn flush(&mut self) -> io::Result<()> {
        self.push()?;
        if self.pending() > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write_vectored(bufs),
            Stream::Tls(tls) => match bufs.iter().find(|buf| !buf.is_empty()) {
                Some(buf) => tls.write(buf),
                None => Ok(0),
            },
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

impl mio::event::Source for Stream {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket_mut().register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        self.socket_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        self.socket_mut().deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_stream_costs_two_words() {
        assert_eq!(
            std::mem::size_of::<Stream>(),
            2 * std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn failures_say_what_failed_and_are_found_again() {
        let eof: io::Error = TlsFailure {
            during_handshake: true,
            error: None,
        }
        .into();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            eof.to_string(),
            "TLS handshake failed: connection closed by the client"
        );
        assert!(tls_failure(&eof).is_some_and(|failure| failure.during_handshake));

        let bad: io::Error = TlsFailure {
            during_handshake: false,
            error: Some(rustls::Error::DecryptError),
        }
        .into();
        assert_eq!(bad.kind(), io::ErrorKind::InvalidData);
        assert!(bad.to_string().starts_with("TLS error: "));
        assert!(tls_failure(&io::Error::from(io::ErrorKind::ConnectionReset)).is_none());
    }
}
