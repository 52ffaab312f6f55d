//! One connection: its socket and everything the server keeps for it that
//! is about bytes rather than chat (name and room live in [`crate::chat`]).
//!
//! A connection's cost is what this struct holds plus two lazily allocated
//! buffers (the framer's partial line and the outbox), both empty and
//! unallocated while the user is idle; README.md ("What a connection costs")
//! gives the bytes.

use crate::chat::Leave;
use crate::flood::{FloodLimit, TokenBucket};
use crate::framing::LineFramer;
use crate::id::ConnId;
use crate::outbox::Outbox;
use crate::stream::Stream;
use crate::timer_wheel::TimerId;
use crate::tuning::{MIN_READER_RATE, READER_CREDIT, READER_STALL};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Instant;

/// What one attempt to read from the socket found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// Bytes were added to the framer.
    Data,
    /// Nothing more until the next readable event.
    Drained,
    /// The client closed its sending side.
    Eof,
}

/// One connected client.
#[derive(Debug)]
pub struct Conn {
    /// This connection's id (slab slot and generation); also its mio token.
    pub id: ConnId,
    /// The byte stream, plain or TLS, registered under `id.token()`.
    pub socket: Stream,
    /// Where the client connects from.
    pub peer: SocketAddr,
    /// Inbound bytes not yet taken as lines.
    pub framer: LineFramer,
    /// Outbound bytes not yet taken by the kernel.
    pub outbox: Outbox,
    /// Flood control.
    pub bucket: TokenBucket,
    /// When the last line was processed (idle timeout).
    pub last_active: Instant,
    /// The connection's deadline in the server's timer wheel (the TLS
    /// handshake's, then the idle one), removed at close.
    pub timer: Option<TimerId>,
    /// A user in the chat (a TLS connection becomes one when its handshake
    /// completes).
    pub user: bool,
    /// Counted under its address's `--ip-max-connections`.
    pub counted: bool,
    /// A TLS connection refused at connect: this line is its answer once
    /// the handshake completes, then it is closed.
    pub refusal: Option<&'static str>,
    /// When the connection was last *not stuck*: the kernel took some of
    /// its output, or it had none queued. A client that reads keeps this
    /// recent; one that stopped lets it age.
    pub unstuck_at: Instant,
    /// Drain credit in bytes while the outbox is above the high-water mark
    /// (see [`Conn::holds_room`]), as of `credit_at`.
    pub credit: i64,
    /// When `credit` was last brought up to date.
    pub credit_at: Instant,
    /// The socket returned `WouldBlock` since the last readable event, so
    /// reading again before the next one is pointless.
    pub read_drained: bool,
    /// The client sent EOF; what is left in the framer is its last input.
    pub read_eof: bool,
    /// Reading is suspended (flood token, turn over, or input held back);
    /// the server's wake-up lists hold it exactly once.
    pub parked: bool,
    /// Parked because its user waits for Redis (a cluster's rename, move,
    /// `/history` or arrival); resumed by the chat's `Effect::Resume`.
    pub waiting_for_cluster: bool,
    /// Already on the list of outboxes to flush this iteration.
    pub flush_queued: bool,
    /// On the list of drained outboxes that still hold a buffer.
    pub buffer_retained: bool,
    /// On the list of outboxes above the high-water mark.
    pub backlog_listed: bool,
    /// Set once the connection is leaving: it only waits to be reaped.
    pub leaving: Option<Leave>,
}

impl Conn {
    /// A freshly accepted connection.
    pub fn new(
        id: ConnId,
        socket: Stream,
        peer: SocketAddr,
        max_line: usize,
        flood: FloodLimit,
        now: Instant,
    ) -> Self {
        Conn {
            id,
            socket,
            peer,
            framer: LineFramer::new(max_line),
            outbox: Outbox::new(),
            bucket: TokenBucket::full(flood, now),
            last_active: now,
            timer: None,
            user: false,
            counted: false,
            refusal: None,
            unstuck_at: now,
            credit: 0,
            credit_at: now,
            read_drained: false,
            read_eof: false,
            parked: false,
            waiting_for_cluster: false,
            flush_queued: false,
            buffer_retained: false,
            backlog_listed: false,
            leaving: None,
        }
    }

    /// Reads once from the socket into the framer, through `scratch` so that
    /// the framer keeps only what is not yet a line. Returns the bytes read
    /// along with what happened.
    pub fn read_once(&mut self, scratch: &mut [u8]) -> io::Result<(ReadResult, usize)> {
        loop {
            return match self.socket.read(scratch) {
                Ok(0) => {
                    self.read_eof = true;
                    Ok((ReadResult::Eof, 0))
                }
                Ok(n) => {
                    self.framer.push(&scratch[..n]);
                    Ok((ReadResult::Data, n))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_drained = true;
                    Ok((ReadResult::Drained, 0))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// True while the user is connected (not yet leaving).
    pub fn is_present(&self) -> bool {
        self.leaving.is_none()
    }

    /// Notes that the kernel took `written` bytes of output at `now`.
    pub fn note_progress(&mut self, written: usize, now: Instant) {
        if written == 0 {
            return;
        }
        self.unstuck_at = now;
        if self.backlog_listed {
            let credit = self.credit_at(now).saturating_add(written as i64);
            self.credit = credit.min(READER_CREDIT as i64);
            self.credit_at = now;
        }
    }

    /// The outbox just went above the high-water mark: the reader starts
    /// with a full credit.
    pub fn fell_behind(&mut self, now: Instant) {
        self.credit = READER_CREDIT as i64;
        self.credit_at = now;
    }

    /// Whether this user, being behind, still holds everyone's input: the
    /// kernel took some of its output within [`READER_STALL`] and, on
    /// average, at least [`MIN_READER_RATE`] bytes per second since it fell
    /// behind (with [`READER_CREDIT`] of slack). The room waits for such a
    /// reader; any other is cut off at `--max-outbound`.
    pub fn holds_room(&self, now: Instant) -> bool {
        self.is_present()
            && now.saturating_duration_since(self.unstuck_at) < READER_STALL
            && self.credit_at(now) > 0
    }

    fn credit_at(&self, now: Instant) -> i64 {
        let elapsed = now.saturating_duration_since(self.credit_at);
        let spent = (elapsed.as_micros() as u64).saturating_mul(MIN_READER_RATE) / 1_000_000;
        self.credit.saturating_sub(spent as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// README.md quotes this size: a connection's fixed cost in the slab.
    #[test]
    fn connection_state_stays_small() {
        let size = std::mem::size_of::<Conn>();
        eprintln!("Conn is {size} bytes");
        assert!(size <= 352, "Conn grew to {size} bytes; update README.md");
    }

    fn conn() -> (Conn, Instant) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = Stream::plain(mio::net::TcpStream::connect(addr).unwrap());
        let now = Instant::now();
        let limit = FloodLimit { rate: 1, burst: 1 };
        (
            Conn::new(ConnId::new(0, 0), socket, addr, 100, limit, now),
            now,
        )
    }

    #[test]
    fn a_healthy_reader_holds_the_room_and_a_stopped_one_soon_does_not() {
        let (mut c, t0) = conn();
        c.backlog_listed = true;
        c.fell_behind(t0);
        assert!(c.holds_room(t0));
        // Reading 64 KiB every 50 ms (1.3 MB/s) keeps the hold.
        let mut t = t0;
        for _ in 0..40 {
            t += Duration::from_millis(50);
            c.note_progress(64 * 1024, t);
            assert!(c.holds_room(t));
        }
        // Then it stops: within the stall time it no longer holds anyone.
        assert!(!c.holds_room(t + READER_STALL));
    }

    #[test]
    fn a_crawling_reader_loses_its_hold_within_about_a_second() {
        let (mut c, t0) = conn();
        c.backlog_listed = true;
        c.fell_behind(t0);
        let mut t = t0;
        let mut held_until = t0;
        // 4 KiB/s: 1 KiB every 250 ms.
        for _ in 0..20 {
            t += Duration::from_millis(250);
            c.note_progress(1024, t);
            if c.holds_room(t) {
                held_until = t;
            }
        }
        let held = held_until - t0;
        assert!(held <= Duration::from_millis(1250), "held {held:?}");
    }
}
