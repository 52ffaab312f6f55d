//! `chatstress soak`: N clients (default 1,000) chat, rename, leave and
//! come back at random for a bounded time against a chatd started with
//! `--flood-rate 0 --idle-timeout 0`, all driven from one mio loop.
//!
//! Every chat line is `s<uid>#<seq>`: `uid` names one connection (a client
//! that comes back is a new uid), `seq` counts its lines. Each receiver
//! checks, per sender, that lines come exactly once and in order with no
//! gap, and at its first line from a sender that it missed nothing it
//! should have had. A receiver that leaves gracefully first sends a marker
//! line and reads until its echo; then every line a sender had seen echoed
//! before that must have reached it, unless it was written before the
//! receiver joined. Times are taken in this one thread, so "before" is
//! exact.
//!
//! At the end: the server is alive, nobody was cut off, `who` lists nobody
//! left over, and its RSS is back near where it started.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::SockRef;

use super::rng::Rng;
use super::{Checks, Outcome, Violations, own_name, print_server_cost, start_chatd, write_some};
use crate::chatd::{Chatd, UNTHROTTLED};
use crate::line_client::LineClient;
use crate::lines::HistorySkip;
use crate::procstat;
use crate::report::mib;

/// `chatstress soak`'s numbers.
#[derive(Debug)]
pub struct Options {
    /// Clients (each connects, leaves and comes back many times).
    pub clients: usize,
    /// How long clients keep coming back; then all leave.
    pub duration: Duration,
    /// Mean time between one client's chat lines.
    pub chat_every: Duration,
    /// Mean time between one client's renames.
    pub rename_every: Duration,
    /// Mean connection lifetime before leaving.
    pub lifetime: Duration,
    /// Mean time offline before coming back.
    pub offline: Duration,
    /// Seed of the random schedule, so a failing run can be repeated.
    pub seed: u64,
}

/// What we know of every line one connection sent.
#[derive(Default)]
struct SenderLog {
    /// When each line's last byte was written.
    sent_at: Vec<Instant>,
    /// When the sender read back its own echo of each line (in order).
    echo_at: Vec<Instant>,
}

/// How a graceful leave ends, once the marker line came back.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Close the socket.
    Close,
    /// Send `/quit` and wait for the server to close.
    Quit,
}

/// Where one client slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Not connected; comes back at `until` (unless the run is ending).
    Offline { until: Instant },
    /// Connected, waiting for `You are NAME`.
    Greeting,
    /// Chatting and renaming.
    Active,
    /// Sent its marker line (`marker` is its seq) at `started`; leaves by
    /// `mode` when the echo arrives.
    Leaving {
        marker: u32,
        started: Instant,
        mode: Mode,
    },
    /// Sent `/quit`; waits for the server to close.
    Quitting,
}

/// One client slot; each connection in it gets a new uid.
struct Client {
    state: State,
    stream: Option<TcpStream>,
    /// This connection's id, in every chat line it sends.
    uid: u32,
    /// Its current name (its address until a rename succeeds).
    name: String,
    /// When its greeting arrived.
    joined_at: Instant,
    /// Received bytes not yet split into lines.
    rbuf: Vec<u8>,
    /// Bytes not yet written.
    wbuf: Vec<u8>,
    /// (end offset in wbuf, seq) of chat lines not yet fully written.
    pending_lines: Vec<(usize, u32)>,
    /// Seq of its next chat line.
    next_seq: u32,
    /// When it chats next.
    next_chat: Instant,
    /// When it renames next.
    next_rename: Instant,
    /// When it leaves.
    leave_at: Instant,
    /// A `/nick` was sent and its answer has not come yet.
    rename_pending: bool,
    /// Renames sent so far (the next name is `u<uid>r<renames>`).
    renames: u32,
    /// Skips history the server replays on joining, which is not traffic.
    history: HistorySkip,
    /// Sender uid -> last seq received.
    last_seen: HashMap<u32, u32>,
    /// Uids connected when this client joined, plus the uid counter then.
    peers_at_join: Vec<u32>,
    uid_counter_at_join: u32,
}

/// What the run did and what went wrong.
#[derive(Default)]
struct Stats {
    connects: u64,
    chats: u64,
    delivered: u64,
    renames: u64,
    leaves_graceful: u64,
    leaves_quit: u64,
    leaves_abrupt: u64,
    verified_leaves: u64,
    violations: Violations,
    unexpected_closes: u64,
}

impl Stats {
    /// Counts a broken invariant, keeping the first ten for the report.
    fn violation(&mut self, what: String) {
        self.violations.record(what, 10);
    }
}

/// The whole run: every client slot, every connection's send log, one poll.
struct Soak {
    addr: SocketAddr,
    poll: Poll,
    clients: Vec<Client>,
    logs: Vec<SenderLog>,
    live: HashMap<u32, usize>,
    rng: Rng,
    opts: Options,
    ending: bool,
    stats: Stats,
}

/// Runs the scenario against a fresh chatd at `chatd`.
pub fn run(chatd: &Path, opts: Options) -> Outcome {
    procstat::raise_nofile_limit();
    println!(
        "soak: {} clients for {:.0} s; per client: a line every {:?}, a rename every {:?}, \
         lifetime {:?}, offline {:?} (means); seed {}",
        opts.clients,
        opts.duration.as_secs_f64(),
        opts.chat_every,
        opts.rename_every,
        opts.lifetime,
        opts.offline,
        opts.seed
    );
    let mut server = start_chatd(chatd, &UNTHROTTLED)?;
    std::thread::sleep(Duration::from_millis(200));
    let base = server.sample();
    let started = Instant::now();
    let mut soak = Soak::new(server.addr, opts).map_err(|e| e.to_string())?;
    let peak = soak
        .drive(&mut server, started)
        .map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();

    // Nobody left behind: a fresh client must be alone in `who`.
    let mut alone = false;
    let mut listed = Vec::new();
    let mut checker =
        LineClient::join(server.addr, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    for _ in 0..100 {
        listed = checker.who().map_err(|e| e.to_string())?;
        if listed.len() == 1 {
            alone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(checker);
    // Let a tick release idle buffers before the final reading.
    std::thread::sleep(Duration::from_millis(500));
    let end = server.sample();
    let s = &soak.stats;
    println!(
        "  {:.0} s: {} connections, {} chat lines sent, {} delivered and verified, {} renames",
        elapsed.as_secs_f64(),
        s.connects,
        s.chats,
        s.delivered,
        s.renames
    );
    println!(
        "  leaves: {} closed, {} /quit, {} reset; {} graceful leaves fully verified",
        s.leaves_graceful, s.leaves_quit, s.leaves_abrupt, s.verified_leaves
    );
    print_server_cost(&base, peak, &end);
    s.violations.print();
    let mut checks = Checks::default();
    checks.check(
        s.violations.count == 0,
        format!("{} consistency violations", s.violations.count),
    );
    checks.check(
        s.unexpected_closes == 0,
        format!("{} clients cut off unexpectedly", s.unexpected_closes),
    );
    checks.check(server.too_slow_count() == 0, "nobody cut as too slow");
    checks.check(
        alone,
        format!("`who` lists nobody left behind ({listed:?})"),
    );
    checks.check(
        end.rss <= base.rss + (16 << 20),
        format!(
            "RSS back near its start: {} <= {} + 16 MiB",
            mib(end.rss),
            mib(base.rss)
        ),
    );
    checks.server_healthy(&mut server);
    checks.stop_server(server)
}

impl Soak {
    fn new(addr: SocketAddr, opts: Options) -> io::Result<Soak> {
        let now = Instant::now();
        let mut rng = Rng::new(opts.seed);
        let clients = (0..opts.clients)
            .map(|_| Client {
                // Stagger the first connections over the first second.
                state: State::Offline {
                    until: now + Duration::from_millis(rng.below(1000)),
                },
                stream: None,
                uid: 0,
                name: String::new(),
                joined_at: now,
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                pending_lines: Vec::new(),
                next_seq: 0,
                next_chat: now,
                next_rename: now,
                rename_pending: false,
                renames: 0,
                history: HistorySkip::default(),
                leave_at: now,
                last_seen: HashMap::new(),
                peers_at_join: Vec::new(),
                uid_counter_at_join: 0,
            })
            .collect();
        Ok(Soak {
            addr,
            poll: Poll::new()?,
            clients,
            logs: Vec::new(),
            live: HashMap::new(),
            rng,
            opts,
            ending: false,
            stats: Stats::default(),
        })
    }

    /// Runs until the duration is over and every client has left; returns
    /// the peak server RSS seen.
    fn drive(&mut self, server: &mut Chatd, started: Instant) -> io::Result<u64> {
        let mut events = Events::with_capacity(4096);
        let end = started + self.opts.duration;
        let hard_end = end + Duration::from_secs(60);
        let mut peak = 0;
        let mut next_sample = started;
        let mut next_report = started + Duration::from_secs(10);
        loop {
            self.poll
                .poll(&mut events, Some(Duration::from_millis(5)))?;
            let now = Instant::now();
            for event in events.iter() {
                let i = event.token().0;
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.on_readable(i);
                }
                if event.is_writable() {
                    self.flush(i);
                }
            }
            if now >= next_sample {
                peak = peak.max(server.sample().rss);
                next_sample = now + Duration::from_millis(100);
            }
            if now >= next_report {
                let online = self.live.len();
                println!(
                    "  t={:>4.0}s online {online:>5}, lines {:>8}, delivered {:>10}, violations {}, server RSS {}",
                    now.duration_since(started).as_secs_f64(),
                    self.stats.chats,
                    self.stats.delivered,
                    self.stats.violations.count,
                    mib(server.sample().rss)
                );
                next_report = now + Duration::from_secs(10);
                if !server.alive() {
                    return Err(io::Error::other("chatd died"));
                }
            }
            if !self.ending && now >= end {
                self.ending = true;
            }
            let mut busy = false;
            for i in 0..self.clients.len() {
                self.act(i, now);
                busy |= !matches!(self.clients[i].state, State::Offline { .. });
            }
            if self.ending && !busy {
                return Ok(peak);
            }
            if now >= hard_end {
                let stuck = self
                    .clients
                    .iter()
                    .filter(|c| !matches!(c.state, State::Offline { .. }))
                    .count();
                self.stats
                    .violation(format!("{stuck} clients still not done 60 s after the end"));
                return Ok(peak);
            }
        }
    }

    /// Whatever is due for client `i`.
    fn act(&mut self, i: usize, now: Instant) {
        match self.clients[i].state {
            State::Offline { until } if !self.ending && now >= until => self.connect(i, now),
            State::Active => {
                let c = &self.clients[i];
                if self.ending || now >= c.leave_at {
                    self.leave(i, now);
                } else if now >= c.next_chat {
                    self.chat(i);
                    let mean = self.opts.chat_every;
                    self.clients[i].next_chat = now + self.rng.exp(mean);
                } else if now >= c.next_rename && !c.rename_pending {
                    let c = &mut self.clients[i];
                    c.renames += 1;
                    let line = format!("/nick u{}r{}\n", c.uid, c.renames);
                    c.rename_pending = true;
                    c.wbuf.extend_from_slice(line.as_bytes());
                    let mean = self.opts.rename_every;
                    self.clients[i].next_rename = now + self.rng.exp(mean);
                    self.flush(i);
                }
            }
            _ => {}
        }
    }

    fn connect(&mut self, i: usize, now: Instant) {
        let mut stream = match TcpStream::connect(self.addr) {
            Ok(s) => s,
            Err(e) => {
                self.stats.violation(format!("connect failed: {e}"));
                self.clients[i].state = State::Offline {
                    until: now + Duration::from_secs(1),
                };
                return;
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.stats.violation(format!("register failed: {e}"));
            return;
        }
        let uid = self.logs.len() as u32;
        self.logs.push(SenderLog::default());
        self.live.insert(uid, i);
        self.stats.connects += 1;
        let c = &mut self.clients[i];
        c.stream = Some(stream);
        c.uid = uid;
        c.state = State::Greeting;
        c.rbuf.clear();
        c.wbuf.clear();
        c.pending_lines.clear();
        c.next_seq = 0;
        c.rename_pending = false;
        c.renames = 0;
        c.history = HistorySkip::default();
        c.last_seen.clear();
    }

    fn chat(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let seq = c.next_seq;
        c.next_seq += 1;
        c.wbuf
            .extend_from_slice(format!("s{}#{seq}\n", c.uid).as_bytes());
        c.pending_lines.push((c.wbuf.len(), seq));
        self.stats.chats += 1;
        self.flush(i);
    }

    fn leave(&mut self, i: usize, now: Instant) {
        let roll = self.rng.below(10);
        if roll == 0 && !self.ending {
            // Abrupt: reset, no marker, no final check.
            if let Some(stream) = &self.clients[i].stream {
                let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
            }
            self.stats.leaves_abrupt += 1;
            self.close(i, now);
            return;
        }
        let mode = if roll < 4 { Mode::Quit } else { Mode::Close };
        let marker = self.clients[i].next_seq;
        self.chat(i);
        self.clients[i].state = State::Leaving {
            marker,
            started: now,
            mode,
        };
    }

    fn close(&mut self, i: usize, now: Instant) {
        let c = &mut self.clients[i];
        if let Some(mut stream) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        self.live.remove(&c.uid);
        let wait = self.rng.exp(self.opts.offline);
        self.clients[i].state = State::Offline { until: now + wait };
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.clients[i];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        let written = write_some(stream, &c.wbuf);
        if written == 0 {
            return;
        }
        let now = Instant::now();
        c.wbuf.drain(..written);
        let uid = c.uid as usize;
        let mut done = 0;
        for &(end, seq) in &c.pending_lines {
            if end > written {
                break;
            }
            let log = &mut self.logs[uid];
            debug_assert_eq!(log.sent_at.len(), seq as usize);
            log.sent_at.push(now);
            done += 1;
        }
        c.pending_lines.drain(..done);
        for (end, _) in &mut c.pending_lines {
            *end -= written;
        }
    }

    fn on_readable(&mut self, i: usize) {
        let mut eof = false;
        {
            let c = &mut self.clients[i];
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            let mut chunk = [0u8; 16384];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => c.rbuf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
        }
        let buf = std::mem::take(&mut self.clients[i].rbuf);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&buf[start..start + nl]).into_owned();
            start += nl + 1;
            self.on_line(i, &line);
            if self.clients[i].stream.is_none() {
                return;
            }
        }
        self.clients[i].rbuf = buf[start..].to_vec();
        if eof {
            let now = Instant::now();
            match self.clients[i].state {
                State::Quitting => {}
                state => {
                    self.stats.unexpected_closes += 1;
                    self.stats.violation(format!(
                        "uid {} closed by the server in state {state:?}",
                        self.clients[i].uid
                    ));
                }
            }
            self.close(i, now);
        }
    }

    fn on_line(&mut self, i: usize, line: &str) {
        let now = Instant::now();
        let state = self.clients[i].state;
        if state == State::Greeting {
            let c = &mut self.clients[i];
            let name = own_name(c.stream.as_ref());
            // PROTOCOL.md: "connect | the newcomer | `You are NAME`, then
            // the lobby's history", the name being "its peer address as
            // printed by Rust's `SocketAddr` `Display`".
            if line != format!("You are {name}") {
                self.stats
                    .violation(format!("bad greeting {line:?} for {name}"));
            }
            c.name = name;
            c.joined_at = now;
            c.state = State::Active;
            c.peers_at_join = self.live.keys().copied().collect();
            c.uid_counter_at_join = self.logs.len() as u32;
            c.next_chat = now + self.rng.exp(self.opts.chat_every);
            c.next_rename = now + self.rng.exp(self.opts.rename_every);
            c.leave_at = now + self.rng.exp(self.opts.lifetime);
            return;
        }
        if state == State::Quitting || self.clients[i].history.is_history(line.as_bytes()) {
            return;
        }
        // PROTOCOL.md, `/nick NEW`: "broadcast to the room `OLD is now known
        // as NEW`; or `Name NEW is taken`"; names here are unique by uid.
        if let Some((_, rest)) = line.split_once(" is now known as ") {
            let c = &mut self.clients[i];
            if rest == format!("u{}r{}", c.uid, c.renames) && c.rename_pending {
                c.rename_pending = false;
                c.name = rest.to_string();
                self.stats.renames += 1;
            }
            return;
        }
        if line.starts_with("Name ") && line.ends_with(" is taken") {
            self.stats.violation(format!("unexpected {line:?}"));
            self.clients[i].rename_pending = false;
            return;
        }
        // A chat line is `NAME: TEXT`; the text is `s<uid>#<seq>`.
        let Some((_, text)) = line.rsplit_once(": ") else {
            return;
        };
        let Some((uid, seq)) = text
            .strip_prefix('s')
            .and_then(|t| t.split_once('#'))
            .and_then(|(u, s)| Some((u.parse::<u32>().ok()?, s.parse::<u32>().ok()?)))
        else {
            return;
        };
        self.stats.delivered += 1;
        let me = self.clients[i].uid;
        if uid == me {
            self.logs[me as usize].echo_at.push(now);
        }
        let joined_at = self.clients[i].joined_at;
        match self.clients[i].last_seen.get(&uid).copied() {
            Some(last) if seq != last + 1 => {
                let what = if seq <= last {
                    "duplicate or out of order"
                } else {
                    "gap"
                };
                self.stats
                    .violation(format!("uid {me}: {what}: s{uid}#{seq} after #{last}"));
            }
            Some(_) => {}
            None => {
                if seq > 0
                    && let Some(&prev) = self.logs[uid as usize].sent_at.get(seq as usize - 1)
                    && prev > joined_at
                {
                    self.stats.violation(format!(
                        "uid {me}: first line from {uid} is #{seq}, but #{} was sent after it joined",
                        seq - 1
                    ));
                }
            }
        }
        self.clients[i].last_seen.insert(uid, seq);
        if let State::Leaving {
            marker,
            started,
            mode,
        } = state
            && uid == me
            && seq == marker
        {
            self.verify_leave(i, started);
            match mode {
                Mode::Close => {
                    self.stats.leaves_graceful += 1;
                    self.close(i, now);
                }
                Mode::Quit => {
                    self.stats.leaves_quit += 1;
                    self.clients[i].wbuf.extend_from_slice(b"/quit soak\n");
                    self.clients[i].state = State::Quitting;
                    self.flush(i);
                }
            }
        }
    }

    /// Every line a sender saw echoed before `started` (and wrote after
    /// this client joined) must have reached this client.
    fn verify_leave(&mut self, i: usize, started: Instant) {
        let c = &self.clients[i];
        let mut candidates = c.peers_at_join.clone();
        candidates.extend(c.uid_counter_at_join..self.logs.len() as u32);
        let mut missing = Vec::new();
        for uid in candidates {
            let log = &self.logs[uid as usize];
            let echoed = log.echo_at.partition_point(|&t| t < started);
            if echoed == 0 {
                continue;
            }
            let k = echoed - 1;
            if log.sent_at.get(k).is_none_or(|&t| t <= c.joined_at) {
                continue;
            }
            let got = c.last_seen.get(&uid).copied();
            if got.is_none_or(|g| (g as usize) < k) {
                missing.push(format!("s{uid}#{k} (last got {got:?})"));
            }
        }
        let me = c.uid;
        if missing.is_empty() {
            self.stats.verified_leaves += 1;
        } else {
            self.stats.violation(format!(
                "uid {me} left without {} line(s): {}",
                missing.len(),
                missing
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
}
