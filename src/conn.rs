//! One user's connection: its socket and everything the server keeps for it.
//!
//! A connection's cost is what this struct holds plus two lazily allocated
//! buffers (the framer's partial line and the outbox), both empty and
//! unallocated while the user is idle; README.md ("What a connection costs")
//! gives the bytes.

use crate::flood::{FloodLimit, TokenBucket};
use crate::framing::LineFramer;
use crate::outbox::{Flushed, Outbox};
use crate::presence::Seq;
use mio::net::TcpStream;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Instant;

/// Why a user left; decides the departure notice and the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leave {
    /// The client closed its side (EOF).
    Closed,
    /// The socket failed (reset, broken pipe, …).
    Failed(String),
    /// `/quit`, with its optional reason.
    Quit(Option<String>),
    /// No line for `--idle-timeout` seconds.
    Idle,
    /// More than `--max-outbound` bytes queued.
    TooSlow,
    /// The server is shutting down; nobody is told of anyone leaving.
    Shutdown,
}

impl Leave {
    /// The parenthesised reason in `NAME has left (REASON)`, if any.
    pub fn notice_reason(&self) -> Option<&str> {
        match self {
            Leave::Quit(reason) => reason.as_deref(),
            Leave::Idle => Some("idle timeout"),
            Leave::TooSlow => Some("too slow"),
            Leave::Closed | Leave::Failed(_) | Leave::Shutdown => None,
        }
    }

    /// Whether the queued output is still worth a last write.
    pub fn flush_on_close(&self) -> bool {
        !matches!(self, Leave::TooSlow | Leave::Failed(_))
    }
}

impl std::fmt::Display for Leave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leave::Closed => write!(f, "closed by client"),
            Leave::Failed(error) => write!(f, "socket error: {error}"),
            Leave::Quit(Some(reason)) => write!(f, "quit ({reason})"),
            Leave::Quit(None) => write!(f, "quit"),
            Leave::Idle => write!(f, "idle timeout"),
            Leave::TooSlow => write!(f, "too slow"),
            Leave::Shutdown => write!(f, "server shutdown"),
        }
    }
}

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

/// One connected user.
#[derive(Debug)]
pub struct Conn {
    /// The user's socket, registered with the poll under the slab key.
    pub socket: TcpStream,
    /// Where the user connects from, for logs.
    pub peer: SocketAddr,
    /// The sequence number of this user's arrival: orders `who` and decides
    /// which presence notices the user hears.
    pub joined: Seq,
    /// The current display name (initially the peer address).
    pub name: String,
    /// Inbound bytes not yet taken as lines.
    pub framer: LineFramer,
    /// Outbound bytes not yet taken by the kernel.
    pub outbox: Outbox,
    /// Flood control.
    pub bucket: TokenBucket,
    /// When the last line was processed (idle timeout).
    pub last_active: Instant,
    /// The socket returned `WouldBlock` since the last readable event, so
    /// reading again before the next one is pointless.
    pub read_drained: bool,
    /// The client sent EOF; what is left in the framer is its last input.
    pub read_eof: bool,
    /// Waiting for a flood-control token (already in the server's wake list).
    pub throttled: bool,
    /// Already on the room's list of outboxes to flush this iteration.
    pub flush_queued: bool,
    /// On the room's list of drained outboxes that still hold a buffer.
    pub buffer_retained: bool,
    /// On the room's list of outboxes above the high-water mark.
    pub backlog_listed: bool,
    /// When the outbox last went above the high-water mark.
    pub behind_since: Instant,
    /// When the kernel last took bytes from the outbox: a client that reads
    /// keeps this recent, one that never reads lets it age.
    pub last_progress: Instant,
    /// Set once the user has left: the connection only waits to be reaped.
    pub leaving: Option<Leave>,
}

impl Conn {
    /// A freshly accepted connection, named after its peer address.
    pub fn new(
        socket: TcpStream,
        peer: SocketAddr,
        joined: Seq,
        max_line: usize,
        flood: FloodLimit,
        now: Instant,
    ) -> Self {
        Conn {
            socket,
            peer,
            joined,
            name: peer.to_string(),
            framer: LineFramer::new(max_line),
            outbox: Outbox::new(),
            bucket: TokenBucket::full(flood, now),
            last_active: now,
            read_drained: false,
            read_eof: false,
            throttled: false,
            flush_queued: false,
            buffer_retained: false,
            backlog_listed: false,
            behind_since: now,
            last_progress: now,
            leaving: None,
        }
    }

    /// Reads once from the socket into the framer, through `scratch` so that
    /// the framer keeps only what is not yet a line.
    pub fn read_once(&mut self, scratch: &mut [u8]) -> io::Result<ReadResult> {
        loop {
            return match self.socket.read(scratch) {
                Ok(0) => {
                    self.read_eof = true;
                    Ok(ReadResult::Eof)
                }
                Ok(n) => {
                    self.framer.push(&scratch[..n]);
                    Ok(ReadResult::Data)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.read_drained = true;
                    Ok(ReadResult::Drained)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// Writes as much of the outbox as the kernel takes, noting progress.
    pub fn write_out(&mut self, now: Instant) -> io::Result<Flushed> {
        let before = self.outbox.pending();
        let result = self.outbox.flush_to(&mut self.socket);
        if self.outbox.pending() < before {
            self.last_progress = now;
        }
        result
    }

    /// True while the user is in the room (not yet leaving).
    pub fn is_present(&self) -> bool {
        self.leaving.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README.md quotes this size: a connection's fixed cost in the slab.
    #[test]
    fn connection_state_stays_small() {
        let size = std::mem::size_of::<Conn>();
        eprintln!("Conn is {size} bytes");
        assert!(size <= 288, "Conn grew to {size} bytes; update README.md");
    }
}
