//! `chatstress crowd`: a crowd that leaves at once must not take the
//! server's memory with it. N clients (default 18,000, spread over child
//! processes like `capacity`) connect, each sends `--line-bytes` (4,000)
//! bytes without a newline, and then all of them close at once. Each close
//! turns an unfinished line into a broadcast to everyone still there
//! (PROTOCOL.md, "Transport and lines": "A final line without a newline
//! before the client closes is still processed"), so the server has 18,000
//! lines of 4 KB to fan out to up to 18,000 users who no longer read.
//!
//! PROTOCOL.md, `--max-outbound-total`: "output queued for all users
//! together; past it, chatd stops reading input (from everyone) until it
//! drains below, so a crowd of legal senders slows down instead of filling
//! memory". The checks: the server's peak RSS (sampled every 20 ms, and
//! VmHWM) stays under `--max-outbound-total` + 64 MiB; 10 s after the last
//! connection is gone (the server's descriptor count back where it was)
//! RSS is within 32 MiB of what it was before the crowd came; and the
//! server is alive. A watcher that reads flat out must not be cut and must
//! see every departure.
//!
//! The same command measures a chatd from before `--max-outbound-total`
//! existed (`--chatd OLD`): the flag is left out when `--no-total-flag` is
//! given or when the binary refuses it, and the bound stays the one the
//! new server must meet, so the old one's figures are the "before" column
//! (it is expected to fail).
//!
//! Each client half-closes (FIN) before it closes: a plain close with
//! unread input (the presence notices nobody here reads) sends only a
//! reset, and a reset client's unfinished line is dropped, not broadcast.
//! Input already waiting is read away first, for the same reason.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::capacity::{counts, gather, greeted_connections, spawn_workers};
use super::{Checks, Outcome, start_chatd};
use crate::line_client::LineClient;
use crate::lines::find_newline;
use crate::procstat::{self, RssSampler};
use crate::report::mib;

/// chatd's default `--max-outbound-total` (PROTOCOL.md: 268435456).
pub const DEFAULT_TOTAL: u64 = 256 << 20;
/// Allowed above `--max-outbound-total` at the peak.
const PEAK_MARGIN: u64 = 64 << 20;
/// Allowed above the RSS before the crowd, once it is gone.
const BACK_MARGIN: u64 = 32 << 20;
/// The longest the server gets to close every connection of the crowd.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(300);

/// `chatstress crowd`'s numbers.
#[derive(Debug)]
pub struct Options {
    /// Clients in the crowd.
    pub clients: usize,
    /// Most clients one child process holds.
    pub per_process: usize,
    /// Bytes each client sends without a newline before closing.
    pub line_bytes: usize,
    /// chatd's `--max-outbound-total`, and the base of the peak bound.
    pub max_outbound_total: u64,
    /// Do not pass `--max-outbound-total` (a chatd that predates it).
    pub no_total_flag: bool,
    /// Seconds after the last client is gone when RSS is compared.
    pub after_secs: u64,
}

/// What the watcher saw.
#[derive(Debug, Default)]
struct Watched {
    /// Lines of at least half `--line-bytes`: the crowd's last lines.
    last_lines: u64,
    /// Departures, one by one or counted (`N users have left`).
    departures: u64,
    /// When departures reached the crowd's size.
    all_gone: Option<Instant>,
    /// Why it stopped reading before being told to (the server cut it).
    ended: Option<String>,
}

/// Runs the scenario against a fresh chatd at `chatd`.
pub fn run(chatd: &Path, opts: Options) -> Outcome {
    procstat::raise_nofile_limit();
    let n = opts.clients;
    let total = opts.max_outbound_total;
    let use_flag = if opts.no_total_flag {
        false
    } else if knows_total_flag(chatd, total) {
        true
    } else {
        println!(
            "  {} refuses --max-outbound-total: measuring it without the flag",
            chatd.display()
        );
        false
    };
    println!(
        "crowd: {n} clients (at most {} per process) send {} bytes without a newline, \
         then all close at once; --max-outbound-total {}",
        opts.per_process,
        opts.line_bytes,
        if use_flag {
            mib(total)
        } else {
            "not given".into()
        }
    );
    let total_text = total.to_string();
    let mut args = vec!["--idle-timeout", "600"];
    if use_flag {
        args.extend(["--max-outbound-total", &total_text]);
    }
    let mut server = start_chatd(chatd, &args)?;
    let pid = server.pid;

    let watcher = LineClient::join(server.addr, Duration::from_secs(10))
        .map_err(|e| format!("watcher: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let watch = spawn_watcher(watcher, n as u64, opts.line_bytes, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(300));
    let before = server.sample();
    let base_fds = procstat::open_fds(pid).map_err(|e| format!("/proc/{pid}/fd: {e}"))?;
    let sampler = RssSampler::start(pid, Duration::from_millis(20));

    let started = Instant::now();
    let mut workers = spawn_workers("crowd-child", server.addr, n, opts.per_process)?;
    let connected = gather(&mut workers, "ready")?;
    let connect_s = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    let full = server.sample();
    println!(
        "  {connected} connected and greeted in {connect_s:.1} s; server RSS {} before, {} with the crowd",
        mib(before.rss),
        mib(full.rss)
    );

    let mut offset = 0;
    for (w, count) in workers.iter_mut().zip(counts(n, opts.per_process)) {
        w.tell(&format!("send {} {offset}", opts.line_bytes))
            .map_err(|e| e.to_string())?;
        offset += count;
    }
    let sent = gather(&mut workers, "sent")?;
    std::thread::sleep(Duration::from_millis(500));
    let holding = server.sample();
    println!(
        "  {sent} unfinished lines of {} bytes sent; server RSS {}",
        opts.line_bytes,
        mib(holding.rss)
    );

    let closing = Instant::now();
    for w in &mut workers {
        w.tell("close").map_err(|e| e.to_string())?;
    }
    let closed = gather(&mut workers, "closed")?;
    let close_s = closing.elapsed().as_secs_f64();
    let deadline = closing + EMPTY_TIMEOUT;
    let mut fds = base_fds + n;
    while Instant::now() < deadline && server.alive() {
        fds = procstat::open_fds(pid).unwrap_or(0);
        if fds <= base_fds {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let emptied = fds <= base_fds;
    let emptied_at = Instant::now();
    let empty_s = (emptied_at - closing).as_secs_f64();
    println!(
        "  {closed} closed in {close_s:.2} s; {} {empty_s:.1} s after the close",
        if emptied {
            "the server had closed every connection".to_string()
        } else {
            format!("the server still held {} connections", fds - base_fds)
        }
    );

    let mut trail = Vec::new();
    let mut after = server.sample();
    for s in 1..=opts.after_secs {
        let at = emptied_at + Duration::from_secs(s);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        after = server.sample();
        trail.push(format!("{:.1}", after.rss as f64 / 1048576.0));
    }
    let peak_sampled = sampler.finish();
    let hwm = server.sample().hwm;
    let peak = peak_sampled.max(hwm);
    stop.store(true, Ordering::Relaxed);
    let watched = watch.join().unwrap_or_else(|_| Watched {
        ended: Some("watcher thread panicked".into()),
        ..Watched::default()
    });
    for w in &mut workers {
        let _ = w.tell("quit");
    }
    for mut w in workers {
        let _ = w.child.wait();
    }

    let peak_bound = total + PEAK_MARGIN;
    let back_bound = before.rss + BACK_MARGIN;
    println!(
        "  server RSS: before {}, crowd connected {}, holding lines {}, peak sampled {}, VmHWM {}",
        mib(before.rss),
        mib(full.rss),
        mib(holding.rss),
        mib(peak_sampled),
        mib(hwm)
    );
    println!(
        "  server RSS each second after the last left (MiB): {}",
        trail.join(" ")
    );
    println!(
        "  watcher: {} last lines, {} departures{}; cut as too slow (log): {}; server CPU {:.1} s",
        watched.last_lines,
        watched.departures,
        watched
            .all_gone
            .map(|t| format!(
                ", all seen {:.1} s after the close",
                t.saturating_duration_since(closing).as_secs_f64()
            ))
            .unwrap_or_default(),
        server.too_slow_count(),
        after.cpu_s
    );
    println!(
        "  figures: peak {} (bound {}), RSS {} s after {} (bound {})",
        mib(peak),
        mib(peak_bound),
        opts.after_secs,
        mib(after.rss),
        mib(back_bound)
    );

    let mut checks = Checks::default();
    checks.check(
        connected == n,
        format!("{connected}/{n} connected and greeted"),
    );
    checks.check(
        emptied,
        format!("the server closed all {n} connections ({empty_s:.1} s)"),
    );
    checks.check(
        peak < peak_bound,
        format!(
            "peak RSS {} < --max-outbound-total {} + 64 MiB",
            mib(peak),
            mib(total)
        ),
    );
    checks.check(
        after.rss <= back_bound,
        format!(
            "RSS {} s after the last left {} <= {} before + 32 MiB",
            opts.after_secs,
            mib(after.rss),
            mib(before.rss)
        ),
    );
    checks.check(
        watched.ended.is_none() && watched.departures >= n as u64,
        format!(
            "watcher not cut and saw all {n} departures ({} seen{})",
            watched.departures,
            watched
                .ended
                .as_deref()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        ),
    );
    checks.server_healthy(&mut server);
    checks.stop_server(server)
}

/// Whether `chatd` accepts `--max-outbound-total` (an older one exits 2 on
/// the unknown flag before it looks at `--help`).
fn knows_total_flag(chatd: &Path, total: u64) -> bool {
    Command::new(chatd)
        .args(["--max-outbound-total", &total.to_string(), "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Reads everything the watcher gets, counting the crowd's last lines and
/// departures, until told to stop or cut off.
fn spawn_watcher(
    client: LineClient,
    crowd: u64,
    line_bytes: usize,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Watched> {
    std::thread::spawn(move || {
        let mut seen = Watched::default();
        let mut stream = client.writer;
        if let Err(e) = stream.set_read_timeout(Some(Duration::from_millis(100))) {
            seen.ended = Some(e.to_string());
            return seen;
        }
        let mut buf: Vec<u8> = client.reader.buffer().to_vec();
        let mut chunk = vec![0u8; 1 << 16];
        let mut start = 0;
        while !stop.load(Ordering::Relaxed) {
            while let Some(nl) = find_newline(&buf[start..]) {
                let line = &buf[start..start + nl];
                start += nl + 1;
                count_line(&mut seen, line, line_bytes);
                if seen.all_gone.is_none() && seen.departures >= crowd {
                    seen.all_gone = Some(Instant::now());
                }
            }
            buf.drain(..start);
            start = 0;
            match stream.read(&mut chunk) {
                Ok(0) => {
                    seen.ended = Some("the server closed the watcher's connection".into());
                    break;
                }
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    seen.ended = Some(format!("watcher: {e}"));
                    break;
                }
            }
        }
        seen
    })
}

/// Counts one line the watcher got.
///
/// PROTOCOL.md: "disconnect (EOF, reset, `/quit`) | everyone left in the
/// room | `NAME has left`", with a reason in parentheses for some (`too
/// slow`), and "more [than 3 in a batch] as `N users have left`".
fn count_line(seen: &mut Watched, line: &[u8], line_bytes: usize) {
    if line.len() >= line_bytes / 2 {
        if line.windows(2).any(|w| w == b": ") {
            seen.last_lines += 1;
        }
        return;
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return;
    };
    if let Some(count) = text.strip_suffix(" users have left") {
        seen.departures += count.parse::<u64>().unwrap_or(0);
    } else if text.ends_with(" has left") || text.contains(" has left (") {
        seen.departures += 1;
    }
}

/// The child side: holds `count` connections and obeys its parent:
/// `send BYTES OFFSET` (each connection sends BYTES without a newline,
/// numbered from OFFSET), `close` (read what is waiting, half-close, close),
/// `quit`.
pub fn child(addr: SocketAddr, count: usize) -> Outcome {
    let mut clients = greeted_connections(addr, count)?;
    let mut out = io::stdout().lock();
    let mut say = |text: String| -> Outcome {
        writeln!(out, "{text}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())
    };
    say(format!("ready {count}"))?;
    for command in io::stdin().lock().lines() {
        let command = command.map_err(|e| e.to_string())?;
        let words: Vec<&str> = command.split_whitespace().collect();
        match words.as_slice() {
            ["send", bytes, offset] => {
                let bytes: usize = bytes.parse().map_err(|_| "bad send")?;
                let offset: usize = offset.parse().map_err(|_| "bad send")?;
                let mut sent = 0;
                for (i, c) in clients.iter_mut().enumerate() {
                    let text = unfinished_line(offset + i, bytes);
                    if c.stream.write_all(&text).is_ok() {
                        sent += 1;
                    }
                }
                say(format!("sent {sent}"))?;
            }
            ["close"] => {
                let mut sink = vec![0u8; 1 << 16];
                for c in &mut clients {
                    if c.stream.set_nonblocking(true).is_ok() {
                        while matches!(c.stream.read(&mut sink), Ok(k) if k > 0) {}
                    }
                    let _ = c.stream.shutdown(Shutdown::Write);
                }
                let closed = clients.len();
                clients.clear();
                say(format!("closed {closed}"))?;
            }
            ["quit"] => break,
            _ => return Err(format!("unknown command {command:?}")),
        }
    }
    Ok(())
}

/// `NNNNNN yyyy...`: `bytes` bytes (at least 8) of one client's unfinished
/// line, numbered so each last line is distinct.
fn unfinished_line(id: usize, bytes: usize) -> Vec<u8> {
    let mut text = format!("{id:06} ").into_bytes();
    text.resize(bytes.max(8), b'y');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_spread_over_children() {
        assert_eq!(counts(18_000, 9_000), vec![9_000, 9_000]);
        assert_eq!(counts(2_000, 900), vec![900, 900, 200]);
        assert_eq!(counts(5, 0), vec![1; 5]);
    }

    #[test]
    fn unfinished_lines_are_numbered_and_sized() {
        let line = unfinished_line(42, 4000);
        assert_eq!(line.len(), 4000);
        assert!(line.starts_with(b"000042 yy"));
        assert!(!line.contains(&b'\n'));
    }

    #[test]
    fn departures_and_last_lines_are_counted() {
        let mut seen = Watched::default();
        let long = format!("127.0.0.1:5: 000001 {}", "y".repeat(100));
        for line in [
            "127.0.0.1:5 has left",
            "127.0.0.1:6 has left (too slow)",
            "12 users have left",
            "127.0.0.1:7 has arrived",
            "3 users have arrived",
            long.as_str(),
        ] {
            count_line(&mut seen, line.as_bytes(), 100);
        }
        assert_eq!((seen.departures, seen.last_lines), (14, 1));
    }
}
