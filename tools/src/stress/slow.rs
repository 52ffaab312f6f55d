//! `chatstress slow`: slow consumers at scale. 1,000 clients that never
//! read and 50 that do, while one sender (chatd runs with --flood-rate 0)
//! pushes 1 KiB lines as fast as it can. The non-readers must be cut at
//! --max-outbound, the readers must get every line in order, and the
//! server's RSS (sampled, and its VmHWM peak) must stay under
//! clients x max-outbound + 64 MiB.
//!
//! PROTOCOL.md, `--max-outbound`: "a client whose output queued in the
//! server (not counting kernel buffers) exceeds this is disconnected as too
//! slow, with a warning in the log containing `too slow`".

use std::io::{BufWriter, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Checks, Outcome, start_chatd};
use crate::line_client::LineClient;
use crate::lines::find_newline;
use crate::procstat::{self, RssSampler};
use crate::report::mib;

/// `chatstress slow`'s numbers.
#[derive(Debug)]
pub struct Options {
    /// Clients that connect and never read.
    pub non_readers: usize,
    /// Clients that read everything and check it.
    pub readers: usize,
    /// How long the sender sends.
    pub secs: u64,
    /// Bytes per line, newline included (at least 32).
    pub line_bytes: usize,
    /// chatd's `--max-outbound`.
    pub max_outbound: usize,
    /// SO_RCVBUF for the readers (None: the kernel's autotuning).
    pub reader_rcvbuf: Option<usize>,
}

/// What one reader saw of the sender's lines.
struct Seen {
    /// Lines received in order.
    lines: u64,
    /// `S-END` arrived.
    ended: bool,
    /// The first thing that went wrong.
    error: Option<String>,
}

/// Reads until `S-END`, checking that the sender's lines come 0, 1, 2, ...
/// Raw reads into a large buffer and a cheap scan: with 50 readers on two
/// cores, a reader that costs more per byte than the server does would
/// fall behind and be cut, which would measure the reader, not chatd.
fn read_all(client: LineClient) -> Seen {
    let name = client.name.clone();
    let mut stream = client.writer;
    let mut seen = Seen {
        lines: 0,
        ended: false,
        error: None,
    };
    // Reading the greeting may have buffered bytes past it: start from
    // those, then read the socket directly.
    let mut buf: Vec<u8> = client.reader.buffer().to_vec();
    buf.reserve(1 << 20);
    let mut start = 0;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        while let Some(nl) = find_newline(&buf[start..]) {
            let line = &buf[start..start + nl];
            start += nl + 1;
            // The sender's lines arrive as `NAME: S<seq> ...`.
            let head = &line[..line.len().min(80)];
            let Some(at) = head.windows(3).position(|w| w == b": S") else {
                continue;
            };
            let text = &line[at + 3..];
            if text == b"-END" {
                seen.ended = true;
                return seen;
            }
            let mut seq: u64 = 0;
            let mut digits = 0;
            for &b in text.iter().take_while(|b| b.is_ascii_digit()) {
                seq = seq * 10 + u64::from(b - b'0');
                digits += 1;
            }
            if digits == 0 || seq != seen.lines {
                seen.error = Some(format!("{name}: line {seq} where {} was due", seen.lines));
                return seen;
            }
            seen.lines += 1;
        }
        buf.drain(..start);
        start = 0;
        match stream.read(&mut chunk) {
            Ok(0) => {
                seen.error = Some(format!(
                    "{name} after {} lines: connection closed",
                    seen.lines
                ));
                return seen;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                seen.error = Some(format!("{name} after {} lines: {e}", seen.lines));
                return seen;
            }
        }
    }
}

/// Runs the scenario against a fresh chatd at `chatd`.
pub fn run(chatd: &Path, opts: Options) -> Outcome {
    procstat::raise_nofile_limit();
    let clients = opts.non_readers + opts.readers + 1;
    println!(
        "slow: {} non-readers, {} readers, 1 sender of {}-byte lines for {} s, --max-outbound {}",
        opts.non_readers, opts.readers, opts.line_bytes, opts.secs, opts.max_outbound
    );
    let max_outbound = opts.max_outbound.to_string();
    let args = [
        "--flood-rate",
        "0",
        "--idle-timeout",
        "0",
        "--max-outbound",
        &max_outbound,
    ];
    let mut server = start_chatd(chatd, &args)?;
    let base = server.sample();
    let sampler = RssSampler::start(server.pid, Duration::from_millis(20));
    let timeout = Duration::from_secs(60);

    let mut readers = Vec::new();
    for _ in 0..opts.readers {
        let client = LineClient::join_with(server.addr, timeout, opts.reader_rcvbuf)
            .map_err(|e| e.to_string())?;
        readers.push(std::thread::spawn(move || read_all(client)));
    }
    let mut idle = Vec::new();
    for _ in 0..opts.non_readers {
        idle.push(TcpStream::connect(server.addr).map_err(|e| e.to_string())?);
    }
    let sender = LineClient::join_with(server.addr, timeout, opts.reader_rcvbuf)
        .map_err(|e| e.to_string())?;
    let writer = sender.writer.try_clone().map_err(|e| e.to_string())?;
    let sender_name = sender.name.clone();
    let echo = std::thread::spawn(move || read_all(sender));

    let pad = "x".repeat(opts.line_bytes.saturating_sub(16).max(1));
    let mut out = BufWriter::with_capacity(16 * 1024, writer);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.secs);
    let mut sent: u64 = 0;
    let mut bytes: u64 = 0;
    let mut write_error = None;
    while Instant::now() < deadline {
        for _ in 0..64 {
            let line = format!("S{sent} {pad}");
            let line = &line[..line.len().min(opts.line_bytes - 1)];
            if let Err(e) = writeln!(out, "{line}") {
                write_error = Some(e.to_string());
                break;
            }
            sent += 1;
            bytes += line.len() as u64 + 1;
        }
        if write_error.is_some() {
            break;
        }
    }
    let _ = writeln!(out, "S-END");
    let _ = out.flush();
    let elapsed = started.elapsed();
    println!(
        "  sent {sent} lines ({}) in {:.1} s: {:.1} MiB/s",
        mib(bytes),
        elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / 1048576.0
    );

    let results: Vec<Seen> = readers.into_iter().map(join_reader).collect();
    let own = join_reader(echo);
    let peak_sampled = sampler.finish();
    let end = server.sample();
    let bound = clients as u64 * opts.max_outbound as u64 + (64 << 20);
    let complete = results
        .iter()
        .filter(|s| s.ended && s.error.is_none() && s.lines == sent)
        .count();
    let cut = server.too_slow_count();
    println!(
        "  server RSS: start {}, peak sampled {}, VmHWM {}, end {}; bound {}",
        mib(base.rss),
        mib(peak_sampled),
        mib(end.hwm),
        mib(end.rss),
        mib(bound)
    );
    println!(
        "  readers complete: {complete}/{}; cut as too slow: {cut}",
        opts.readers
    );
    for s in results.iter().filter(|s| s.error.is_some()).take(5) {
        println!("  reader error: {}", s.error.as_deref().unwrap_or(""));
    }

    if complete < opts.readers || own.error.is_some() {
        server.show_warnings(&sender_name, 4);
    }
    let mut checks = Checks::default();
    checks.check(
        write_error.is_none(),
        format!("sender never cut ({write_error:?})"),
    );
    checks.check(
        complete == opts.readers,
        format!(
            "{complete}/{} readers got all {sent} lines in order",
            opts.readers
        ),
    );
    checks.check(
        own.ended && own.error.is_none() && own.lines == sent,
        format!("sender got its {sent} echoes ({:?})", own.error),
    );
    checks.check(
        cut == opts.non_readers,
        format!("{cut} cut as too slow = {} non-readers", opts.non_readers),
    );
    checks.check(
        peak_sampled.max(end.hwm) < bound,
        format!(
            "peak RSS {} < {}",
            mib(peak_sampled.max(end.hwm)),
            mib(bound)
        ),
    );
    checks.check(server.alive(), "server alive");
    drop(idle);
    checks.stop_server(server)
}

/// A reader thread's result; a reader that panicked saw nothing.
fn join_reader(thread: std::thread::JoinHandle<Seen>) -> Seen {
    thread.join().unwrap_or_else(|_| Seen {
        lines: 0,
        ended: false,
        error: Some("reader thread panicked".into()),
    })
}
