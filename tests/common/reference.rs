//! The obvious, slow split of a whole client stream into lines, which the
//! incremental `LineFramer` must agree with however the bytes are chunked.
//! Shared by the property tests (`tests/hostile.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/lines.rs`, which includes this file by path).

/// A frame as an owned value: `Some(line)` or `None` for "too long".
pub type Event = Option<Vec<u8>>;

/// Removes the one `\r` of a `\r\n` terminator.
pub fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// What PROTOCOL.md says the whole input is, split the obvious way: lines
/// end at `\n`, lose one `\r`, and are too long past `max_line`; a final
/// unterminated piece is a line too (the client closed).
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
