//! The obvious, slow split of a whole client stream into lines, which
//! chatd's incremental `LineFramer` must agree with however the bytes are
//! chunked. The server's property tests (`tests/hostile.rs`) and its fuzz
//! target (`fuzz/fuzz_targets/lines.rs`) both check against this one copy.
//!
//! It is written from PROTOCOL.md, not from the framer: "A client line ends
//! with `\n` or `\r\n` (telnet); one trailing `\r` is removed", "Maximum
//! line length: `--max-line` bytes ..., counted without the terminator (`\n`
//! or `\r\n`). A longer line is discarded up to its newline", and "A final
//! line without a newline before the client closes is still processed."

/// A frame as an owned value: `Some(line)` or `None` for "too long".
pub type Event = Option<Vec<u8>>;

/// Removes the one `\r` of a `\r\n` terminator.
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// What PROTOCOL.md says the whole input is, split the obvious way: lines
/// end at `\n`, lose one `\r`, and are too long (`None`) past `max_line`; a
/// final unterminated piece is a line too (the client closed).
pub fn reference(input: &[u8], max_line: usize) -> Vec<Event> {
    let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let tail = parts.pop().unwrap_or_default();
    let mut out: Vec<Event> = parts
        .into_iter()
        .map(|p| Some(strip_cr(p).to_vec()).filter(|l| l.len() <= max_line))
        .collect();
    if !tail.is_empty() {
        out.push(Some(strip_cr(tail).to_vec()).filter(|l| l.len() <= max_line));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminators_limit_and_last_piece() {
        let lines = |v: &[&[u8]]| -> Vec<Event> { v.iter().map(|l| Some(l.to_vec())).collect() };
        assert_eq!(reference(b"a\nb\r\n", 4), lines(&[b"a", b"b"]));
        assert_eq!(
            reference(b"abcde\nok\n", 4),
            vec![None, Some(b"ok".to_vec())]
        );
        assert_eq!(reference(b"abcd\r\ntail", 4), lines(&[b"abcd", b"tail"]));
        assert_eq!(reference(b"\n\r\n", 4), lines(&[b"", b""]));
        assert_eq!(reference(b"", 4), lines(&[]));
    }
}
