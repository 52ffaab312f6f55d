//! Received bytes become lines here, with a bounded per-client tail.
//!
//! Unlike chatd's `LineFramer` (which copies every read into a per-client
//! buffer), this splits lines straight out of the loop's shared read buffer
//! and keeps only an unfinished last line per client. With 10,000 clients
//! each receiving the same fan-out, that saves one copy of every byte the
//! tool reads, which matters because the tool shares the CPU with the server.

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

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
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
    fn overlong_lines_are_dropped_and_counted() {
        let big = vec![b'a'; MAX_TAIL + 1];
        let (lines, overlong) = split(&[&big, b"zz\nok\n"]);
        assert_eq!(lines, vec![b"ok".to_vec()]);
        assert_eq!(overlong, 1);
    }
}
