//! The marker that makes a chat line measurable.
//!
//! Every line a sender writes carries `LM:<step>:<sender>:<seq>:<ns>:` then
//! padding. The server only prefixes `NAME: ` (PROTOCOL.md: "chat line |
//! everyone in the room, sender included | `NAME: TEXT`"), so a receiver
//! finds the marker anywhere in the line and learns who sent it, which one it was (for order
//! and duplicate checks), and when (nanoseconds since this process's common
//! origin, so no clock sync is needed: sender and receiver are the same
//! process). The step number keeps late lines of one ladder step from being
//! counted in the next. Only printable ASCII is used and the padding is not
//! blank, so the server's line cleaning leaves the line intact (PROTOCOL.md:
//! "Control characters ... are removed", "Trailing spaces and tabs are
//! trimmed").

use std::io::Write;

/// The tag that starts a marker.
const TAG: &[u8] = b"LM:";
/// What padding is made of (harmless, printable, compressible by nothing).
const PAD: u8 = b'x';

/// A decoded marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The ladder step the line belongs to.
    pub step: u32,
    /// Index of the sending client.
    pub sender: u32,
    /// The sender's line number within the step, from 0.
    pub seq: u64,
    /// When it was sent: nanoseconds since the swarm's time origin.
    pub sent_ns: u64,
}

/// Writes the marked line `m` padded to `payload` bytes, plus `\n`, into
/// `out` (cleared first). Reuses `out`'s allocation: no allocation per line.
pub fn encode(m: &Marker, payload: usize, out: &mut Vec<u8>) {
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "LM:{}:{}:{}:{}:", m.step, m.sender, m.seq, m.sent_ns);
    while out.len() < payload {
        out.push(PAD);
    }
    out.push(b'\n');
}

/// Finds and decodes the marker in a received line, if there is one.
/// Lines without one (arrival notices, `You are ...`) give `None`.
pub fn find(line: &[u8]) -> Option<Marker> {
    let at = find_bytes(line, TAG)?;
    let mut rest = &line[at + TAG.len()..];
    let mut field = || -> Option<u64> {
        let end = rest.iter().position(|&b| b == b':')?;
        let n = parse_u64(&rest[..end])?;
        rest = &rest[end + 1..];
        Some(n)
    };
    let step = u32::try_from(field()?).ok()?;
    let sender = u32::try_from(field()?).ok()?;
    let seq = field()?;
    let sent_ns = field()?;
    Some(Marker {
        step,
        sender,
        seq,
        sent_ns,
    })
}

/// Position of `needle` in `hay`. Markers sit right after the short name
/// prefix, so the naive scan ends within a few dozen bytes.
pub fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_a_name_prefix() {
        let m = Marker {
            step: 3,
            sender: 17,
            seq: 12345,
            sent_ns: 987_654_321,
        };
        let mut line = Vec::new();
        encode(&m, 100, &mut line);
        assert_eq!(line.len(), 101);
        assert_eq!(line.last(), Some(&b'\n'));
        let mut received = b"127.0.0.1:5555: ".to_vec();
        received.extend_from_slice(&line[..line.len() - 1]);
        assert_eq!(find(&received), Some(m));
    }

    #[test]
    fn short_payload_still_carries_the_whole_marker() {
        let m = Marker {
            step: 0,
            sender: 0,
            seq: 0,
            sent_ns: 1,
        };
        let mut line = Vec::new();
        encode(&m, 1, &mut line);
        assert_eq!(find(&line), Some(m));
    }

    #[test]
    fn lines_without_markers_are_ignored() {
        assert_eq!(find(b"5 users have arrived"), None);
        assert_eq!(find(b"bob: LM:1:2:x:4:"), None);
        assert_eq!(find(b"bob: LM:1:2:3"), None);
    }
}
