//! Backpressure and resource bounds of the real binary under crowds: the
//! issue "legal bursts cut off readers; a closing crowd takes memory; a
//! broken log pipe kills the server; `who` is an amplifier; churn grows the
//! idle wheel", point by point.
//!
//! Why these tests exist: every earlier test sent one burst at a time, or
//! used readers with megabytes of receive buffer, so the server never had
//! to choose between taking input and protecting a reader. Here many users
//! send legal bursts (the default `--flood-burst`, nothing faster) at the
//! same moment while others read at a realistic pace through small socket
//! buffers, a crowd of 2,000 leaves at once, the log pipe breaks, 50 users
//! spam `who` in a big room, and connections churn. Everything runs against
//! the real `chatd` binary over loopback sockets (PROTOCOL.md, "Running",
//! is the contract: `--max-outbound`, `--max-outbound-total`,
//! `--flood-rate`/`--flood-burst` with the v2 rule for long replies).
//!
//! The tests in this file load both cores on purpose, and the latency and
//! memory figures they check would be disturbed by one another, so they
//! take a lock and run one at a time. Every read is bounded (the harness's
//! `READ_TIMEOUT`, or a deadline); nothing sleeps where it can wait for a
//! line, except the readers that read at a pace on purpose and the probes
//! that sample at a fixed rate.

mod common;

use chatd_tools::line_client::who_header;
use common::proc::{mib, peak_rss_bytes, raise_nofile, rss_bytes};
use common::{Client, READ_TIMEOUT, RealServer, connect_with_recv_buffer, wait_for};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Running one at a time
// ---------------------------------------------------------------------------

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Held for the whole of each test: these tests saturate a 2-core machine
/// and measure memory and latency, so two at once would disturb each other.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Users that read at a pace
// ---------------------------------------------------------------------------

/// How a user takes its output from the socket.
#[derive(Clone, Copy, Debug)]
enum Pace {
    /// Blocking reads, as fast as the kernel delivers.
    FlatOut,
    /// One non-blocking read of up to `bytes` every `every`.
    Paced { bytes: usize, every: Duration },
}

/// A healthy reader: 64 KiB every 50 ms, about 1.3 MB/s, five times the
/// 256 KiB/s that the issue says must never be cut by legal bursts. Used
/// with a 64 KiB SO_RCVBUF, as in the issue.
const HEALTHY: Pace = Pace::Paced {
    bytes: 64 * 1024,
    every: Duration::from_millis(50),
};

/// SO_RCVBUF of a healthy reader (Linux doubles it).
const HEALTHY_RCVBUF: usize = 64 * 1024;

/// A reader crawling at 4 KiB/s: 512 bytes every 125 ms. Below any sensible
/// documented minimum rate, so it must be cut at `--max-outbound`.
const CRAWL: Pace = Pace::Paced {
    bytes: 512,
    every: Duration::from_millis(125),
};

/// How reading ended before the user had everything it expected.
#[derive(Clone, Debug, PartialEq)]
enum End {
    /// An orderly EOF.
    Closed,
    /// ECONNRESET (how chatd cuts a client as too slow).
    Reset,
    /// No byte for `READ_TIMEOUT`.
    Stalled,
    /// The test told a paced reader to stop.
    Stopped,
    /// Any other error.
    Error(String),
}

/// A user's connection read line by line at a [`Pace`]; every read is
/// bounded by `READ_TIMEOUT` of silence.
struct LineStream {
    stream: TcpStream,
    /// The user's name: its address, until a test renames it.
    name: String,
    pace: Pace,
    /// Bytes read but not yet returned as lines, from `start` on.
    buf: Vec<u8>,
    start: usize,
    /// Paced reads: when the next read is due.
    next_read: Instant,
    /// Set by another thread to end reading.
    stop: Option<Arc<AtomicBool>>,
    /// Set when another user of the same scenario failed.
    failed: Option<Arc<AtomicBool>>,
    /// Reading gives up (`End::Stopped`) at this moment, if set.
    deadline: Option<Instant>,
    bytes: u64,
}

impl LineStream {
    /// Connects (with `SO_RCVBUF` = `rcvbuf` if given) without reading.
    fn connect(addr: SocketAddr, rcvbuf: Option<usize>) -> LineStream {
        let stream = match rcvbuf {
            Some(bytes) => connect_with_recv_buffer(addr, bytes),
            None => TcpStream::connect(addr).expect("connect"),
        };
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        let name = stream.local_addr().unwrap().to_string();
        LineStream {
            stream,
            name,
            pace: Pace::FlatOut,
            buf: Vec::new(),
            start: 0,
            next_read: Instant::now(),
            stop: None,
            failed: None,
            deadline: None,
            bytes: 0,
        }
    }

    /// Connects and reads the greeting `You are NAME`.
    fn join(addr: SocketAddr, rcvbuf: Option<usize>) -> LineStream {
        let mut user = LineStream::connect(addr, rcvbuf);
        let greeting = user.line();
        assert_eq!(greeting, format!("You are {}", user.name));
        user
    }

    fn set_pace(&mut self, pace: Pace) {
        self.pace = pace;
        self.next_read = Instant::now();
    }

    /// Sends `line` and a newline.
    fn send(&self, line: &str) {
        (&self.stream)
            .write_all(format!("{line}\n").as_bytes())
            .expect("send");
    }

    /// A second handle for a writer thread (blocking, with a write timeout).
    fn writer(&self) -> TcpStream {
        self.stream.try_clone().unwrap()
    }

    /// The next line; panics if the stream ends (for setup, not for users
    /// that may be cut).
    fn line(&mut self) -> String {
        match self.next_line() {
            Ok(line) => line,
            Err(end) => panic!("{}: stream ended ({end:?}) while a line was due", self.name),
        }
    }

    /// Reads lines until one equals `want`.
    fn skip_until(&mut self, want: &str) -> Result<Vec<String>, End> {
        let mut skipped = Vec::new();
        loop {
            let line = self.next_line()?;
            if line == want {
                return Ok(skipped);
            }
            skipped.push(line);
        }
    }

    /// The next line (without `\n`), or how the stream ended.
    fn next_line(&mut self) -> Result<String, End> {
        loop {
            if let Some(at) = self.buf[self.start..].iter().position(|&b| b == b'\n') {
                let line = &self.buf[self.start..self.start + at];
                let line = String::from_utf8_lossy(line).into_owned();
                self.start += at + 1;
                return Ok(line);
            }
            self.buf.drain(..self.start);
            self.start = 0;
            self.fill()?;
        }
    }

    /// How long silence may last before the read gives up: `READ_TIMEOUT`,
    /// or a second once another user of the scenario has failed (its lost
    /// lines will never come, and the test has failed anyway).
    fn patience(&self) -> Duration {
        if self
            .failed
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            Duration::from_secs(1)
        } else {
            READ_TIMEOUT
        }
    }

    /// Appends at least one byte to `buf`, at the user's pace.
    fn fill(&mut self) -> Result<(), End> {
        let mut chunk = [0u8; 64 * 1024];
        let silent_since = Instant::now();
        loop {
            if self
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
            {
                return Err(End::Stopped);
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|deadline| now >= deadline) {
                return Err(End::Stopped);
            }
            if silent_since.elapsed() > self.patience() {
                return Err(End::Stalled);
            }
            let got = match self.pace {
                // Blocking reads in short slices, so patience and stop
                // are looked at while waiting.
                Pace::FlatOut => {
                    let mut slice = Duration::from_millis(100);
                    if let Some(deadline) = self.deadline {
                        slice = slice.min(deadline - now).max(Duration::from_millis(1));
                    }
                    self.stream.set_read_timeout(Some(slice)).unwrap();
                    self.stream.read(&mut chunk)
                }
                Pace::Paced { bytes, every } => {
                    let now = Instant::now();
                    if now < self.next_read {
                        thread::sleep(self.next_read - now);
                    }
                    // The next read is due one period later (no catching
                    // up after a late wake-up: the rate only ever drops).
                    self.next_read = Instant::now() + every;
                    let want = bytes.min(chunk.len());
                    // SAFETY: recv writes at most `want` bytes into `chunk`.
                    let got = unsafe {
                        libc::recv(
                            self.stream.as_raw_fd(),
                            chunk.as_mut_ptr().cast(),
                            want,
                            libc::MSG_DONTWAIT,
                        )
                    };
                    if got < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(got as usize)
                    }
                }
            };
            match got {
                Ok(0) => return Err(End::Closed),
                Ok(n) => {
                    self.bytes += n as u64;
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Err(End::Reset),
                Err(e) => return Err(End::Error(e.to_string())),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Bursts of numbered lines, and what each user saw of them
// ---------------------------------------------------------------------------

/// The text of burst line `i`: its number, a space and a filler, `len`
/// bytes in all, so a receiver can check order and integrity.
fn burst_text(i: usize, len: usize) -> String {
    format!("{i:03} {}", "x".repeat(len - 4))
}

/// A whole burst of `count` lines, each `prefix` + [`burst_text`].
fn burst(prefix: &str, count: usize, len: usize) -> Vec<u8> {
    (0..count)
        .map(|i| format!("{prefix}{}\n", burst_text(i, len)))
        .collect::<String>()
        .into_bytes()
}

/// If `line` carries burst text, its source and number (`None` if the text
/// was altered). Sources: `NAME: TEXT` (chat) → `NAME`; `[private] NAME:
/// TEXT` → `NAME`; `[to NAME] TEXT` (a private message's echo) → `to NAME`.
fn numbered(line: &str, len: usize) -> Option<(String, Option<usize>)> {
    let (source, body) = if let Some(rest) = line.strip_prefix("[private] ") {
        let (name, body) = rest.split_once(": ")?;
        (name.to_string(), body)
    } else if let Some(rest) = line.strip_prefix("[to ") {
        let (name, body) = rest.split_once("] ")?;
        (format!("to {name}"), body)
    } else {
        let (name, body) = line.split_once(": ")?;
        if name.contains(' ') {
            return None;
        }
        (name.to_string(), body)
    };
    let head = body.as_bytes();
    if head.len() < 4 || !head[..3].iter().all(u8::is_ascii_digit) || head[3] != b' ' {
        return None;
    }
    let intact = body.len() == len && head[4..].iter().all(|&b| b == b'x');
    Some((source, intact.then(|| body[..3].parse().unwrap())))
}

/// True for a departure notice (`NAME has left…`, `N users have left`).
fn is_departure(line: &str) -> bool {
    !line.contains(": ") && (line.contains(" has left") || line.ends_with(" users have left"))
}

/// What one user saw of a burst scenario.
#[derive(Debug, Default)]
struct Seen {
    user: String,
    /// Burst lines received in order, per source.
    counts: BTreeMap<String, usize>,
    /// Burst lines out of order, repeated or altered (should stay empty).
    disorder: Vec<String>,
    /// Departure notices seen.
    departures: Vec<String>,
    /// How reading ended early, if it did.
    ended: Option<End>,
    /// Time from the start signal until everything expected had come.
    took: Duration,
    bytes: u64,
}

impl Seen {
    fn new(user: &str) -> Seen {
        Seen {
            user: user.to_string(),
            ..Seen::default()
        }
    }

    fn note(&mut self, line: &str, len: usize) {
        if is_departure(line) {
            self.departures.push(line.to_string());
        }
        let Some((source, number)) = numbered(line, len) else {
            return;
        };
        let next = self.counts.entry(source.clone()).or_insert(0);
        match number {
            Some(i) if i == *next => *next += 1,
            _ => {
                if self.disorder.len() < 5 {
                    let head: String = line.chars().take(60).collect();
                    self.disorder
                        .push(format!("{head}… (expected {source} #{next})"));
                }
            }
        }
    }

    fn total(&self) -> usize {
        self.counts.values().sum()
    }
}

/// One user in a burst scenario.
struct Player {
    user: LineStream,
    /// How it reads once the burst starts.
    pace: Pace,
    /// What it writes at the start signal (from a writer thread, so its
    /// reading never waits on its writing, as with `nc`).
    sends: Vec<u8>,
    /// Burst lines it must receive, per source.
    expects: BTreeMap<String, usize>,
}

/// Starts every player's burst and reading at the same moment; each reads
/// until it has everything it expects (or its stream ends). Then the first
/// player still connected says `after`, and every player that was not cut
/// reads up to it, so departures announced late are seen too and the room
/// is shown to go on. Returns what each player saw, in order.
fn play(players: Vec<Player>, len: usize) -> Vec<Seen> {
    let start = Arc::new(Barrier::new(players.len() * 2));
    let failed = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for mut player in players {
        let bytes = std::mem::take(&mut player.sends);
        let mut writer = player.user.writer();
        let go = Arc::clone(&start);
        writers.push(thread::spawn(move || {
            go.wait();
            if bytes.is_empty() {
                Ok(())
            } else {
                writer.write_all(&bytes)
            }
        }));
        let go = Arc::clone(&start);
        player.user.failed = Some(Arc::clone(&failed));
        let failed = Arc::clone(&failed);
        readers.push(thread::spawn(move || {
            player.user.set_pace(player.pace);
            let mut seen = Seen::new(&player.user.name);
            go.wait();
            let began = Instant::now();
            while seen.counts != player.expects {
                match player.user.next_line() {
                    Ok(line) => seen.note(&line, len),
                    Err(end) => {
                        seen.ended = Some(end);
                        failed.store(true, Ordering::Relaxed);
                        break;
                    }
                }
            }
            seen.took = began.elapsed();
            seen.bytes = player.user.bytes;
            (player.user, seen)
        }));
    }
    for writer in writers {
        let _ = writer.join().expect("writer thread");
    }
    let mut done: Vec<(LineStream, Seen)> = readers
        .into_iter()
        .map(|r| r.join().expect("reader thread"))
        .collect();
    // The epilogue: one line through the room, read flat out.
    let Some(speaker) = done.iter().position(|(_, seen)| seen.ended.is_none()) else {
        return done.into_iter().map(|(_, seen)| seen).collect();
    };
    let after = format!("{}: after", done[speaker].0.name);
    done[speaker].0.send("after");
    for (user, seen) in done.iter_mut() {
        if seen.ended.is_some() {
            continue;
        }
        user.set_pace(Pace::FlatOut);
        match user.skip_until(&after) {
            Ok(lines) => lines.iter().for_each(|line| seen.note(line, len)),
            Err(end) => seen.ended = Some(end),
        }
    }
    done.into_iter().map(|(_, seen)| seen).collect()
}

/// Joins `n` users with the given receive buffer, then syncs the room: the
/// last one speaks and everyone (`others` too) reads up to it, so every
/// arrival has been announced before a burst starts.
fn join_room(
    addr: SocketAddr,
    n: usize,
    rcvbuf: Option<usize>,
    others: &mut [&mut LineStream],
) -> Vec<LineStream> {
    let mut users: Vec<LineStream> = (0..n).map(|_| LineStream::join(addr, rcvbuf)).collect();
    let last = users.last().unwrap();
    let ready = format!("{}: ready", last.name);
    last.send("ready");
    for user in users.iter_mut() {
        user.skip_until(&ready).expect("sync before the burst");
    }
    for user in others.iter_mut() {
        user.skip_until(&ready).expect("sync before the burst");
    }
    users
}

/// `count` lines from each of `sources`.
fn from_each(sources: &[String], count: usize) -> BTreeMap<String, usize> {
    sources.iter().map(|s| (s.clone(), count)).collect()
}

/// Checks that every player got every line it expected, in order, intact,
/// and that nobody was cut or left.
#[track_caller]
fn assert_everyone_got_everything(seen: &[Seen], expects: &[BTreeMap<String, usize>]) {
    let mut failures = Vec::new();
    for (seen, want) in seen.iter().zip(expects) {
        let expected: usize = want.values().sum();
        if seen.ended.is_some() || seen.total() != expected || !seen.disorder.is_empty() {
            failures.push(format!(
                "{}: {} of {expected} lines, ended {:?} after {:?}, disorder {:?}",
                seen.user,
                seen.total(),
                seen.ended,
                seen.took,
                seen.disorder
            ));
        }
    }
    let departures: Vec<&String> = seen.iter().flat_map(|s| &s.departures).collect();
    assert!(
        failures.is_empty() && departures.is_empty(),
        "{} of {} users did not get every line in order: {failures:#?}\n\
         departures seen: {departures:?}",
        failures.len(),
        seen.len()
    );
}

/// Prints a scenario's figures (shown with `--nocapture` or on failure).
fn report(test: &str, seen: &[Seen]) {
    let slowest = seen.iter().map(|s| s.took).max().unwrap_or_default();
    let bytes: u64 = seen.iter().map(|s| s.bytes).sum();
    eprintln!(
        "{test}: {} users, slowest done after {slowest:?}, {:.1} MB read in all",
        seen.len(),
        bytes as f64 / 1e6
    );
}

// ---------------------------------------------------------------------------
// Point 1: legal bursts must not cut off users who read
// ---------------------------------------------------------------------------

/// Issue point 1, first reproduction. PROTOCOL.md "Running":
/// `--flood-burst` (40 lines at once is legal) and `--max-outbound` (only
/// a client too slow to read is cut). Five users each send a default burst
/// of 40 `/msg victim` lines of 4,000 bytes at the same moment (800 KB for
/// `victim`, three times `--max-outbound`), while `victim` reads 64 KiB
/// every 50 ms through a 64 KiB receive buffer (about 1.3 MB/s). Before
/// the fix `victim` was reset as `too slow: 261392 bytes queued` (here:
/// reset after 16 of its 200 lines). The server must stop taking input
/// until `victim` catches up: `victim` gets all 200 lines, each sender its
/// 40 echoes, in order.
#[test]
fn private_bursts_to_a_healthy_reader_do_not_cut_it_off() {
    let _serial = one_at_a_time();
    const SENDERS: usize = 5;
    const LINES: usize = 40;
    const LEN: usize = 4000;
    let server = RealServer::start(&[]);
    let mut victim = LineStream::join(server.addr, Some(HEALTHY_RCVBUF));
    victim.send("/nick victim");
    victim
        .skip_until(&format!("{} is now known as victim", victim.name))
        .expect("rename");
    victim.name = "victim".to_string();
    let senders = join_room(server.addr, SENDERS, None, &mut [&mut victim]);
    let sender_names: Vec<String> = senders.iter().map(|s| s.name.clone()).collect();
    let mut players = vec![Player {
        user: victim,
        pace: HEALTHY,
        sends: Vec::new(),
        expects: from_each(&sender_names, LINES),
    }];
    for sender in senders {
        players.push(Player {
            user: sender,
            pace: Pace::FlatOut,
            sends: burst("/msg victim ", LINES, LEN),
            expects: from_each(&["to victim".to_string()], LINES),
        });
    }
    let expects: Vec<_> = players.iter().map(|p| p.expects.clone()).collect();
    let seen = play(players, LEN);
    report("private bursts", &seen);
    assert_everyone_got_everything(&seen, &expects);
}

/// Room bursts: `senders` users, each reading at [`HEALTHY`] pace, send 40
/// lines of `len` bytes at the same moment, and one more user reads flat
/// out. Everyone must get every line of every sender, in order.
fn room_burst(senders: usize, len: usize, test: &str) {
    const LINES: usize = 40;
    let server = RealServer::start(&[]);
    let mut observer = LineStream::join(server.addr, None);
    let users = join_room(
        server.addr,
        senders,
        Some(HEALTHY_RCVBUF),
        &mut [&mut observer],
    );
    let names: Vec<String> = users.iter().map(|u| u.name.clone()).collect();
    let mut players = vec![Player {
        user: observer,
        pace: Pace::FlatOut,
        sends: Vec::new(),
        expects: from_each(&names, LINES),
    }];
    for user in users {
        players.push(Player {
            user,
            pace: HEALTHY,
            sends: burst("", LINES, len),
            expects: from_each(&names, LINES),
        });
    }
    let expects: Vec<_> = players.iter().map(|p| p.expects.clone()).collect();
    let seen = play(players, len);
    report(test, &seen);
    assert_everyone_got_everything(&seen, &expects);
}

/// Issue point 1, second reproduction. PROTOCOL.md "Running":
/// `--flood-burst`, `--max-outbound`, `--max-outbound-total` (past the
/// total, input stops until queues drain, "so a crowd of legal senders
/// slows down instead of ... getting readers cut"). 20 users each send 40
/// chat lines of 2,000 bytes at once (1.6 MB for every reader) while each
/// reads at 1.3 MB/s, and one more reads flat out. Before the fix 9 readers
/// were cut and the flat-out reader lost 49 of 800 lines (here, with
/// readers at 1.3 MB/s: all 20 reset after 32 to 80 lines, and the
/// flat-out reader got 280 to 325 of 800).
#[test]
fn room_bursts_of_2000_byte_lines_reach_every_reader() {
    let _serial = one_at_a_time();
    room_burst(20, 2000, "20 × 40 × 2000 B");
}

/// Issue point 1, third reproduction (same rules as above): 16 users × 40
/// lines of 4,000 bytes (2.6 MB for every reader). Before the fix the
/// flat-out reader was cut after 81 of 640 lines (here: 15 or 16 of the 16
/// paced readers reset after 16 to 31 lines, and the flat-out reader got
/// 131 to 170 of 640).
#[test]
fn room_bursts_of_4000_byte_lines_reach_every_reader() {
    let _serial = one_at_a_time();
    room_burst(16, 4000, "16 × 40 × 4000 B");
}

/// The storm for the two tests below: 10 users each send 40 lines of 4,000
/// bytes at once (1.6 MB for every user) and read flat out, in a room
/// where a laggard joined first. Returns what the senders saw.
fn storm(server: &RealServer) -> Vec<Seen> {
    const SENDERS: usize = 10;
    const LINES: usize = 40;
    const LEN: usize = 4000;
    let users = join_room(server.addr, SENDERS, None, &mut []);
    let names: Vec<String> = users.iter().map(|u| u.name.clone()).collect();
    let players: Vec<Player> = users
        .into_iter()
        .map(|user| Player {
            user,
            pace: Pace::FlatOut,
            sends: burst("", LINES, LEN),
            expects: from_each(&names, LINES),
        })
        .collect();
    play(players, LEN)
}

/// Checks the storm's outcome: every sender got every line in order, and
/// the only departure anyone saw is `gone` cut as too slow (once each).
#[track_caller]
fn assert_storm_outcome(server: &RealServer, seen: &[Seen], gone: &str) {
    let cut = format!("{gone} has left (too slow)");
    let mut failures = Vec::new();
    for seen in seen {
        let complete = seen.ended.is_none() && seen.total() == 400 && seen.disorder.is_empty();
        if !complete || seen.departures != [cut.clone()] {
            failures.push(format!(
                "{}: {} of 400 lines, ended {:?} after {:?}, disorder {:?}, departures {:?}",
                seen.user,
                seen.total(),
                seen.ended,
                seen.took,
                seen.disorder,
                seen.departures
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "every sender must get all 400 lines in order and see exactly \
         `{cut}`: {failures:#?}"
    );
    assert!(
        wait_for(READ_TIMEOUT, || server.log_count("too slow") == 1),
        "one `too slow` warning in the log:\n{}",
        server.log_text()
    );
}

/// Issue point 1: "a user who reads nothing is still cut at
/// `--max-outbound`". PROTOCOL.md "Running", `--max-outbound`: a client
/// whose queued output exceeds it is disconnected as too slow, with a
/// warning containing `too slow`. The backpressure that protects readers
/// must not let a client that reads nothing hold the room: during a storm
/// of legal bursts (10 × 40 × 4,000 bytes) it is cut, and everyone else
/// gets every line.
#[test]
fn a_user_who_reads_nothing_is_still_cut_during_a_storm() {
    let _serial = one_at_a_time();
    let server = RealServer::start(&[]);
    // A 4 KiB receive buffer: what the kernel holds for it is small, so
    // the server's own queue for it fills.
    let sleeper = LineStream::connect(server.addr, Some(4096));
    let name = sleeper.name.clone();
    let seen = storm(&server);
    drop(sleeper);
    report("storm with a non-reader", &seen);
    assert_storm_outcome(&server, &seen, &name);
}

/// Issue point 1: "a reader crawling at 4 KiB/s during a burst storm is
/// cut and the room goes on". PROTOCOL.md "Running", `--max-outbound` and
/// `--max-outbound-total`: input waits for readers, but a reader below the
/// documented minimum rate cannot hold the room; it is cut at
/// `--max-outbound` and the storm (10 × 40 × 4,000 bytes) reaches everyone
/// else, in order.
#[test]
fn a_reader_crawling_at_4_kib_per_second_is_cut_and_the_room_goes_on() {
    let _serial = one_at_a_time();
    let server = RealServer::start(&[]);
    let mut crawler = LineStream::join(server.addr, Some(4096));
    let name = crawler.name.clone();
    let stop = Arc::new(AtomicBool::new(false));
    crawler.stop = Some(Arc::clone(&stop));
    crawler.set_pace(CRAWL);
    let crawl = thread::spawn(move || {
        // Reads at 4 KiB/s until cut or told to stop; the departure seen
        // by the others is the test's evidence, this is for the report.
        let began = Instant::now();
        let end = loop {
            if let Err(end) = crawler.next_line() {
                break end;
            }
        };
        (end, crawler.bytes, began.elapsed())
    });
    let seen = storm(&server);
    stop.store(true, Ordering::Relaxed);
    let (end, bytes, after) = crawl.join().expect("crawler thread");
    report("storm with a crawler", &seen);
    eprintln!("crawler: {end:?} after {after:?}, {bytes} bytes read");
    assert_storm_outcome(&server, &seen, &name);
}

// ---------------------------------------------------------------------------
// Crowds of idle users
// ---------------------------------------------------------------------------

/// Connects `n` users that never write and read nothing but their
/// greeting (later presence notices stay in their receive buffers, a few
/// KB each). Each greeting is awaited before the next connect, so the
/// listen backlog never overflows (a dropped SYN costs a second).
fn idle_crowd(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| connect_greeted(addr)).collect()
}

/// Connects and reads up to the end of the greeting line (plus whatever
/// came with it), with no buffer kept.
fn connect_greeted(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut greeting = [0u8; 256];
    let mut got = 0;
    while !greeting[..got].contains(&b'\n') {
        assert!(got < greeting.len(), "greeting too long");
        match stream.read(&mut greeting[got..]) {
            Ok(0) => panic!("connection closed before the greeting"),
            Ok(n) => got += n,
            Err(e) => panic!("no greeting within {READ_TIMEOUT:?}: {e}"),
        }
    }
    stream
}

// ---------------------------------------------------------------------------
// Point 2: a crowd closing at once
// ---------------------------------------------------------------------------

/// Issue point 2. PROTOCOL.md "Running", `--max-outbound-total`: output
/// queued for all users together past it stops input from everyone until
/// it drains, "so a crowd of legal senders slows down instead of filling
/// memory"; and "Transport and lines": a final line without a newline
/// before the client closes is still processed. 2,000 users each send
/// 4,000 bytes without a newline and close: each close turns an unfinished
/// line into a 4 KB broadcast to everyone still there. Before the fix the
/// peak RSS was 506 MiB (every outbox full at `--max-outbound`) and 5 s
/// after the room was empty RSS was still 133 MiB. With
/// `--max-outbound-total` 64 MiB the peak must stay under 64 + 64 MiB, and
/// within 10 s of the last departure (polled up to 12 s, for a busy
/// machine) RSS must be back within 32 MiB of what it was before the crowd
/// came. A watcher reading flat out must not be cut and must see all
/// 2,000 departures.
///
/// Each client half-closes (FIN) before it closes: a plain close with
/// unread input (the presence notices nobody here reads) sends only a
/// reset, and a reset client's unfinished line is dropped, not broadcast.
/// The FIN comes first, so the server sees EOF (and broadcasts the line)
/// unless a write to the client fails first.
#[test]
fn a_crowd_closing_at_once_stays_within_max_outbound_total() {
    let _serial = one_at_a_time();
    const CROWD: usize = 2000;
    const LEN: usize = 4000;
    const TOTAL: u64 = 64 << 20;
    const MIB: u64 = 1 << 20;
    raise_nofile(CROWD + 100);
    let total_flag = TOTAL.to_string();
    let parsed = std::process::Command::new(common::CHATD)
        .args(["--max-outbound-total", &total_flag, "--help"])
        .output()
        .expect("chatd runs");
    assert!(
        parsed.status.success(),
        "chatd refuses --max-outbound-total ({}): {}",
        parsed.status,
        String::from_utf8_lossy(&parsed.stderr)
            .lines()
            .next()
            .unwrap_or("")
    );
    let server = RealServer::start(&["--max-outbound-total", &total_flag]);
    let pid = server.pid();
    let mut watcher = LineStream::join(server.addr, None);
    let before = rss_bytes(pid);

    let mut crowd = idle_crowd(server.addr, CROWD);
    for (i, client) in crowd.iter_mut().enumerate() {
        let text = format!("{i:04} {}", "y".repeat(LEN - 5));
        client.write_all(text.as_bytes()).expect("send");
    }
    let closing = Instant::now();
    for client in crowd.drain(..) {
        let _ = client.shutdown(Shutdown::Write);
        drop(client);
    }

    // The watcher reads until all 2,000 have left (announced one by one
    // or counted), counting their last lines on the way.
    let (mut lines, mut gone) = (0, 0);
    let ended = loop {
        match watcher.next_line() {
            Ok(line) => {
                if line.len() > LEN && line.contains(": ") {
                    lines += 1;
                } else if let Some(n) = line.strip_suffix(" users have left") {
                    gone += n.parse::<usize>().unwrap_or(0);
                } else if is_departure(&line) {
                    gone += 1;
                }
                if gone >= CROWD {
                    break None;
                }
            }
            Err(end) => break Some(end),
        }
    };
    let emptied = closing.elapsed();
    let peak = peak_rss_bytes(pid);
    let back_within = 32 * MIB;
    let back = wait_for(Duration::from_secs(12), || {
        rss_bytes(pid) <= before + back_within
    });
    let after = rss_bytes(pid);
    let figures = format!(
        "RSS before {:.1} MiB, peak {:.1} MiB, {:.1} MiB {:.1} s after the room emptied \
         (in {emptied:?}); watcher: {lines} lines, {gone} departures, ended {ended:?}",
        mib(before),
        mib(peak),
        mib(after),
        closing.elapsed().saturating_sub(emptied).as_secs_f64()
    );
    eprintln!("{figures}");
    assert!(
        peak < TOTAL + 64 * MIB,
        "peak RSS {:.1} MiB, over --max-outbound-total + 64 MiB = {} MiB: {figures}",
        mib(peak),
        (TOTAL + 64 * MIB) / MIB
    );
    assert!(
        back,
        "RSS {:.1} MiB 12 s after the last user left, more than 32 MiB over the \
         {:.1} MiB before they came: {figures}",
        mib(after),
        mib(before)
    );
    // Not asserted: how many of the 2,000 last lines the watcher got. A
    // client that closes with unread input resets its connection, and
    // whether the server reads its EOF before a write to it fails is a
    // race (a reset client's unfinished line is dropped).
    assert!(
        ended.is_none() && gone == CROWD,
        "the watcher must not be cut and must see all {CROWD} departures: {figures}"
    );
}

// ---------------------------------------------------------------------------
// Point 3: the log pipe and SIGHUP
// ---------------------------------------------------------------------------

/// Reads until `want`; if the connection ends first, fails with the
/// server's exit status (a dead server is the bug these tests look for).
#[track_caller]
fn expect_alive(server: &mut RealServer, client: &mut Client, want: &str) {
    loop {
        match client.try_line() {
            Some(line) if line == want => return,
            Some(_) => {}
            None => {
                wait_for(Duration::from_secs(2), || server.exited().is_some());
                let status = match server.exited() {
                    Some(status) => format!("chatd exited: {status}"),
                    None => "chatd is still running".to_string(),
                };
                panic!(
                    "{}: connection closed while waiting for {want:?}; {status}",
                    client.name
                );
            }
        }
    }
}

/// Issue point 3. PROTOCOL.md "Running": "a log destination that fails (a
/// closed pipe, a full disk) never stops or slows the server: the lines are
/// lost instead", and SIGTERM still shuts down gracefully with status 0.
/// Before the fix the next log line after the pipe closed panicked chatd
/// (exit status 101) and every user was dropped without `Server is
/// shutting down`.
#[test]
fn a_closed_log_pipe_does_not_stop_the_server() {
    let _serial = one_at_a_time();
    let (mut server, log) = RealServer::start_holding_log(&[]);
    let mut a = Client::join(server.addr);
    drop(log); // the reading end of chatd's stderr is closed
    // B's connection is logged at info: the first write to the dead pipe.
    let mut b = Client::connect(server.addr);
    let greeting = format!("You are {}", b.name);
    expect_alive(&mut server, &mut b, &greeting);
    expect_alive(&mut server, &mut a, &format!("{} has arrived", b.name));
    a.send("still here");
    let echo = format!("{}: still here", a.name);
    expect_alive(&mut server, &mut a, &echo);
    server.terminate();
    expect_alive(&mut server, &mut a, "Server is shutting down");
    a.expect_eof();
    let status = server.wait();
    assert_eq!(status.code(), Some(0), "chatd exit status {status}");
}

/// Issue point 3. PROTOCOL.md "Running": "SIGHUP reloads the TLS
/// certificate and key, and is otherwise ignored". Before the fix SIGHUP's
/// default action killed chatd. Two of them, so a second one is not taken
/// for the "second signal exits at once" rule either.
#[test]
fn sighup_leaves_the_server_running() {
    let _serial = one_at_a_time();
    let mut server = RealServer::start(&[]);
    let mut a = Client::join(server.addr);
    let mut b = Client::join(server.addr);
    a.skip_until(&format!("{} has arrived", b.name));
    for round in 0..2 {
        server.signal(libc::SIGHUP);
        // The signal is pending before the line is sent: a server that
        // dies of it cannot process the line first.
        a.send(&format!("after hup {round}"));
        expect_alive(
            &mut server,
            &mut b,
            &format!("{}: after hup {round}", a.name),
        );
    }
    assert!(server.exited().is_none(), "chatd is still running");
    server.terminate();
    for client in [&mut a, &mut b] {
        client.skip_until("Server is shutting down");
        client.expect_eof();
    }
    let status = server.wait();
    assert_eq!(status.code(), Some(0), "chatd exit status {status}");
}

// ---------------------------------------------------------------------------
// Point 4: `who` in a big room
// ---------------------------------------------------------------------------

/// Sends `who` and returns the user count of the reply (reading it all).
fn who(user: &mut LineStream) -> usize {
    user.send("who");
    let count = loop {
        if let Some(count) = who_header(&user.line()) {
            break count;
        }
    };
    for _ in 0..count {
        user.line();
    }
    count
}

/// A crowd of `n` idle users, and a user who has seen them all in `who`.
fn crowded_room(server: &RealServer, n: usize) -> (Vec<TcpStream>, LineStream) {
    let crowd = idle_crowd(server.addr, n);
    let mut counter = LineStream::join(server.addr, None);
    let count = who(&mut counter);
    assert_eq!(count, n + 1, "the crowd and the counter are in the room");
    (crowd, counter)
}

/// The `q` quantile of `samples` (sorted in place).
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// Issue point 4, the rule itself. PROTOCOL.md "Running", `--flood-rate` /
/// `--flood-burst`, v2: "a reply of N lines (`who`, ...) takes N/100
/// tokens, at least 1, the bucket may go into debt, and the user's next
/// lines wait until it is paid back". In a room of 2,000 a `who` reply is
/// about 2,000 lines, 20 tokens: the full bucket (40) and one second of
/// refill (20) pay for 3 replies and one more may start on credit, so of
/// 40 `who`s sent at once at most 4 are answered in the first second
/// (before the fix: all 40, within 40–60 ms). The others wait; they are
/// not dropped: a 4th reply comes within `READ_TIMEOUT`.
#[test]
fn who_replies_pay_for_their_length() {
    let _serial = one_at_a_time();
    const ROOM: usize = 2000;
    const ASKED: usize = 40;
    raise_nofile(ROOM + 100);
    let server = RealServer::start(&[]);
    let (_crowd, _counter) = crowded_room(&server, ROOM);
    // A large receive buffer: the spammer must not be cut as too slow.
    let mut spammer = LineStream::join(server.addr, Some(8 << 20));
    let began = Instant::now();
    (&spammer.stream)
        .write_all("who\n".repeat(ASKED).as_bytes())
        .expect("send");
    let mut count_replies_until = |deadline: Instant, enough: usize, replies: &mut usize| {
        spammer.deadline = Some(deadline);
        while *replies < enough {
            match spammer.next_line() {
                Ok(line) => *replies += usize::from(who_header(&line).is_some()),
                Err(End::Stopped) => return,
                Err(end) => panic!("the spammer's stream ended: {end:?} after {replies} replies"),
            }
        }
    };
    let mut replies = 0;
    count_replies_until(began + Duration::from_secs(1), ASKED, &mut replies);
    let first_second = replies;
    count_replies_until(Instant::now() + READ_TIMEOUT, 4, &mut replies);
    let fourth = began.elapsed();
    eprintln!(
        "who ×{ASKED} in a room of {ROOM}: {first_second} replies in the first second, {replies} after {fourth:?}"
    );
    assert!(
        first_second <= 4,
        "{first_second} of {ASKED} `who` replies (about 20 tokens each) in the first second; \
         a bucket of 40 refilled at 20/s pays for at most 4"
    );
    assert!(
        replies >= 4,
        "only {replies} replies after {fourth:?}: the waiting `who`s must be answered later"
    );
}

/// Probes the server's round trip for `duration`: every 10 ms one of
/// `probers` (in turn, so each sends 10 lines/s, well inside the flood
/// limit) sends a private message to itself and waits for its `[to NAME]`
/// echo. A probe that gets no answer within `READ_TIMEOUT` ends the phase.
fn probe_for(probers: &mut [LineStream], duration: Duration, samples: &mut Vec<Duration>) {
    let end = Instant::now() + duration;
    let mut next = Instant::now();
    let mut k = 0;
    while Instant::now() < end {
        let now = Instant::now();
        if now < next {
            thread::sleep(next - now);
        }
        next += Duration::from_millis(10);
        let prober = &mut probers[k % probers.len()];
        let tag = format!("probe {k}");
        let echo = format!("[to {}] {tag}", prober.name);
        let sent = Instant::now();
        prober.send(&format!("/msg {} {tag}", prober.name));
        let answered = prober.skip_until(&echo);
        samples.push(sent.elapsed());
        if answered.is_err() {
            return;
        }
        k += 1;
    }
}

/// Issue point 4. PROTOCOL.md "Running", `--flood-rate` / `--flood-burst`,
/// v2: a reply of N lines takes N/100 tokens. 50 users send `who` at the
/// allowed 20 lines/s in a room of 10,000 (the figures: before the
/// fix that is 10 million reply lines a second, and an innocent user's
/// round trip went from p99 1.6 ms to 140 ms; here, with the debug build,
/// from under 5 ms to 2.4 to 7.3 s). With the rule each spammer gets one reply per 5 s, 100,000
/// lines a second in all, and an innocent user must hardly notice.
///
/// A room of 2,000 would be lighter, but before the fix its 2 million
/// lines a second did not saturate the server here (p99 6.8 ms against
/// 3.9 ms quiet), so it would not show the issue; 10,000 does, by orders
/// of magnitude.
///
/// The spammers start 20 ms apart, as independent users do; 50 `who`s that
/// fall due in the same millisecond would make anyone wait for all 50
/// replies whatever the rate rule says.
///
/// The margin: the spam phase's p99 may be 2 × the quiet p99, or the quiet
/// p99 + 2 W + 5 ms, whichever is larger. W is the time one `who` reply
/// takes in this room on this machine (measured here, the median of three;
/// 2.4 to 6 ms for the debug build on a busy 2-core box). The rule bounds how
/// often a reply is built, not how long one takes (a reply is queued whole),
/// so a probe may wait behind the reply in progress and, when two spammers'
/// tokens fall due together, one more: 2 W. The 5 ms absorb scheduling
/// noise on a loaded 2-core machine, where the probe, 50 draining threads
/// and the server share the cores. Before the fix the p99 is hundreds of W.
#[test]
fn who_spam_does_not_slow_an_innocent_user() {
    let _serial = one_at_a_time();
    const ROOM: usize = 10_000;
    const SPAMMERS: usize = 50;
    const PROBERS: usize = 10;
    raise_nofile(ROOM + 200);
    let server = RealServer::start(&[]);
    let (_crowd, _counter) = crowded_room(&server, ROOM);
    // W: three users ask once each (one reply, then they are in debt).
    let mut w: Vec<Duration> = (0..3)
        .map(|_| {
            let mut asker = LineStream::join(server.addr, None);
            let asked = Instant::now();
            who(&mut asker);
            asked.elapsed()
        })
        .collect();
    let w = quantile(&mut w, 0.5);
    let mut probers: Vec<LineStream> = (0..PROBERS)
        .map(|_| LineStream::join(server.addr, None))
        .collect();
    let spammers: Vec<LineStream> = (0..SPAMMERS)
        .map(|_| LineStream::join(server.addr, None))
        .collect();
    // Spammers read everything they get, flat out, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let drains: Vec<_> = spammers
        .iter()
        .map(|spammer| {
            let mut stream = spammer.writer();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let slice = Some(Duration::from_millis(100));
                stream.set_read_timeout(slice).unwrap();
                let mut chunk = vec![0u8; 1 << 16];
                let mut total = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match stream.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock) => {}
                        Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
                total
            })
        })
        .collect();

    let mut quiet = Vec::new();
    probe_for(&mut probers, Duration::from_secs(3), &mut quiet);

    let spamming = Arc::clone(&stop);
    let mut writers: Vec<TcpStream> = spammers.iter().map(LineStream::writer).collect();
    let spam = thread::spawn(move || {
        let began = Instant::now();
        let mut sent = vec![0u64; writers.len()];
        while !spamming.load(Ordering::Relaxed) {
            let elapsed = began.elapsed();
            for (i, writer) in writers.iter_mut().enumerate() {
                let start = Duration::from_millis(20 * i as u64);
                if elapsed < start {
                    continue;
                }
                // 20 lines/s from its start: the allowed rate, no faster.
                let due = (elapsed - start).as_millis() as u64 / 50 + 1;
                while sent[i] < due {
                    let _ = writer.write_all(b"who\n");
                    sent[i] += 1;
                }
            }
            thread::sleep(Duration::from_millis(5));
        }
        sent.iter().sum::<u64>()
    });
    let mut loud = Vec::new();
    probe_for(&mut probers, Duration::from_secs(5), &mut loud);
    stop.store(true, Ordering::Relaxed);
    let whos = spam.join().expect("spam thread");
    for spammer in &spammers {
        let _ = spammer.stream.shutdown(Shutdown::Both);
    }
    let replied: u64 = drains.into_iter().map(|d| d.join().unwrap()).sum();

    let quiet_p99 = quantile(&mut quiet, 0.99);
    let loud_p99 = quantile(&mut loud, 0.99);
    let limit = (2 * quiet_p99).max(quiet_p99 + 2 * w + Duration::from_millis(5));
    let figures = format!(
        "room {ROOM}, W = {w:?}; quiet: {} probes, p50 {:?}, p99 {quiet_p99:?}; \
         spam: {} probes, p50 {:?}, p99 {loud_p99:?}, max {:?}; \
         {whos} `who`s sent, {:.1} MB of replies read",
        quiet.len(),
        quantile(&mut quiet, 0.5),
        loud.len(),
        quantile(&mut loud, 0.5),
        quantile(&mut loud, 1.0),
        replied as f64 / 1e6
    );
    eprintln!("{figures}");
    assert!(
        loud_p99 <= limit,
        "an innocent user's p99 under `who` spam is {loud_p99:?}, over {limit:?}: {figures}"
    );
}

// ---------------------------------------------------------------------------
// Point 5: connection churn
// ---------------------------------------------------------------------------

/// Issue point 5. README.md "What a connection costs" and PROTOCOL.md
/// "Idle timeout": the idle wheel must not keep what closed connections
/// left in it. With `--idle-timeout 3600`, each connection that closes
/// left a 24-byte entry in the wheel for an hour, so churn grew memory
/// without bound. Connections open and close one after the other (greeted,
/// then closed) for up to 8 s or 100,000 connections; RSS may grow by
/// 256 KiB (allocator noise) plus 4 bytes per connection.
///
/// Measured before the fix (debug build, busy 2-core machine): 52,598 to
/// 88,598 connections in 10 s grew RSS by 1.6 to 2.4 MiB, about 29 bytes a
/// connection; with `--idle-timeout 0` (no wheel entries, what the fix
/// should look like) 43,670 to 100,000 grew it by 12 to 40 KiB. The test
/// tells the two apart once more than about 13,000 connections fit in the
/// 8 s; fewer on a very slow machine would make it pass without proving
/// anything, so the count is in the failure message and the log.
#[test]
fn connection_churn_does_not_grow_memory() {
    let _serial = one_at_a_time();
    let server = RealServer::start(&["--idle-timeout", "3600"]);
    let pid = server.pid();
    let churn = |most: usize, limit: Duration| {
        let began = Instant::now();
        let mut done = 0;
        while done < most && began.elapsed() < limit {
            drop(connect_greeted(server.addr));
            done += 1;
        }
        (done, began.elapsed())
    };
    // Warm up: the slab, the allocator's arenas and the log's buffers
    // reach their working size before the baseline is taken.
    churn(2000, Duration::from_secs(2));
    let before = rss_bytes(pid);
    let (connections, took) = churn(100_000, Duration::from_secs(8));
    let after = rss_bytes(pid);
    let growth = after.saturating_sub(before);
    let allowed = (256 << 10) + 4 * connections as u64;
    let figures = format!(
        "{connections} connections in {took:?}: RSS {:.2} MiB -> {:.2} MiB, \
         +{} KiB ({:.1} bytes a connection), allowed +{} KiB",
        mib(before),
        mib(after),
        growth >> 10,
        growth as f64 / connections as f64,
        allowed >> 10
    );
    eprintln!("{figures}");
    assert!(growth <= allowed, "churn grew memory: {figures}");
}
