//! Received bytes become lines here, cheaply: the tools read everything
//! chatd fans out, on the same two cores, so a reader that cost more per
//! byte than the server would measure itself instead.
//!
//! [`LineSplitter`] is the swarm's: unlike chatd's `LineFramer` (which
//! copies every read into a per-client buffer), it splits lines straight out
//! of the loop's shared read buffer and keeps only an unfinished last line
//! per client. With 10,000 clients each receiving the same fan-out, that
//! saves one copy of every byte the tool reads. [`find_newline`] is the scan
//! the heavy stress readers use on their own large buffers, and
//! [`HistorySkip`] recognises the history a server replays on entry, which
//! is not new traffic.
//!
//! PROTOCOL.md: "The server ends every line it sends with `\n`"; one
//! trailing `\r` is removed anyway, so the splitter also reads servers that
//! end lines with `\r\n`.

/// The longest unfinished line kept; anything longer is dropped and counted,
/// so a misbehaving server cannot make the generator's memory grow.
pub const MAX_TAIL: usize = 64 * 1024;

/// The unfinished tail of one client's input.
#[derive(Debug, Default)]
pub struct LineSplitter {
    tail: Vec<u8>,
    /// True while skipping the rest of a line that outgrew [`MAX_TAIL`].
    skipping: bool,
    /// Lines dropped for being too long.
    pub overlong: u64,
}

impl LineSplitter {
    /// Calls `on_line` for every complete line in `data` (terminator and one
    /// trailing `\r` removed), keeping the unfinished rest for next time.
    pub fn feed(&mut self, mut data: &[u8], mut on_line: impl FnMut(&[u8])) {
        if self.skipping || !self.tail.is_empty() {
            let Some(nl) = data.iter().position(|&b| b == b'\n') else {
                self.keep(data);
                return;
            };
            if self.skipping {
                self.skipping = false;
            } else {
                self.tail.extend_from_slice(&data[..nl]);
                on_line(strip_cr(&self.tail));
            }
            self.tail.clear();
            data = &data[nl + 1..];
        }
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            on_line(strip_cr(&data[..nl]));
            data = &data[nl + 1..];
        }
        self.keep(data);
        if self.tail.is_empty() && self.tail.capacity() > 4096 {
            self.tail = Vec::new();
        }
    }

    fn keep(&mut self, partial: &[u8]) {
        if self.skipping {
            return;
        }
        if self.tail.len() + partial.len() > MAX_TAIL {
            self.tail = Vec::new();
            self.skipping = true;
            self.overlong += 1;
            return;
        }
        self.tail.extend_from_slice(partial);
    }
}

/// Removes one trailing `\r`.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Position of the first `\n` in `bytes`, eight bytes at a time (the
/// readers of the heavy scenarios must cost less per byte than chatd).
pub fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    let mut words = bytes.chunks_exact(8);
    for (i, chunk) in words.by_ref().enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        // A zero byte in `word ^ NL` is a newline; the classic test for a
        // zero byte sets the high bit of the first one.
        let word = u64::from_le_bytes(word) ^ NL;
        let found = word.wrapping_sub(ONES) & !word & HIGHS;
        if found != 0 {
            return Some(i * 8 + (found.trailing_zeros() / 8) as usize);
        }
    }
    let rest = words.remainder();
    let done = bytes.len() - rest.len();
    rest.iter().position(|&b| b == b'\n').map(|p| done + p)
}

/// Recognises history blocks in one connection's lines, so that replayed
/// lines are not counted as deliveries (they carry the markers and ids of
/// earlier traffic).
///
/// PROTOCOL.md (v2), History: "right after `You are NAME` or `You are now in
/// #ROOM` the user gets the last `--history` lines ... as a history block:
/// the line `N lines of history:` (`1 line of history:`, N being the lines
/// that follow), then each line as `[TIME] LINE`, oldest first, then the
/// line `End of history`." A server without history never sends one.
#[derive(Debug, Default)]
pub struct HistorySkip {
    /// Lines of the current block still to come, `End of history` included.
    left: usize,
}

impl HistorySkip {
    /// True while inside a block: a line of it that is not the header.
    /// Cheap enough for every line.
    pub fn in_block(&mut self, line: &[u8]) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        if self.left == 0 && line != b"End of history" {
            // Not the block PROTOCOL.md describes: stop skipping at once.
            return false;
        }
        true
    }

    /// True if `line` opens a block (the lines after it are then
    /// [`in_block`](Self::in_block)). No chat line can look like a header:
    /// chat lines start with `NAME: `.
    pub fn opens_block(&mut self, line: &[u8]) -> bool {
        let Some(n) = history_header(line) else {
            return false;
        };
        self.left = n + 1;
        true
    }

    /// [`in_block`](Self::in_block) or [`opens_block`](Self::opens_block).
    pub fn is_history(&mut self, line: &[u8]) -> bool {
        self.in_block(line) || self.opens_block(line)
    }
}

/// N of a `N lines of history:` / `1 line of history:` line.
fn history_header(line: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(line).ok()?;
    let (count, rest) = text.split_once(' ')?;
    let count: usize = count.parse().ok()?;
    let expected = if count == 1 {
        "line of history:"
    } else {
        "lines of history:"
    };
    (rest == expected).then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, u64) {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |l| out.push(l.to_vec()));
        }
        (out, s.overlong)
    }

    #[test]
    fn lines_across_reads() {
        let (lines, _) = split(&[b"ab", b"c\nde\r\nf", b"g\n"]);
        assert_eq!(lines, vec![b"abc".to_vec(), b"de".to_vec(), b"fg".to_vec()]);
    }

    #[test]
    fn newline_found_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'a'; len];
                bytes[at] = b'\n';
                // A byte that only differs from '\n' in one bit must not count.
                if at + 1 < len {
                    bytes[at + 1] = b'\n' ^ 0x80;
                }
                assert_eq!(find_newline(&bytes), Some(at), "len {len} at {at}");
            }
            assert_eq!(find_newline(&vec![b'a'; len]), None);
        }
    }

    #[test]
    fn history_blocks_are_skipped_and_nothing_else() {
        let mut h = HistorySkip::default();
        let seen: Vec<bool> = [
            &b"2 lines of history:"[..],
            b"[13:04] alice: hi",
            b"[13:05] * bob waves",
            b"End of history",
            b"alice: hi",
            b"1 line of history:",
            b"[13:04] alice: hi",
            b"End of history",
            b"3 users have arrived",
            b"bob: 2 lines of history:",
        ]
        .iter()
        .map(|l| h.is_history(l))
        .collect();
        assert_eq!(
            seen,
            [
                true, true, true, true, false, true, true, true, false, false
            ]
        );
    }

    #[test]
    fn overlong_lines_are_dropped_and_counted() {
        let big = vec![b'a'; MAX_TAIL + 1];
        let (lines, overlong) = split(&[&big, b"zz\nok\n"]);
        assert_eq!(lines, vec![b"ok".to_vec()]);
        assert_eq!(overlong, 1);
    }
}
