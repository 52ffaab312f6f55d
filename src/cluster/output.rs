//! The bytes one connection has queued for Redis, bounded.
//!
//! Commands are encoded straight into this buffer and written with as few
//! `write` calls as the kernel allows. The bound is the point of the type:
//! a command that would take the queue past its limit is refused, and the
//! link counts that as Redis being down — a Redis that cannot keep up must
//! not make the chat server grow without limit. Written bytes are dropped
//! from the front before the buffer grows, and growth stops at the limit,
//! so the memory held is the limit, never the next power of two above it.

use super::codec::{command_frame, encode_into, encoded_len};
use super::down::LinkDown;
use std::io::{self, Write};

/// The first allocation: a few commands.
const MIN_CAPACITY: usize = 4096;

/// A connection's pending output.
#[derive(Debug, Default)]
pub struct Output {
    /// Encoded commands; `buf[written..]` is what the kernel has not taken.
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written.
    written: usize,
}

impl Output {
    /// An empty queue that owns no memory.
    pub fn new() -> Output {
        Output::default()
    }

    /// Encodes `args` as one command at the end of the queue, unless that
    /// would leave more than `limit` bytes pending.
    pub fn push_command(&mut self, args: &[&[u8]], limit: usize) -> Result<(), PushError> {
        let parts = command_frame(args);
        let len = encoded_len(&parts);
        if self.pending() + len > limit {
            return Err(PushError::Full);
        }
        let start = self.make_room(len, limit);
        self.buf.resize(start + len, 0);
        if let Err(error) = encode_into(&mut self.buf[start..], &parts) {
            self.buf.truncate(start);
            return Err(PushError::Encode(error));
        }
        Ok(())
    }

    /// Makes room for `len` more bytes without holding more than `limit`
    /// (or `len`, if larger); returns where they go.
    fn make_room(&mut self, len: usize, limit: usize) -> usize {
        if self.buf.len() + len > self.buf.capacity() && self.written > 0 {
            self.buf.drain(..self.written);
            self.written = 0;
        }
        let needed = self.buf.len() + len;
        if needed > self.buf.capacity() {
            let doubled = (self.buf.capacity() * 2).max(MIN_CAPACITY);
            let target = doubled.min(limit).max(needed);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.len()
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.written
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Writes as much as `sink` takes. `WouldBlock` is not an error: the
    /// rest waits for the next writable event. A drained queue keeps its
    /// buffer unless it is larger than a few commands.
    pub fn flush_to(&mut self, sink: &mut impl Write) -> io::Result<()> {
        while self.written < self.buf.len() {
            match sink.write(&self.buf[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.written = 0;
        if self.buf.capacity() > 16 * MIN_CAPACITY {
            self.buf = Vec::new();
        }
        Ok(())
    }
}

/// Why a command was not queued.
#[derive(Debug)]
pub enum PushError {
    /// The command would take the queue past its limit.
    Full,
    /// The encoder failed (never expected: the length is computed first).
    Encode(LinkDown),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes `room` bytes, then blocks.
    struct Slow {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Slow {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = bytes.len().min(self.room);
            self.room -= n;
            self.taken.extend_from_slice(&bytes[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_push_past_the_limit_is_refused_and_changes_nothing() {
        let mut output = Output::new();
        let value = vec![b'v'; 1000];
        let limit = 10_000;
        let mut pushed = 0;
        while output
            .push_command(&[b"PUBLISH", b"room", &value], limit)
            .is_ok()
        {
            pushed += 1;
        }
        assert_eq!(pushed, 9);
        let pending = output.pending();
        assert!(pending <= limit);
        assert!(output.heap_bytes() <= limit, "{}", output.heap_bytes());
        assert!(matches!(
            output.push_command(&[b"PUBLISH", b"room", &value], limit),
            Err(PushError::Full)
        ));
        assert_eq!(output.pending(), pending);
    }

    #[test]
    fn written_bytes_make_room_and_nothing_is_lost_or_reordered() {
        let mut output = Output::new();
        let mut sink = Slow {
            taken: Vec::new(),
            room: 30,
        };
        output.push_command(&[b"SET", b"a", b"1"], 100).unwrap();
        output.push_command(&[b"SET", b"b", b"2"], 100).unwrap();
        output.flush_to(&mut sink).unwrap();
        assert_eq!(output.pending(), 54 - 30);
        output.push_command(&[b"GET", b"a"], 100).unwrap();
        sink.room = usize::MAX;
        output.flush_to(&mut sink).unwrap();
        assert_eq!(output.pending(), 0);
        assert_eq!(
            sink.taken,
            b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n\
              *3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\n2\r\n\
              *2\r\n$3\r\nGET\r\n$1\r\na\r\n"
        );
    }

    #[test]
    fn a_full_queue_that_drains_takes_commands_again_within_its_limit() {
        let mut output = Output::new();
        let limit = 64 * 1024;
        let value = vec![b'p'; 1000];
        let mut sink = Slow {
            taken: Vec::new(),
            room: 0,
        };
        for _ in 0..100 {
            while output
                .push_command(&[b"PUBLISH", b"r", &value], limit)
                .is_ok()
            {}
            sink.room = 20_000;
            output.flush_to(&mut sink).unwrap();
            assert!(output.heap_bytes() <= limit);
        }
    }
}
