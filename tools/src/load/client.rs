//! One simulated user: a non-blocking socket and its two small buffers.
//!
//! A client owns no policy. The swarm decides when it sends and what a line
//! it receives means; the client only moves bytes, keeping an outgoing queue
//! that is bounded (a sender the server stops reading from drops lines and
//! counts them, instead of growing without limit) and the unfinished tail of
//! its input.

use std::io::{self, Write};

use mio::net::TcpStream;

use crate::lines::{HistorySkip, LineSplitter};

/// Most bytes queued for sending per client before lines are refused.
pub const MAX_OUT: usize = 256 * 1024;

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `connect` issued, waiting for the handshake.
    Connecting,
    /// Connected.
    Open,
    /// Failed or closed; it stays in the table so indices stay stable.
    Closed,
}

/// One connection of the swarm.
#[derive(Debug)]
pub struct Client {
    /// The non-blocking socket.
    pub stream: TcpStream,
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
    /// Wraps a socket whose connect is in progress.
    pub fn new(stream: TcpStream, reads: bool) -> Self {
        Client {
            stream,
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

    /// Checks a connecting socket after a writable event: `Ok(true)` once
    /// connected, `Ok(false)` while the handshake is still going.
    pub fn finish_connect(&mut self) -> io::Result<bool> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Queues one line (terminator included) and writes what the socket
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

    /// Writes queued bytes until done or the socket would block (a writable
    /// event will bring us back).
    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Bytes waiting to be written.
    pub fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }
}
