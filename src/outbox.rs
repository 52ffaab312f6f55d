//! A connection's bounded queue of bytes waiting for its socket.
//!
//! Broadcast copies each line into every recipient's outbox; the loop later
//! writes each outbox with a single `write`, however many lines it holds, so
//! the cost per delivery falls as load rises. The copy is deliberate: lines
//! are short, a `memcpy` of them is cheaper than the reference counting and
//! `writev` bookkeeping that sharing would need, and the bytes a client has
//! queued are then exactly what `--max-outbound` limits (see BENCHMARKS.md).
//!
//! The queue never grows past its limit: a push that would is refused, and
//! the server cuts that client off as too slow. A drained buffer is kept for
//! reuse while lines keep coming (so a busy room allocates nothing per
//! message) and handed back by [`Outbox::release_if_unused`] once a whole
//! tick passed without a push, so an idle connection holds no buffer at all.

use std::io::{self, Write};

/// The first allocation: a few chat lines.
const MIN_CAPACITY: usize = 256;

/// Pending output for one connection.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already taken by the kernel.
    written: usize,
    /// A line was pushed since the last [`release_if_unused`](Self::release_if_unused).
    pushed_recently: bool,
}

/// How a full buffer grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    /// Doubles (up to the limit): few reallocations while busy.
    Double,
    /// By an eighth (at least 256 bytes): while all outboxes together
    /// are near `--max-outbound-total`, so one fan-out to thousands of
    /// outboxes cannot double all their buffers at once past the bound.
    Frugal,
}

/// The push would take the queue past its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued was written.
    All,
    /// The kernel took less than everything; wait for writability.
    Partly,
}

impl Outbox {
    /// An empty queue that owns no memory.
    pub fn new() -> Self {
        Outbox::default()
    }

    /// Queues `line` followed by `\n`, unless that would leave more than
    /// `limit` bytes pending.
    pub fn push_line(&mut self, line: &[u8], limit: usize) -> Result<(), Overflow> {
        self.push_line_with(line, limit, Growth::Double)
    }

    /// [`push_line`](Self::push_line), growing the buffer as `growth` says
    /// if it must grow.
    pub fn push_line_with(
        &mut self,
        line: &[u8],
        limit: usize,
        growth: Growth,
    ) -> Result<(), Overflow> {
        if self.pending() + line.len() + 1 > limit {
            return Err(Overflow);
        }
        let needed = self.buf.len() + line.len() + 1;
        if needed > self.buf.capacity() {
            self.grow(needed, limit, growth);
        }
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        self.pushed_recently = true;
        Ok(())
    }

    /// Makes room for `needed` bytes without ever holding more than the
    /// limit: written bytes are dropped from the front first, and growth
    /// doubles but stops at `limit`, so a full outbox of a client that
    /// never reads costs `limit` bytes, not the next power of two.
    fn grow(&mut self, needed: usize, limit: usize, growth: Growth) {
        let needed = if self.written > 0 {
            self.buf.drain(..self.written);
            let shift = self.written;
            self.written = 0;
            needed - shift
        } else {
            needed
        };
        if needed > self.buf.capacity() {
            let capacity = self.buf.capacity();
            let grown = match growth {
                Growth::Double => capacity * 2,
                Growth::Frugal => capacity + (capacity / 8).max(MIN_CAPACITY),
            };
            let target = grown.max(MIN_CAPACITY).min(limit).max(needed);
            self.buf.reserve_exact(target - self.buf.len());
        }
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.written
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// Heap bytes held (capacity), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Writes as much as `sink` takes, in as few `write` calls as it allows.
    /// `WouldBlock` is not an error here: it is [`Flushed::Partly`].
    pub fn flush_to(&mut self, sink: &mut impl Write) -> io::Result<Flushed> {
        while self.written < self.buf.len() {
            match sink.write(&self.buf[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Partly),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.written = 0;
        Ok(Flushed::All)
    }

    /// Frees the buffer if it is empty and nothing was pushed since the last
    /// call; returns true once the outbox holds no memory. Called once per
    /// tick for recently drained outboxes, so buffers live as long as a
    /// connection is busy and no longer.
    pub fn release_if_unused(&mut self) -> bool {
        if !self.is_empty() {
            return false;
        }
        if std::mem::take(&mut self.pushed_recently) {
            return self.buf.capacity() == 0;
        }
        self.buf = Vec::new();
        self.written = 0;
        true
    }

    /// Drops everything queued (the connection is being cut off).
    pub fn discard(&mut self) {
        self.buf = Vec::new();
        self.written = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that takes at most `room` bytes, then would block.
    struct Trickle {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = data.len().min(self.room);
            self.room -= n;
            self.taken.extend_from_slice(&data[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_terminated_and_written_in_order() {
        let mut out = Outbox::new();
        out.push_line(b"a", 100).unwrap();
        out.push_line(b"bc", 100).unwrap();
        let mut sink = Trickle {
            taken: Vec::new(),
            room: 100,
        };
        assert_eq!(out.flush_to(&mut sink).unwrap(), Flushed::All);
        assert_eq!(sink.taken, b"a\nbc\n");
    }

    #[test]
    fn drained_buffer_is_kept_while_busy_and_released_when_unused() {
        let mut out = Outbox::new();
        let mut sink = Trickle {
            taken: Vec::new(),
            room: usize::MAX,
        };
        out.push_line(b"a", 100).unwrap();
        out.flush_to(&mut sink).unwrap();
        assert!(out.heap_bytes() > 0, "kept for the next line");
        assert!(!out.release_if_unused(), "pushed during this tick");
        assert!(out.release_if_unused(), "a tick without pushes frees it");
        assert_eq!(out.heap_bytes(), 0);
    }

    #[test]
    fn capacity_never_passes_the_limit() {
        let mut out = Outbox::new();
        let limit = 10_000;
        let line = [b'x'; 99];
        while out.push_line(&line, limit).is_ok() {}
        assert_eq!(out.pending(), 10_000);
        assert!(out.heap_bytes() <= limit, "capacity {}", out.heap_bytes());
        let mut sink = Trickle {
            taken: Vec::new(),
            room: 5_000,
        };
        out.flush_to(&mut sink).unwrap();
        while out.push_line(&line, limit).is_ok() {}
        assert!(out.heap_bytes() <= limit, "capacity {}", out.heap_bytes());
    }

    #[test]
    fn frugal_growth_adds_an_eighth() {
        let mut out = Outbox::new();
        let line = [b'x'; 1023];
        for _ in 0..64 {
            out.push_line(&line, 1 << 20).unwrap();
        }
        let before = out.heap_bytes();
        assert_eq!(before, 64 * 1024);
        out.push_line_with(&line, 1 << 20, Growth::Frugal).unwrap();
        assert_eq!(out.heap_bytes(), before + before / 8);
    }

    #[test]
    fn pending_output_is_never_released() {
        let mut out = Outbox::new();
        out.push_line(b"a", 100).unwrap();
        assert!(!out.release_if_unused());
        assert!(!out.release_if_unused());
        assert_eq!(out.pending(), 2);
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut out = Outbox::new();
        out.push_line(b"hello", 100).unwrap();
        let mut sink = Trickle {
            taken: Vec::new(),
            room: 3,
        };
        assert_eq!(out.flush_to(&mut sink).unwrap(), Flushed::Partly);
        assert_eq!(out.pending(), 3);
        out.push_line(b"x", 100).unwrap();
        sink.room = 100;
        assert_eq!(out.flush_to(&mut sink).unwrap(), Flushed::All);
        assert_eq!(sink.taken, b"hello\nx\n");
    }

    #[test]
    fn limit_counts_unwritten_bytes_only() {
        let mut out = Outbox::new();
        out.push_line(b"12345678", 10).unwrap();
        assert_eq!(out.push_line(b"1", 10), Err(Overflow));
        let mut sink = Trickle {
            taken: Vec::new(),
            room: 5,
        };
        out.flush_to(&mut sink).unwrap();
        assert_eq!(out.push_line(b"1234", 10), Ok(()));
        assert_eq!(out.pending(), 9);
    }
}
