//! Bytes from a socket become client lines here, and nowhere else.
//!
//! TCP delivers a byte stream, not lines: one read may hold half a line, or
//! fifty. [`LineFramer`] keeps the unfinished tail between reads so the rest
//! of the server only ever sees whole lines. It also enforces `--max-line`
//! *while the line is still arriving*, so a client that never sends a newline
//! cannot make the server buffer more than `max_line` bytes plus one read.
//!
//! The framer is a plain data structure with no I/O: the server pushes the
//! bytes it read and pulls frames one at a time, which is what lets flood
//! control stop pulling when a client runs out of tokens (the rest waits here,
//! and then in the kernel, which is TCP backpressure).

/// One unit of client input, as the rest of the server sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line without its terminator (`\n` or `\r\n`).
    Line(&'a [u8]),
    /// A line passed `max_line`; it is being discarded up to its newline.
    /// Reported once per line, as soon as the limit is passed.
    TooLong,
}

/// Splits a byte stream into lines of at most `max_line` bytes.
#[derive(Debug)]
pub struct LineFramer {
    /// Bytes received but not yet returned as a frame. Empty and unallocated
    /// whenever the client has no unfinished line, so idle users cost nothing.
    buf: Vec<u8>,
    /// Start of the unconsumed part of `buf` (consumed frames are dropped
    /// lazily, so pulling a frame never moves memory).
    start: usize,
    /// How far past `start` we already know there is no `\n`, so a line that
    /// trickles in byte by byte is scanned once, not quadratically.
    scanned: usize,
    /// True while dropping the rest of a too-long line up to its newline.
    discarding: bool,
    max_line: usize,
}

impl LineFramer {
    /// A framer for lines of at most `max_line` bytes (terminator excluded).
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            discarding: false,
            max_line,
        }
    }

    /// Appends bytes read from the socket.
    ///
    /// While a too-long line is being discarded, its bytes are dropped here
    /// instead of being stored, so discarding costs no memory.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.discarding && self.start == self.buf.len() {
            match memchr(b'\n', bytes) {
                Some(newline) => {
                    self.discarding = false;
                    bytes = &bytes[newline + 1..];
                }
                None => return,
            }
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.clear();
        } else if self.start > 0 {
            // Drop consumed lines before growing: what stays is one partial
            // line (at most `max_line + 1` bytes), so this moves little and
            // keeps the buffer bounded however the reads split the lines.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next frame, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            let pending = &self.buf[self.start..];
            match memchr(b'\n', &pending[self.scanned..]) {
                Some(offset) => {
                    let newline = self.scanned + offset;
                    let line_start = self.start;
                    self.start += newline + 1;
                    self.scanned = 0;
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    let line = strip_cr(&self.buf[line_start..line_start + newline]);
                    if line.len() > self.max_line {
                        return Some(Frame::TooLong);
                    }
                    return Some(Frame::Line(line));
                }
                None => {
                    self.scanned = pending.len();
                    if self.discarding {
                        self.clear();
                        return None;
                    }
                    if self.partial_is_too_long() {
                        self.discarding = true;
                        self.clear();
                        return Some(Frame::TooLong);
                    }
                    self.release_if_empty();
                    return None;
                }
            }
        }
    }

    /// Ends the stream (the client closed its sending side): returns the final
    /// line if it had no newline, as PROTOCOL.md says it is still processed.
    pub fn finish(&mut self) -> Option<Frame<'_>> {
        let discarding = std::mem::replace(&mut self.discarding, false);
        let start = std::mem::replace(&mut self.start, self.buf.len());
        self.scanned = 0;
        let rest = &self.buf[start..];
        if discarding || rest.is_empty() {
            return None;
        }
        let line = strip_cr(rest);
        if line.len() > self.max_line {
            return Some(Frame::TooLong);
        }
        Some(Frame::Line(line))
    }

    /// Bytes held for this connection right now (for memory accounting).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Heap bytes this framer holds (capacity, not length).
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// A partial line is over the limit once it cannot become a legal line:
    /// longer than `max_line + 1`, or exactly that with a last byte that is
    /// not the `\r` of a `\r\n` still on its way.
    fn partial_is_too_long(&self) -> bool {
        let partial = &self.buf[self.start..];
        let legal = self.max_line.saturating_add(1);
        partial.len() > legal || (partial.len() == legal && partial.last() != Some(&b'\r'))
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
    }

    /// Gives the buffer back to the allocator once everything in it was
    /// consumed: an idle connection must not keep a read buffer alive.
    fn release_if_empty(&mut self) {
        if self.start == self.buf.len() {
            self.buf = Vec::new();
            self.start = 0;
            self.scanned = 0;
        }
    }
}

/// Removes the one trailing `\r` of a `\r\n` terminator.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Position of the first `byte` in `haystack`. The standard library's slice
/// search is vectorised well enough that a dedicated crate buys little here.
fn memchr(byte: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects every frame currently available, as owned values.
    fn drain(framer: &mut LineFramer) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        while let Some(frame) = framer.next_frame() {
            out.push(match frame {
                Frame::Line(line) => Some(line.to_vec()),
                Frame::TooLong => None,
            });
        }
        out
    }

    fn line(s: &str) -> Option<Vec<u8>> {
        Some(s.as_bytes().to_vec())
    }

    #[test]
    fn several_lines_in_one_push() {
        let mut f = LineFramer::new(100);
        f.push(b"a\nbb\r\nccc\n");
        assert_eq!(drain(&mut f), vec![line("a"), line("bb"), line("ccc")]);
        assert_eq!(f.heap_bytes(), 0, "buffer released once drained");
    }

    #[test]
    fn line_split_over_many_pushes() {
        let mut f = LineFramer::new(100);
        for b in b"hello world\r" {
            f.push(&[*b]);
            assert!(drain(&mut f).is_empty());
        }
        f.push(b"\nnext");
        assert_eq!(drain(&mut f), vec![line("hello world")]);
        assert_eq!(f.finish(), Some(Frame::Line(b"next")));
    }

    #[test]
    fn only_one_cr_is_stripped() {
        let mut f = LineFramer::new(100);
        f.push(b"x\r\r\n");
        assert_eq!(drain(&mut f), vec![line("x\r")]);
    }

    #[test]
    fn exact_limit_is_accepted_with_either_terminator() {
        let mut f = LineFramer::new(4);
        f.push(b"abcd\nabcd\r");
        assert_eq!(drain(&mut f), vec![line("abcd")]);
        f.push(b"\n");
        assert_eq!(drain(&mut f), vec![line("abcd")]);
    }

    #[test]
    fn too_long_is_reported_as_soon_as_limit_passes() {
        let mut f = LineFramer::new(4);
        f.push(b"abcd");
        assert!(drain(&mut f).is_empty());
        f.push(b"e");
        assert_eq!(drain(&mut f), vec![None]);
        f.push(b"fghij");
        assert!(drain(&mut f).is_empty(), "reported once per line");
        assert_eq!(f.buffered(), 0, "discarded bytes are not kept");
        f.push(b"klm\nok\n");
        assert_eq!(drain(&mut f), vec![line("ok")]);
    }

    #[test]
    fn too_long_in_a_single_push() {
        let mut f = LineFramer::new(3);
        f.push(b"abcdef\nxy\n");
        assert_eq!(drain(&mut f), vec![None, line("xy")]);
    }

    #[test]
    fn finish_without_pending_bytes_is_none() {
        let mut f = LineFramer::new(3);
        f.push(b"abc\n");
        assert_eq!(drain(&mut f), vec![line("abc")]);
        assert_eq!(f.finish(), None);
    }

    #[test]
    fn finish_while_discarding_is_none() {
        let mut f = LineFramer::new(3);
        f.push(b"abcdefg");
        assert_eq!(drain(&mut f), vec![None]);
        assert_eq!(f.finish(), None);
    }

    #[test]
    fn memory_stays_bounded_when_every_push_ends_mid_line() {
        let mut f = LineFramer::new(100);
        for _ in 0..10_000 {
            f.push(b"tail\nanother line\npartial");
            drain(&mut f);
        }
        assert!(f.heap_bytes() <= 2 * (100 + 30), "heap {}", f.heap_bytes());
    }

    #[test]
    fn buffer_is_bounded_by_limit_plus_one_push() {
        let mut f = LineFramer::new(10);
        for _ in 0..1000 {
            f.push(&[b'z'; 7]);
            drain(&mut f);
            assert!(f.buffered() <= 10 + 1 + 7);
        }
    }
}
