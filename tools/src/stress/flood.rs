//! `chatstress flood`: one client tries to send 100 MB as fast as it can
//! under the default flood limits (20 lines/s, burst 40) while observers
//! chat and measure their own round-trip latency. Checks: the observers'
//! p99 stays low, nothing is dropped (every observer gets every flood line
//! the server took, in order, and all its own probes), and the server's
//! memory stays flat: it stops reading the flooder and TCP backpressure
//! does the rest.
//!
//! PROTOCOL.md, `--flood-rate`, `--flood-burst`: "per-connection token
//! bucket, full at connect, refilled at the rate; every line ... takes a
//! token; lines without a token wait and are read later (TCP backpressure),
//! never dropped".

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::{Checks, Outcome, start_chatd};
use crate::line_client::LineClient;
use crate::procstat::RssSampler;
use crate::report::mib;
use crate::stats::percentile;

/// `chatstress flood`'s numbers.
#[derive(Debug)]
pub struct Options {
    /// Clients that probe their own round trip while the flood runs.
    pub observers: usize,
    /// Most bytes the flooder tries to send.
    pub bytes: u64,
    /// Most seconds the flooder tries.
    pub secs: u64,
    /// Bytes per flood line, newline included (at least 32).
    pub line_bytes: usize,
    /// Passed to chatd; `None` keeps its defaults.
    pub flood_rate: Option<u32>,
    /// The observers' p99 round trip must stay within this.
    pub p99_limit: Duration,
}

/// What one observer saw.
struct Observed {
    /// Flood lines received, in order.
    flood_lines: u64,
    /// Round trip of each of its probes that came back.
    latencies: Vec<Duration>,
    /// Probes it sent.
    probes_sent: u64,
    /// The first thing that went wrong.
    error: Option<String>,
}

/// Runs the scenario against a fresh chatd at `chatd`.
pub fn run(chatd: &Path, opts: Options) -> Outcome {
    println!(
        "flood: 1 client sends up to {} in {}-byte lines for at most {} s; {} observers probe latency",
        mib(opts.bytes),
        opts.line_bytes,
        opts.secs,
        opts.observers
    );
    let rate = opts.flood_rate.map(|r| r.to_string());
    let mut args = vec!["--idle-timeout", "0"];
    if let Some(rate) = &rate {
        args.extend(["--flood-rate", rate]);
    }
    let mut server = start_chatd(chatd, &args)?;
    let base = server.sample();
    let sampler = RssSampler::start(server.pid, Duration::from_millis(20));
    let timeout = Duration::from_secs(30);
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));

    // Observers join first, so they hear every flood line.
    let mut observers = Vec::new();
    for id in 0..opts.observers {
        let client = LineClient::join(server.addr, timeout).map_err(|e| e.to_string())?;
        let stop = Arc::clone(&stop);
        let writer = client.writer.try_clone().map_err(|e| e.to_string())?;
        observers.push(std::thread::spawn(move || {
            observe(client, writer, id, epoch, stop)
        }));
    }
    let flooder = LineClient::join(server.addr, timeout).map_err(|e| e.to_string())?;
    let flooder_name = flooder.name.clone();
    let mut writer = flooder.writer.try_clone().map_err(|e| e.to_string())?;
    let raw = flooder.writer.try_clone().map_err(|e| e.to_string())?;
    let flood_over = Arc::new(AtomicBool::new(false));
    let echo = {
        let mut client = flooder;
        let over = Arc::clone(&flood_over);
        let _ = client
            .writer
            .set_read_timeout(Some(Duration::from_millis(100)));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !over.load(Ordering::Relaxed) {
                match client.line() {
                    Ok(line) if line.contains(": F") => n += 1,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
            n
        })
    };
    // The flooder: blocking writes, 64 KiB at a time, until the byte budget
    // or the deadline. A write timeout lets it notice the deadline while
    // the server holds it back.
    writer
        .set_write_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let pad = "f".repeat(opts.line_bytes.max(16) - 16);
    let deadline = epoch + Duration::from_secs(opts.secs);
    let mut pending: Vec<u8> = Vec::new();
    let mut written: u64 = 0;
    let mut seq: u64 = 0;
    while written < opts.bytes && Instant::now() < deadline {
        if pending.is_empty() {
            while pending.len() < 64 * 1024 {
                let line = format!("F{seq} {pad}");
                pending.extend_from_slice(&line.as_bytes()[..line.len().min(opts.line_bytes - 1)]);
                pending.push(b'\n');
                seq += 1;
            }
        }
        match writer.write(&pending) {
            Ok(n) => {
                written += n as u64;
                pending.drain(..n);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("flooder write failed: {e}")),
        }
    }
    let flood_time = epoch.elapsed();
    println!(
        "  flooder pushed {} into the connection in {:.1} s ({:.1} KiB/s) -- the rest was held back",
        mib(written),
        flood_time.as_secs_f64(),
        written as f64 / 1024.0 / flood_time.as_secs_f64()
    );
    let during = server.sample();

    // End the flood with a reset: what the server had not read yet is
    // discarded with the connection; what it did read was broadcast before
    // the departure notice. A closing client waits until `who` no longer
    // lists the flooder, then says DONE: the departure is then in a presence
    // batch, flushed before DONE reaches anyone (PROTOCOL.md: a flush happens
    // "also just before any other line caused by a user is sent to another
    // user"), so an observer that sees DONE has seen every flood line.
    flood_over.store(true, Ordering::Relaxed);
    let echoed = echo.join().unwrap_or(0);
    let _ = SockRef::from(&raw).set_linger(Some(Duration::ZERO));
    drop(raw);
    drop(writer);
    let mut closer = LineClient::join(server.addr, timeout).map_err(|e| e.to_string())?;
    let listed = format!("  {flooder_name}");
    for _ in 0..600 {
        let users = closer.who().map_err(|e| e.to_string())?;
        if !users.contains(&listed) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    closer.send("DONE").map_err(|e| e.to_string())?;
    stop.store(true, Ordering::Relaxed);
    let results: Vec<Observed> = observers
        .into_iter()
        .map(|t| {
            t.join().unwrap_or_else(|_| Observed {
                flood_lines: 0,
                latencies: Vec::new(),
                probes_sent: 0,
                error: Some("observer thread panicked".into()),
            })
        })
        .collect();
    let peak = sampler.finish();
    let end = server.sample();

    let mut all: Vec<Duration> = results.iter().flat_map(|r| r.latencies.clone()).collect();
    all.sort_unstable();
    let p50 = percentile(&all, 50.0);
    let p99 = percentile(&all, 99.0);
    let max = all.last().copied().unwrap_or_default();
    let taken: Vec<u64> = results.iter().map(|r| r.flood_lines).collect();
    let most = taken.iter().copied().max().unwrap_or(0);
    let least = taken.iter().copied().min().unwrap_or(0);
    let probes_sent: u64 = results.iter().map(|r| r.probes_sent).sum();
    println!(
        "  server took {most} flood lines ({} of {}); flooder saw {echoed} echoes",
        mib(most * opts.line_bytes as u64),
        mib(written)
    );
    println!(
        "  observer round trips: {} samples of {probes_sent} probes, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        all.len(),
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0
    );
    println!(
        "  server RSS: start {}, during flood {}, peak sampled {}, VmHWM {}, end {}",
        mib(base.rss),
        mib(during.rss),
        mib(peak),
        mib(end.hwm),
        mib(end.rss)
    );
    for r in results.iter().filter(|r| r.error.is_some()).take(5) {
        println!("  observer error: {}", r.error.as_deref().unwrap_or(""));
    }

    let mut checks = Checks::default();
    checks.check(
        results.iter().all(|r| r.error.is_none()),
        "every observer got every flood line in order, and all its probes",
    );
    checks.check(
        most == least,
        format!("all observers got the same flood lines ({least}..{most})"),
    );
    checks.check(
        all.len() as u64 == probes_sent,
        format!("{}/{probes_sent} probes came back", all.len()),
    );
    checks.check(
        p99 <= opts.p99_limit,
        format!(
            "observer p99 {:.2} ms <= {:?}",
            p99.as_secs_f64() * 1000.0,
            opts.p99_limit
        ),
    );
    let growth = peak.max(end.hwm).saturating_sub(base.rss);
    checks.check(
        growth < 16 << 20,
        format!("server RSS grew {} (< 16 MiB) under the flood", mib(growth)),
    );
    checks.check(server.alive(), "server alive");
    checks.check(
        server.panic_count() == 0,
        format!("no panic in the log; flooder was {flooder_name}"),
    );
    checks.stop_server(server)
}

/// One observer: a probe every 100 ms (half the flood rate) through
/// `writer`, timed from send to echo; checks the flood lines' order; ends
/// when the flooder's departure arrives after `stop`.
fn observe(
    mut client: LineClient,
    mut writer: std::net::TcpStream,
    id: usize,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> Observed {
    let mut out = Observed {
        flood_lines: 0,
        latencies: Vec::new(),
        probes_sent: 0,
        error: None,
    };
    let prober = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let at = epoch.elapsed().as_nanos();
                if writer
                    .write_all(format!("P{id}.{n} {at}\n").as_bytes())
                    .is_err()
                {
                    break;
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            n
        })
    };
    let own = format!("{}: P{id}.", client.name);
    let mut next_probe = 0u64;
    let mut flooder_gone = false;
    loop {
        let line = match client.line() {
            Ok(line) => line,
            Err(e) => {
                out.error = Some(format!("observer {id}: {e}"));
                break;
            }
        };
        if let Some(rest) = line.strip_prefix(&own) {
            let mut parts = rest.split(' ');
            let n: u64 = parts
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(u64::MAX);
            let at: u128 = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            if n != next_probe {
                out.error = Some(format!(
                    "observer {id}: probe {n} where {next_probe} was due"
                ));
                break;
            }
            next_probe += 1;
            let now = epoch.elapsed().as_nanos();
            out.latencies
                .push(Duration::from_nanos(now.saturating_sub(at) as u64));
        } else if let Some((_, text)) = line.split_once(": F") {
            let seq: u64 = text
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(u64::MAX);
            if seq != out.flood_lines {
                out.error = Some(format!(
                    "observer {id}: flood line {seq} where {} was due",
                    out.flood_lines
                ));
                break;
            }
            out.flood_lines += 1;
        } else if line.ends_with(" has left") && !line.contains(": ") {
            // PROTOCOL.md: "disconnect (EOF, reset, `/quit`) | everyone left
            // in the room | `NAME has left`"; the flooder is the only one.
            flooder_gone = true;
        } else if flooder_gone && line.ends_with(": DONE") {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    out.probes_sent = prober.join().unwrap_or(0);
    // Probes still in flight when we stopped reading are not counted lost:
    // read until the last one sent comes back.
    while next_probe < out.probes_sent && out.error.is_none() {
        match client.line() {
            Ok(line) => {
                if line.starts_with(&own) {
                    let rest = &line[own.len()..];
                    let mut parts = rest.split(' ');
                    let at: u128 = parts.nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
                    let now = epoch.elapsed().as_nanos();
                    out.latencies
                        .push(Duration::from_nanos(now.saturating_sub(at) as u64));
                    next_probe += 1;
                }
            }
            Err(e) => out.error = Some(format!("observer {id} draining: {e}")),
        }
    }
    out
}
