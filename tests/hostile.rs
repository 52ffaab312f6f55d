//! Hostile bytes (README.md, "Limits and failure behaviour", point 6):
//! whatever a client sends, framing, cleaning and command parsing neither
//! panic nor break their invariants, and the server stays usable for the
//! sender and everyone else.
//!
//! The property tests are the CI version of the `fuzz/` target: same path
//! (`LineFramer` → `clean_line` → `command::parse`), arbitrary bytes in
//! arbitrary chunkings, and the same reference split to agree with
//! (`chatd_tools::reference`).

mod common;

use chatd::clean::clean_line;
use chatd::command::{self, Command};
use chatd::framing::{Frame, LineFramer};
use chatd_tools::reference::{Event, reference};
use common::TestServer;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Property tests: framing + cleaning + parsing
// ---------------------------------------------------------------------------

/// What a server does with the frames: clean, parse, check.
fn check_frame(frame: Frame<'_>, max_line: usize) -> Result<Event, TestCaseError> {
    match frame {
        Frame::TooLong => Ok(None),
        Frame::Line(raw) => {
            prop_assert!(raw.len() <= max_line, "line of {} > {max_line}", raw.len());
            prop_assert!(!raw.contains(&b'\n'));
            check_clean_and_parse(raw)?;
            Ok(Some(raw.to_vec()))
        }
    }
}

fn check_clean_and_parse(raw: &[u8]) -> Result<(), TestCaseError> {
    let text = clean_line(raw);
    for c in text.chars() {
        let control = c.is_control() && c != '\t';
        prop_assert!(!control, "control {c:?} survived in {text:?}");
        // PROTOCOL.md's ranges, written out here rather than taken from
        // the cleaner, so the test does not trust what it checks.
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        prop_assert!(!bidi, "bidi {c:?} survived in {text:?}");
    }
    prop_assert!(!text.ends_with([' ', '\t']), "trailing blank in {text:?}");
    prop_assert!(text.len() <= raw.len() * 3, "cleaning cannot blow up");
    prop_assert_eq!(clean_line(text.as_bytes()), text.clone(), "idempotent");
    match command::parse(&text) {
        Command::Empty => prop_assert!(text.is_empty()),
        Command::Chat(t) => prop_assert!(!t.is_empty()),
        Command::Rename(n) => prop_assert!(!n.is_empty()),
        Command::Msg { to, text } => prop_assert!(!to.is_empty() && !text.is_empty()),
        Command::Me(t) => prop_assert!(!t.is_empty()),
        Command::Quit(Some(r)) => prop_assert!(!r.is_empty()),
        _ => {}
    }
    Ok(())
}

/// Feeds `input` to a framer in the given chunk sizes, pulling every frame
/// after each push, then ends the stream. Checks the bounds on the way.
fn run_framer(
    input: &[u8],
    chunks: &[usize],
    max_line: usize,
) -> Result<Vec<Event>, TestCaseError> {
    let mut framer = LineFramer::new(max_line);
    let mut events = Vec::new();
    let mut rest = input;
    let mut sizes = chunks.iter().copied().cycle();
    let mut largest = 0;
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        largest = largest.max(n);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        framer.push(chunk);
        while let Some(frame) = framer.next_frame() {
            events.push(check_frame(frame, max_line)?);
        }
        prop_assert!(
            framer.buffered() <= max_line + 1,
            "{} bytes held after draining (max line {max_line})",
            framer.buffered()
        );
        // One partial line plus one push, with Vec's doubling on top.
        let bound = 2 * (max_line + 2 + largest);
        prop_assert!(
            framer.heap_bytes() <= bound,
            "framer heap {} > {bound}",
            framer.heap_bytes()
        );
    }
    if let Some(frame) = framer.finish() {
        events.push(check_frame(frame, max_line)?);
    }
    prop_assert!(framer.next_frame().is_none());
    Ok(events)
}

/// Bytes that matter to the framer and the cleaner, plus anything at all.
fn hostile_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => any::<u8>(),
        2 => Just(b'\n'),
        2 => Just(b'\r'),
        1 => Just(0u8),
        1 => Just(0x1b),
        1 => Just(b' '),
        1 => Just(b'\t'),
        1 => Just(0xc2), // lead byte of the C1 controls in UTF-8
        1 => Just(0x9b),
        2 => b'a'..=b'z',
        1 => Just(b'/'),
    ]
}

/// Characters that matter to the cleaner: the bidi controls it removes
/// (U+202A–U+202E, U+2066–U+2069), the characters on either side of those
/// ranges and the implicit marks it keeps, controls, blanks and letters.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('\u{2028}', '\u{2030}'),
        4 => prop::char::range('\u{2064}', '\u{206b}'),
        1 => Just('\u{200e}'),
        1 => Just('\u{200f}'),
        1 => Just('\u{61c}'),
        1 => Just('\u{1b}'),
        1 => Just('\u{9b}'),
        2 => Just(' '),
        1 => Just('\t'),
        1 => Just('/'),
        3 => prop::char::range('a', 'z'),
        1 => any::<char>(),
    ]
}

fn max_lines() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..=12, Just(4096)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// Any bytes, any chunking: no panic, lines within the limit, cleaned
    /// text clean, and the frames are exactly the reference split.
    #[test]
    fn frames_match_the_reference_split_for_any_chunking(
        input in prop::collection::vec(hostile_byte(), 0..400),
        chunks in prop::collection::vec(1usize..64, 1..16),
        max_line in max_lines(),
    ) {
        let events = run_framer(&input, &chunks, max_line)?;
        prop_assert_eq!(events, reference(&input, max_line));
    }

    /// One push of everything and byte-by-byte give the same frames.
    #[test]
    fn chunking_never_changes_the_frames(
        input in prop::collection::vec(hostile_byte(), 0..300),
        max_line in max_lines(),
    ) {
        let whole = run_framer(&input, &[usize::MAX], max_line)?;
        let bytewise = run_framer(&input, &[1], max_line)?;
        prop_assert_eq!(whole, bytewise);
    }

    /// Text commands typed by a human (printable, with the command words
    /// likely): the parser's view agrees with the cleaned text.
    #[test]
    fn commands_from_arbitrary_text(
        word in prop_oneof![
            Just("/who"), Just("who"), Just("/nick"), Just("/NAME"), Just("rename|"),
            Just("/msg"), Just("/me"), Just("/help"), Just("/quit"), Just("//"), Just("/"),
            Just(""), Just(" /who"),
        ],
        rest in "[ \\t]{0,3}[\\PC]{0,20}[ \\t]{0,3}[\\PC]{0,20}",
    ) {
        check_clean_and_parse(format!("{word}{rest}").as_bytes())?;
    }

    /// Any bytes at all as one line.
    #[test]
    fn clean_and_parse_any_bytes(raw in prop::collection::vec(any::<u8>(), 0..200)) {
        check_clean_and_parse(&raw)?;
    }

    /// Text laced with bidi embeddings, overrides and isolates (which random
    /// bytes almost never spell: each is three exact bytes), their
    /// neighbours, controls and blanks: none of the nine survives.
    #[test]
    fn clean_and_parse_text_with_bidi_controls(
        chars in prop::collection::vec(hostile_char(), 0..80),
    ) {
        let text: String = chars.into_iter().collect();
        check_clean_and_parse(text.as_bytes())?;
    }
}

/// Regression (found by this suite, fixed in 56bebe7): the framer used to
/// drop consumed lines only when a read ended exactly on a newline, so a
/// client whose reads keep ending mid-line (a paste, a flood) made its
/// buffer grow by every read, without bound, although `buffered()` stayed
/// small.
#[test]
fn framer_heap_stays_bounded_while_lines_straddle_reads() {
    let max_line = 4096;
    let mut framer = LineFramer::new(max_line);
    // 100-byte lines arriving in 16 KiB reads: no read ends on a newline.
    let line = [b"x".repeat(99), b"\n".to_vec()].concat();
    let stream = line.repeat(20_000); // 2 MB
    let mut lines = 0;
    for chunk in stream.chunks(16 * 1024 + 7) {
        framer.push(chunk);
        while let Some(frame) = framer.next_frame() {
            assert_eq!(frame, Frame::Line(&line[..99]));
            lines += 1;
        }
        assert!(framer.buffered() <= max_line + 1);
        let bound = 4 * (max_line + 2 + 16 * 1024 + 7);
        assert!(
            framer.heap_bytes() <= bound,
            "framer holds {} heap bytes after {lines} lines ({} pending); bound {bound}",
            framer.heap_bytes(),
            framer.buffered()
        );
    }
    assert_eq!(lines, 20_000);
}

// ---------------------------------------------------------------------------
// Hostile bytes against the real server
// ---------------------------------------------------------------------------

/// xorshift64*: random enough bytes without a dependency.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[test]
fn a_megabyte_without_newline_is_refused_once_and_the_client_stays() {
    let server = TestServer::default_config();
    let mut watcher = server.join();
    let mut flooder = server.join_seen_by(&mut watcher);
    let mut junk = random_bytes(0x5eed, 1 << 20);
    junk.retain(|&b| b != b'\n');
    flooder.send_raw(&junk);
    flooder.send_raw(b"\nstill here\n");
    flooder.expect("Line too long (max 4096 bytes), discarded");
    flooder.expect(&format!("{}: still here", flooder.name));
    let seen = watcher.skip_until(&format!("{}: still here", flooder.name));
    assert!(
        seen.is_empty(),
        "nothing of the junk reached others: {seen:?}"
    );
    assert_eq!(watcher.who().len(), 2);
}

#[test]
fn a_long_line_trickled_byte_by_byte_is_refused_once() {
    let server = TestServer::default_config();
    let mut slow = server.join();
    for _ in 0..4100 {
        slow.send_raw(b"z");
    }
    slow.expect("Line too long (max 4096 bytes), discarded");
    for _ in 0..2000 {
        slow.send_raw(b"z");
    }
    slow.send_raw(b"\n/who\n");
    slow.expect("1 user in #lobby:");
}

#[test]
fn nul_and_escape_heavy_lines_reach_others_clean() {
    let server = TestServer::default_config();
    let mut watcher = server.join();
    let mut hostile = server.join_seen_by(&mut watcher);
    let cases: &[(&[u8], Option<&str>)] = &[
        (b"\x00\x00hi\x00", Some("hi")),
        (b"\x1b[2J\x1b[Hclear", Some("[2J[Hclear")),
        (b"bell\x07\x07", Some("bell")),
        (b"tab\there\t \t", Some("tab\there")),
        (b"\xc2\x9b31mC1", Some("31mC1")),
        (b"bad \xff\xfe utf8", Some("bad \u{fffd}\u{fffd} utf8")),
        (b"x\x7f\x7fy", Some("xy")),
        // U+202E RIGHT-TO-LEFT OVERRIDE and U+2066 LEFT-TO-RIGHT ISOLATE.
        (b"\xe2\x80\xaeevil\xe2\x81\xa6 twin", Some("evil twin")),
        (b"\x1b]0;title\x07rest", Some("]0;titlerest")),
        (b"\x00\x01\x02", None),
        (b"\r\r\r", None),
        (b"   \t", None),
        (
            b"nul\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00 end\r",
            Some("nul end"),
        ),
    ];
    let mut want = Vec::new();
    for (raw, shown) in cases {
        hostile.send_raw(raw);
        hostile.send_raw(b"\n");
        if let Some(text) = shown {
            want.push(format!("{}: {text}", hostile.name));
        }
    }
    hostile.send_raw(b"/nick \x1bev\x00il\x07\n");
    want.push(format!("{} is now known as evil", hostile.name));
    hostile.send_raw(b"\x00/me \x1b[5mblinks\n");
    want.push("* evil [5mblinks".to_string());
    hostile.send("end");
    let got = watcher.skip_until("evil: end");
    assert_eq!(got, want);
}

#[test]
fn random_binary_lines_never_reach_anyone_dirty() {
    let server = TestServer::default_config();
    let mut watcher = server.join();
    let mut hostile = server.join_seen_by(&mut watcher);
    // 30 lines of random bytes (within the flood burst), no commands.
    let mut sent = 0;
    for seed in 1..=30u64 {
        let mut line = random_bytes(seed, 200);
        line.retain(|&b| b != b'\n');
        line.insert(0, b'#');
        hostile.send_raw(&line);
        hostile.send_raw(b"\n");
        sent += 1;
    }
    hostile.send("end");
    let got = watcher.skip_until(&format!("{}: end", hostile.name));
    assert_eq!(got.len(), sent, "{got:?}");
    for line in got {
        assert!(line.starts_with(&format!("{}: #", hostile.name)));
        assert!(
            line.chars().all(|c| !c.is_control() || c == '\t'),
            "{line:?}"
        );
        assert!(!line.ends_with([' ', '\t']));
    }
}

/// More lines at once than the flood burst: none is dropped, all in order
/// (the surplus waits; TCP backpressure, not loss).
#[test]
fn a_burst_past_the_flood_limit_loses_nothing() {
    let server = TestServer::default_config();
    let mut watcher = server.join();
    let mut flooder = server.join_seen_by(&mut watcher);
    let burst: String = (0..70).map(|i| format!("n{i}\n")).collect();
    flooder.send_raw(burst.as_bytes());
    for i in 0..70 {
        watcher.expect(&format!("{}: n{i}", flooder.name));
    }
}
