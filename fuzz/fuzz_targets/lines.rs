//! Arbitrary bytes, in arbitrary chunkings, through exactly what chatd does
//! with client input: `LineFramer` -> `clean_line` -> `command::parse`.
//!
//! Input layout: byte 0 picks `max_line` (1..=64, or 4096 when it is 0),
//! the next bytes are chunk sizes until a 0 byte, the rest is the stream.
//! Invariants (any failure aborts): no panic; every line within `max_line`
//! and free of `\n`; the frames equal the reference split of the whole
//! stream; after draining, at most `max_line + 1` bytes stay buffered and
//! the buffer's heap is bounded by a partial line plus one push;
//! cleaned text has no control character but TAB and no trailing blank.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run lines -- -max_total_time=60`

#![no_main]

use chatd::clean::clean_line;
use chatd::command::{self, Command};
use chatd::framing::{Frame, LineFramer};
use chatd_tools::reference::reference;
use libfuzzer_sys::fuzz_target;

fn check(frame: Frame<'_>, max_line: usize) -> Option<Vec<u8>> {
    match frame {
        Frame::TooLong => None,
        Frame::Line(raw) => {
            assert!(raw.len() <= max_line);
            assert!(!raw.contains(&b'\n'));
            let text = clean_line(raw);
            assert!(
                text.chars().all(|c| !c.is_control() || c == '\t'),
                "{text:?}"
            );
            assert!(!text.ends_with([' ', '\t']), "{text:?}");
            match command::parse(&text) {
                Command::Empty => assert!(text.is_empty()),
                Command::Chat(t) | Command::Me(t) | Command::Rename(t) => assert!(!t.is_empty()),
                Command::Msg { to, text } => assert!(!to.is_empty() && !text.is_empty()),
                _ => {}
            }
            Some(raw.to_vec())
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let max_line = if first == 0 {
        4096
    } else {
        usize::from(first % 64) + 1
    };
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let sizes: Vec<usize> = rest[..split].iter().map(|&b| usize::from(b)).collect();
    let stream = rest.get(split + 1..).unwrap_or_default();

    let mut framer = LineFramer::new(max_line);
    let mut frames = Vec::new();
    let mut left = stream;
    let mut i = 0;
    let mut largest = 0;
    while !left.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(left.len());
        let n = n.clamp(1, left.len());
        largest = largest.max(n);
        i += 1;
        framer.push(&left[..n]);
        left = &left[n..];
        while let Some(frame) = framer.next_frame() {
            frames.push(check(frame, max_line));
        }
        assert!(framer.buffered() <= max_line + 1);
        // Bounded memory: one partial line plus one push, Vec doubling on top.
        assert!(framer.heap_bytes() <= 2 * (max_line + 2 + largest));
    }
    if let Some(frame) = framer.finish() {
        frames.push(check(frame, max_line));
    }
    assert_eq!(frames, reference(stream, max_line));
});
