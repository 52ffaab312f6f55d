//! `chatstress rooms`: N users (default 10,000) spread over R rooms (100,
//! `/join r0` .. `/join r99`) move to a random other room every few seconds
//! and chat, for a bounded time, against a chatd started with `--flood-rate
//! 0 --idle-timeout 0`, all from one mio loop. Every chat line is
//! `c<client>#<seq>`, unique in the run.
//!
//! # What a receiver must get, exactly
//!
//! chatd handles everything on one thread, so it processes a user's lines in
//! the order they were sent and a room's events in one order. A chat line's
//! room is therefore known when it is sent: the room of the sender's last
//! `/join` before it (all joins succeed here). A receiver's *stay* in a room
//! runs from its `You are now in #ROOM` (the lobby's from `You are NAME`) to
//! its next one, and every line it gets between the two belongs to that
//! stay: PROTOCOL.md, "`/join ROOM` ok | the user | `You are now in #ROOM`,
//! then its history", written when the join is processed, so it is the
//! cut. (The history block after it is replayed earlier traffic and is
//! skipped.) For each line received during a stay in room R:
//!
//! 1. its room is R ("no line from another room");
//! 2. it comes after every line already received from the same sender
//!    ("once", and "in order per sender", over the whole run);
//! 3. two lines received from one sender in one stay have all of that
//!    sender's lines in R between them received too (exact: both were
//!    processed during the stay, so everything between them was);
//! 4. it was not processed before the stay began, as far as the tool can
//!    tell (see below);
//! 5. and when the stay ends, every line processed in R during it, as far
//!    as the tool can tell, was received (the first line from a sender in a
//!    stay is checked backwards against the same bound).
//!
//! "As far as the tool can tell" is exact too, but only for the lines it
//! can place: the tool is one thread, so it stamps every read and write
//! with a counter taken right after the system call, and their order is
//! the order in which they happened. A line whose last byte was written
//! after the receiver read its `You are now in` was processed after the
//! join; a line whose sender read its echo before the receiver wrote its
//! next `/join` was processed before the move. A line processed in R
//! between both points must be received; a line whose sender saw the echo
//! before the receiver even wrote its `/join` must not be. Lines sent while
//! the receiver's join was in flight could fall on either side of the cut
//! and may or may not arrive (when they do, 1–3 still hold).
//!
//! At the end, chatting and moving stop, every echo is awaited, the room
//! goes quiet for 1 s, and every stay still open is closed with every line
//! due. Then `/rooms` and one `who` per occupied room must agree with the
//! clients' own view: the rooms and their counts (summing to the clients),
//! and each room's `who` lists exactly the users that think they are in it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::rng::Rng;
use super::{Checks, Outcome, Violations, own_name, print_server_cost, start_chatd, write_some};
use crate::chatd::{Chatd, UNTHROTTLED};
use crate::line_client::who_header;
use crate::lines::HistorySkip;
use crate::procstat;
use crate::report::{mib, si};

/// Connects on the way at once (connecting or awaiting the greeting).
const CONNECTS_IN_FLIGHT: usize = 256;
/// How long the end waits for every echo and join reply.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Silence that ends the run (everything queued has arrived).
const QUIET: Duration = Duration::from_secs(1);
/// How long the `/rooms` and `who` replies may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// A stamp not taken yet (an echo not read yet).
const NEVER: u64 = u64::MAX;
/// Violations printed in full.
const SAMPLES: usize = 12;

/// `chatstress rooms`'s numbers.
#[derive(Debug)]
pub struct Options {
    /// Users, each one connection for the whole run.
    pub clients: usize,
    /// Rooms `r0` .. `r<rooms-1>` (at most 1000, chatd's `--max-rooms`).
    pub rooms: usize,
    /// How long users chat and move.
    pub duration: Duration,
    /// Mean time between one user's chat lines.
    pub chat_every: Duration,
    /// Mean time between one user's moves.
    pub move_every: Duration,
    /// Seed of the random schedule.
    pub seed: u64,
}

/// A hash for small integer keys (client numbers): one multiply, where
/// SipHash would cost more than the rest of a delivery's check.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// One chat line of the run.
#[derive(Debug, Clone, Copy)]
struct LineRec {
    /// The room it was said in (the sender's last `/join` before it).
    room: u16,
    /// Stamp of the write that completed it (0: not yet).
    written: u64,
    /// Stamp of the read that brought its echo to its sender.
    echoed: u64,
}

/// What a stretch of a client's output buffer is.
#[derive(Debug, Clone, Copy)]
enum Out {
    Chat(u32),
    Join,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Not connected yet.
    Waiting,
    /// Connect issued; `You are NAME` not read yet.
    Greeting,
    /// In the run.
    Active,
    /// Cut off or failed.
    Closed,
}

/// A question asked at the end.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Query {
    Rooms,
    Who(u16),
}

/// A reply being read: the header, then `expected` lines.
#[derive(Debug)]
struct Reply {
    query: Query,
    header: String,
    expected: usize,
    lines: Vec<String>,
}

/// One user.
struct Client {
    stream: Option<TcpStream>,
    state: State,
    name: String,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// (end offset in `wbuf`, what ends there) of lines not fully written.
    pending: VecDeque<(usize, Out)>,
    next_chat: Instant,
    next_move: Instant,
    /// The room of the last `/join` queued: the room of its next line.
    target: u16,
    /// A `/join` sent and not answered: (room, stamp of its write; 0 until
    /// it is fully written).
    join_out: Option<(u16, u64)>,
    /// Its room, by the replies it read.
    room: u16,
    /// Stamps of the current stay's start: the write that completed the
    /// `/join` (the connect, for the lobby) and the read of its reply.
    entered_w: u64,
    entered_r: u64,
    /// Skips replayed history.
    history: HistorySkip,
    /// Sender -> last seq received, over the whole run.
    last_from: IdMap<u32>,
    /// Sender -> (first, last) seq received during the current stay.
    in_stay: IdMap<(u32, u32)>,
    /// Questions asked at the end, and the reply being read.
    queries: VecDeque<Query>,
    reply: Option<Reply>,
}

impl Client {
    fn new(now: Instant, lobby: u16) -> Client {
        Client {
            stream: None,
            state: State::Waiting,
            name: String::new(),
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            pending: VecDeque::new(),
            next_chat: now,
            next_move: now,
            target: lobby,
            join_out: None,
            room: lobby,
            entered_w: 0,
            entered_r: 0,
            history: HistorySkip::default(),
            last_from: IdMap::default(),
            in_stay: IdMap::default(),
            queries: VecDeque::new(),
            reply: None,
        }
    }
}

/// Counters and broken invariants.
#[derive(Default)]
struct Stats {
    connects: u64,
    joins: u64,
    chats: u64,
    delivered: u64,
    /// Lines checked as due at the end of a stay.
    due_checked: u64,
    stays_closed: u64,
    unexpected_closes: u64,
    violations: Violations,
}

impl Stats {
    fn violation(&mut self, what: String) {
        self.violations.record(what, SAMPLES);
    }
}

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Connecting, chatting, moving.
    Running,
    /// Waiting for every echo and join reply.
    Draining {
        since: Instant,
    },
    /// Waiting for [`QUIET`] without a byte.
    Quieting,
    /// Asking `/rooms` and `who`.
    Querying {
        since: Instant,
    },
    Done,
}

/// The whole run.
struct Run {
    addr: SocketAddr,
    poll: Poll,
    opts: Options,
    rng: Rng,
    clients: Vec<Client>,
    /// Every chat line, by sender and seq.
    lines: Vec<Vec<LineRec>>,
    /// Each room's lines in the order their writes completed.
    room_log: Vec<Vec<(u32, u32)>>,
    /// The counter behind every stamp.
    clock: u64,
    /// Lines sent whose echo has not come back.
    unechoed: u64,
    /// Clients connected so far, and those on the way.
    opened: usize,
    in_flight: usize,
    last_read: Instant,
    answers: Vec<Reply>,
    stats: Stats,
}

/// Runs the scenario against a fresh chatd at `chatd`.
pub fn run(chatd: &Path, opts: Options) -> Outcome {
    procstat::raise_nofile_limit();
    if opts.rooms == 0 || opts.rooms > 1000 {
        return Err(format!("--rooms {} must be 1 to 1000", opts.rooms));
    }
    println!(
        "rooms: {} users in {} rooms for {:.0} s; per user: a line every {:?}, a move every {:?} \
         (means); seed {}",
        opts.clients,
        opts.rooms,
        opts.duration.as_secs_f64(),
        opts.chat_every,
        opts.move_every,
        opts.seed
    );
    let mut server = start_chatd(chatd, &UNTHROTTLED)?;
    std::thread::sleep(Duration::from_millis(200));
    let base = server.sample();
    let started = Instant::now();
    let mut run = Run::new(server.addr, opts).map_err(|e| e.to_string())?;
    let peak = run.drive(&mut server, started).map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_secs_f64();
    let end = server.sample();
    let (rooms_ok, who_ok, sum) = run.compare_answers();
    let s = &run.stats;
    println!(
        "  {elapsed:.0} s: {} users connected, {} moves, {} chat lines, {} deliveries checked \
         ({}/s), {} lines checked as due at {} stay ends",
        s.connects,
        s.joins,
        s.chats,
        s.delivered,
        si(s.delivered as f64 / elapsed.max(1e-9)),
        s.due_checked,
        s.stays_closed
    );
    print_server_cost(&base, peak, &end);
    run.stats.violations.print();
    let clients = run.opts.clients;
    let s = &run.stats;
    let mut checks = Checks::default();
    checks.check(
        s.connects == clients as u64,
        format!("{}/{clients} users connected", s.connects),
    );
    checks.check(
        s.violations.count == 0,
        format!("{} violations of the delivery rules", s.violations.count),
    );
    checks.check(
        s.unexpected_closes == 0,
        format!("{} users cut off", s.unexpected_closes),
    );
    checks.check(server.too_slow_count() == 0, "nobody cut as too slow");
    checks.check(
        rooms_ok,
        format!("/rooms agrees with the users' own view ({sum} users in all = {clients})"),
    );
    checks.check(who_ok, "each room's `who` lists exactly the users there");
    checks.server_healthy(&mut server);
    drop(run);
    checks.stop_server(server)
}

/// `r<N>`, or `lobby` for N = rooms.
fn room_name(id: u16, rooms: usize) -> String {
    if usize::from(id) == rooms {
        "lobby".into()
    } else {
        format!("r{id}")
    }
}

/// The room id of a name written by the server.
fn room_id(name: &str, rooms: usize) -> Option<u16> {
    if name == "lobby" {
        return u16::try_from(rooms).ok();
    }
    let n: u16 = name.strip_prefix('r')?.parse().ok()?;
    (usize::from(n) < rooms).then_some(n)
}

/// `(client, seq)` of a chat line `NAME: c<client>#<seq>`.
fn parse_chat(line: &[u8]) -> Option<(u32, u32)> {
    let at = line.windows(2).rposition(|w| w == b": ")?;
    let text = line[at + 2..].strip_prefix(b"c")?;
    let hash = text.iter().position(|&b| b == b'#')?;
    Some((number(&text[..hash])?, number(&text[hash + 1..])?))
}

fn number(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')),
    )
}

/// The count of a `/rooms` header: `N rooms:` or `1 room:`.
fn rooms_header(line: &str) -> Option<usize> {
    let (count, rest) = line.split_once(' ')?;
    (rest == "rooms:" || rest == "room:")
        .then(|| count.parse().ok())
        .flatten()
}

/// `(ROOM, N)` of a `/rooms` line: `  #ROOM (N users)`, maybe followed by
/// ` (you are here)`.
fn rooms_line(line: &str) -> Option<(String, usize)> {
    let rest = line.strip_prefix("  #")?;
    let (room, rest) = rest.split_once(" (")?;
    let count = rest.split(' ').next()?.parse().ok()?;
    Some((room.to_string(), count))
}

impl Run {
    fn new(addr: SocketAddr, opts: Options) -> io::Result<Run> {
        let now = Instant::now();
        let lobby = opts.rooms as u16;
        Ok(Run {
            addr,
            poll: Poll::new()?,
            rng: Rng::new(opts.seed),
            clients: (0..opts.clients).map(|_| Client::new(now, lobby)).collect(),
            lines: vec![Vec::new(); opts.clients],
            room_log: vec![Vec::new(); opts.rooms + 1],
            opts,
            clock: 0,
            unechoed: 0,
            opened: 0,
            in_flight: 0,
            last_read: now,
            answers: Vec::new(),
            stats: Stats::default(),
        })
    }

    fn stamp(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn lobby(&self) -> u16 {
        self.opts.rooms as u16
    }

    /// Runs every phase; returns the peak server RSS sampled.
    fn drive(&mut self, server: &mut Chatd, started: Instant) -> io::Result<u64> {
        let mut events = Events::with_capacity(4096);
        let end = started + self.opts.duration;
        let mut phase = Phase::Running;
        let mut peak = 0;
        let mut next_sample = started;
        let report_every = Duration::from_secs(if self.opts.duration.as_secs() >= 30 {
            10
        } else {
            2
        });
        let mut next_report = started + report_every;
        while phase != Phase::Done {
            self.poll
                .poll(&mut events, Some(Duration::from_millis(5)))?;
            let ready: Vec<(usize, bool, bool)> = events
                .iter()
                .map(|e| {
                    (
                        e.token().0,
                        e.is_readable() || e.is_read_closed() || e.is_error(),
                        e.is_writable(),
                    )
                })
                .collect();
            for (i, readable, writable) in ready {
                if writable {
                    self.on_writable(i);
                }
                if readable {
                    self.on_readable(i);
                }
            }
            let now = Instant::now();
            if now >= next_sample {
                peak = peak.max(server.sample().rss);
                next_sample = now + Duration::from_millis(100);
            }
            if now >= next_report {
                next_report = now + report_every;
                self.progress(now.duration_since(started), server);
                if !server.alive() {
                    return Err(io::Error::other("chatd died"));
                }
            }
            phase = match phase {
                Phase::Running => {
                    self.open_more();
                    if now < end {
                        for i in 0..self.clients.len() {
                            self.act(i, now);
                        }
                        Phase::Running
                    } else {
                        Phase::Draining { since: now }
                    }
                }
                Phase::Draining { since } => {
                    self.open_more();
                    if self.drained() {
                        Phase::Quieting
                    } else if now.duration_since(since) > DRAIN_TIMEOUT {
                        self.stats.violation(format!(
                            "not drained {DRAIN_TIMEOUT:?} after the end: {} echoes missing, \
                             {} users not connected or waiting for a join reply",
                            self.unechoed,
                            self.clients
                                .iter()
                                .filter(|c| c.state != State::Active || c.join_out.is_some())
                                .count()
                        ));
                        Phase::Quieting
                    } else {
                        Phase::Draining { since }
                    }
                }
                Phase::Quieting if now.duration_since(self.last_read) >= QUIET => {
                    self.close_all_stays();
                    self.ask();
                    Phase::Querying { since: now }
                }
                Phase::Quieting => Phase::Quieting,
                Phase::Querying { since } => {
                    let waiting = self
                        .clients
                        .iter()
                        .filter(|c| {
                            c.state == State::Active && (!c.queries.is_empty() || c.reply.is_some())
                        })
                        .count();
                    if waiting == 0 {
                        Phase::Done
                    } else if now.duration_since(since) > QUERY_TIMEOUT {
                        self.stats.violation(format!(
                            "{waiting} `/rooms` or `who` replies missing after {QUERY_TIMEOUT:?}"
                        ));
                        Phase::Done
                    } else {
                        Phase::Querying { since }
                    }
                }
                Phase::Done => Phase::Done,
            };
        }
        Ok(peak)
    }

    fn progress(&self, t: Duration, server: &Chatd) {
        let s = &self.stats;
        println!(
            "  t={:>4.0}s users {:>6}, moves {:>8}, lines {:>7}, deliveries {:>10}, violations {}, server RSS {}",
            t.as_secs_f64(),
            self.clients
                .iter()
                .filter(|c| c.state == State::Active)
                .count(),
            s.joins,
            s.chats,
            s.delivered,
            s.violations.count,
            mib(server.sample().rss)
        );
    }

    /// True once every user is in, every join answered, every echo back.
    fn drained(&self) -> bool {
        self.unechoed == 0
            && self.opened == self.clients.len()
            && self.in_flight == 0
            && self
                .clients
                .iter()
                .all(|c| c.state == State::Closed || (c.join_out.is_none() && c.wbuf.is_empty()))
    }

    /// Starts connects up to [`CONNECTS_IN_FLIGHT`].
    fn open_more(&mut self) {
        while self.opened < self.clients.len() && self.in_flight < CONNECTS_IN_FLIGHT {
            let i = self.opened;
            self.opened += 1;
            let result = TcpStream::connect(self.addr).and_then(|mut stream| {
                self.poll.registry().register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(stream)
            });
            let stamp = self.stamp();
            match result {
                Ok(stream) => {
                    let c = &mut self.clients[i];
                    c.stream = Some(stream);
                    c.state = State::Greeting;
                    c.entered_w = stamp;
                    self.in_flight += 1;
                }
                Err(e) => {
                    self.clients[i].state = State::Closed;
                    self.stats
                        .violation(format!("user {i}: connect failed: {e}"));
                }
            }
        }
    }

    /// Whatever is due for user `i`: a chat line, a move.
    fn act(&mut self, i: usize, now: Instant) {
        let c = &self.clients[i];
        if c.state != State::Active {
            return;
        }
        if now >= c.next_chat {
            let c = &mut self.clients[i];
            let seq = self.lines[i].len() as u32;
            c.wbuf.extend_from_slice(format!("c{i}#{seq}\n").as_bytes());
            c.pending.push_back((c.wbuf.len(), Out::Chat(seq)));
            self.lines[i].push(LineRec {
                room: c.target,
                written: 0,
                echoed: NEVER,
            });
            self.unechoed += 1;
            self.stats.chats += 1;
            let next = now + self.rng.exp(self.opts.chat_every);
            self.clients[i].next_chat = next;
            self.flush(i);
        }
        let c = &self.clients[i];
        if now >= c.next_move && c.join_out.is_none() && self.opts.rooms > 1 {
            let target = c.target;
            let mut room = self.rng.below(self.opts.rooms as u64 - 1) as u16;
            if room >= target && target != self.lobby() {
                room += 1;
            }
            self.join(i, room);
            let next = now + self.rng.exp(self.opts.move_every);
            self.clients[i].next_move = next;
        }
    }

    /// Queues `/join ROOM` for user `i`.
    fn join(&mut self, i: usize, room: u16) {
        let name = room_name(room, self.opts.rooms);
        let c = &mut self.clients[i];
        c.wbuf
            .extend_from_slice(format!("/join {name}\n").as_bytes());
        c.pending.push_back((c.wbuf.len(), Out::Join));
        c.target = room;
        c.join_out = Some((room, 0));
        self.flush(i);
    }

    fn on_writable(&mut self, i: usize) {
        if self.clients[i].state == State::Greeting && self.clients[i].stream.is_some() {
            // A connect that failed shows as writable with an error.
            if let Some(Err(e) | Ok(Some(e))) =
                self.clients[i].stream.as_ref().map(|s| s.take_error())
            {
                self.cut(i, &format!("connect failed: {e}"));
                return;
            }
        }
        self.flush(i);
    }

    /// Writes what user `i` has queued; stamps the lines completed.
    fn flush(&mut self, i: usize) {
        let Run {
            clients,
            lines,
            room_log,
            clock,
            ..
        } = self;
        let c = &mut clients[i];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        let written = write_some(stream, &c.wbuf);
        if written == 0 {
            return;
        }
        // No read happens between these writes, so one stamp taken after
        // the last of them orders them all correctly against every read.
        *clock += 1;
        let stamp = *clock;
        c.wbuf.drain(..written);
        while let Some(&(end, out)) = c.pending.front() {
            if end > written {
                break;
            }
            c.pending.pop_front();
            match out {
                Out::Chat(seq) => {
                    let rec = &mut lines[i][seq as usize];
                    rec.written = stamp;
                    room_log[usize::from(rec.room)].push((i as u32, seq));
                }
                Out::Join => {
                    if let Some((_, w)) = c.join_out.as_mut() {
                        *w = stamp;
                    }
                }
                Out::Other => {}
            }
        }
        for (end, _) in c.pending.iter_mut() {
            *end -= written;
        }
    }

    fn on_readable(&mut self, i: usize) {
        let mut chunk = [0u8; 16384];
        loop {
            let Some(stream) = self.clients[i].stream.as_mut() else {
                return;
            };
            let n = match stream.read(&mut chunk) {
                Ok(0) => {
                    self.cut(i, "the server closed the connection");
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.cut(i, &format!("read: {e}"));
                    return;
                }
            };
            let stamp = self.stamp();
            self.last_read = Instant::now();
            let mut buf = std::mem::take(&mut self.clients[i].rbuf);
            buf.extend_from_slice(&chunk[..n]);
            let mut start = 0;
            while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
                let line = &buf[start..start + nl];
                start += nl + 1;
                self.on_line(i, line, stamp);
                if self.clients[i].stream.is_none() {
                    return;
                }
            }
            buf.drain(..start);
            self.clients[i].rbuf = buf;
        }
    }

    /// The server closed user `i`, or its socket failed.
    fn cut(&mut self, i: usize, why: &str) {
        let c = &mut self.clients[i];
        if let Some(mut stream) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        if c.state == State::Greeting {
            self.in_flight -= 1;
        }
        c.state = State::Closed;
        self.stats.unexpected_closes += 1;
        self.stats
            .violation(format!("user {i} ({}): {why}", c.name));
    }

    fn on_line(&mut self, i: usize, line: &[u8], stamp: u64) {
        match self.clients[i].state {
            State::Greeting => return self.greeted(i, line, stamp),
            State::Active => {}
            State::Waiting | State::Closed => return,
        }
        if self.clients[i].history.is_history(line) {
            return;
        }
        if let Some((sender, seq)) = parse_chat(line) {
            return self.chat_line(i, sender, seq, stamp);
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return;
        };
        if self.clients[i].reply.is_some() || !self.clients[i].queries.is_empty() {
            return self.reply_line(i, text);
        }
        // PROTOCOL.md, `/join ROOM`: "`You are now in #ROOM` then its
        // history; or `You are already in #ROOM`; or `Invalid room name:
        // ROOM ...`; or `Too many rooms (max N)`".
        if let Some(name) = text.strip_prefix("You are now in #") {
            self.moved(i, name, stamp);
        } else if text.starts_with("You are already in #")
            || text.starts_with("Invalid room name")
            || text.starts_with("Too many rooms")
        {
            self.stats
                .violation(format!("user {i}: unexpected join reply {text:?}"));
            self.clients[i].join_out = None;
        }
    }

    /// `You are NAME`: the user is in the lobby; it joins a room at once.
    fn greeted(&mut self, i: usize, line: &[u8], stamp: u64) {
        let now = Instant::now();
        self.in_flight -= 1;
        let c = &mut self.clients[i];
        c.name = own_name(c.stream.as_ref());
        // PROTOCOL.md: "connect | the newcomer | `You are NAME`", the name
        // being "its peer address as printed by Rust's `SocketAddr`".
        if line != format!("You are {}", c.name).as_bytes() {
            let got = String::from_utf8_lossy(line).into_owned();
            self.stats
                .violation(format!("user {i}: greeting {got:?} for {}", c.name));
        }
        c.state = State::Active;
        c.entered_r = stamp;
        c.next_chat = now + self.rng.exp(self.opts.chat_every);
        self.clients[i].next_move = now + self.rng.exp(self.opts.move_every);
        self.stats.connects += 1;
        let room = self.rng.below(self.opts.rooms as u64) as u16;
        self.join(i, room);
    }

    /// `You are now in #NAME`: the stay in the old room ends, one in the
    /// new room begins.
    fn moved(&mut self, i: usize, name: &str, stamp: u64) {
        let rooms = self.opts.rooms;
        let Some((want, written)) = self.clients[i].join_out.take() else {
            self.stats
                .violation(format!("user {i}: `You are now in #{name}` without a join"));
            return;
        };
        if room_id(name, rooms) != Some(want) {
            self.stats.violation(format!(
                "user {i}: `You are now in #{name}` after /join {}",
                room_name(want, rooms)
            ));
        }
        self.close_stay(i, written);
        let c = &mut self.clients[i];
        c.room = want;
        c.entered_w = written;
        c.entered_r = stamp;
        c.in_stay.clear();
        self.stats.joins += 1;
    }

    /// Checks the stay of user `i` that ends with the `/join` written at
    /// `left_w` ([`NEVER`]: the run is over): every line of its room whose
    /// write completed after the user read its entry, and whose echo its
    /// sender read before `left_w`, must have been received.
    fn close_stay(&mut self, i: usize, left_w: u64) {
        let Run {
            clients,
            lines,
            room_log,
            stats,
            ..
        } = self;
        let c = &clients[i];
        let log = &room_log[usize::from(c.room)];
        let from =
            log.partition_point(|&(s, q)| lines[s as usize][q as usize].written <= c.entered_r);
        for &(s, q) in &log[from..] {
            let rec = lines[s as usize][q as usize];
            if rec.written >= left_w {
                break;
            }
            if rec.echoed >= left_w {
                continue;
            }
            stats.due_checked += 1;
            let got = c
                .in_stay
                .get(&s)
                .is_some_and(|&(first, last)| first <= q && q <= last);
            if !got {
                stats.violation(format!(
                    "user {i} left #{} without c{s}#{q}, said there during its stay",
                    room_name(c.room, room_log.len() - 1)
                ));
            }
        }
        stats.stays_closed += 1;
    }

    /// A chat line `c<sender>#<seq>` received by user `i`.
    fn chat_line(&mut self, i: usize, sender: u32, seq: u32, stamp: u64) {
        let rooms = self.opts.rooms;
        let Run {
            clients,
            lines,
            stats,
            unechoed,
            ..
        } = self;
        let c = &mut clients[i];
        stats.delivered += 1;
        let Some(&rec) = lines.get(sender as usize).and_then(|l| l.get(seq as usize)) else {
            stats.violation(format!("user {i}: a line never sent: c{sender}#{seq}"));
            return;
        };
        let here = c.room;
        let what = format!("user {i} in #{}: c{sender}#{seq}", room_name(here, rooms));
        if rec.room != here {
            stats.violation(format!(
                "{what} was said in #{}",
                room_name(rec.room, rooms)
            ));
        }
        if let Some(&last) = c.last_from.get(&sender)
            && seq <= last
        {
            stats.violation(format!("{what} after #{last} (duplicate or out of order)"));
        }
        c.last_from.insert(sender, seq);
        if rec.echoed < c.entered_w {
            stats.violation(format!("{what} was said before the user entered"));
        }
        let sent = &lines[sender as usize];
        match c.in_stay.get(&sender).copied() {
            Some((first, last)) => {
                // Everything the sender said here between two lines this
                // user got in one stay was processed during the stay.
                if let Some(q) = (last + 1..seq).find(|&q| sent[q as usize].room == here) {
                    stats.violation(format!(
                        "{what} arrived, but c{sender}#{q} before it did not"
                    ));
                }
                c.in_stay.insert(sender, (first, seq));
            }
            None => {
                // The sender's earlier lines written after this user read
                // its entry were processed during the stay too.
                let missed = (0..seq)
                    .rev()
                    .take_while(|&q| sent[q as usize].written > c.entered_r)
                    .find(|&q| sent[q as usize].room == here);
                if let Some(q) = missed {
                    stats.violation(format!(
                        "{what} arrived, but c{sender}#{q} (said there after it entered) did not"
                    ));
                }
                c.in_stay.insert(sender, (seq, seq));
            }
        }
        if sender as usize == i {
            let rec = &mut lines[i][seq as usize];
            if rec.echoed == NEVER {
                rec.echoed = stamp;
                *unechoed -= 1;
            }
        }
    }

    /// Ends every open stay (the run is over: every line is due).
    fn close_all_stays(&mut self) {
        for i in 0..self.clients.len() {
            if self.clients[i].state == State::Active {
                self.close_stay(i, NEVER);
            }
        }
    }

    /// Asks `/rooms` (user 0) and `who` (the first user of each room).
    fn ask(&mut self) {
        let mut asked = BTreeSet::new();
        for i in 0..self.clients.len() {
            if self.clients[i].state != State::Active {
                continue;
            }
            if asked.is_empty() {
                self.query(i, Query::Rooms);
            }
            let room = self.clients[i].room;
            if asked.insert(room) {
                self.query(i, Query::Who(room));
            }
        }
    }

    fn query(&mut self, i: usize, q: Query) {
        let c = &mut self.clients[i];
        c.queries.push_back(q);
        let command: &[u8] = match q {
            Query::Rooms => b"/rooms\n",
            Query::Who(_) => b"/who\n",
        };
        c.wbuf.extend_from_slice(command);
        c.pending.push_back((c.wbuf.len(), Out::Other));
        self.flush(i);
    }

    /// A line while user `i` waits for replies to its questions.
    fn reply_line(&mut self, i: usize, text: &str) {
        let c = &mut self.clients[i];
        let reply = match c.reply.take() {
            Some(mut reply) => {
                reply.lines.push(text.to_string());
                reply
            }
            None => {
                let Some(&query) = c.queries.front() else {
                    return;
                };
                // PROTOCOL.md: `/rooms` answers "`N rooms:` (`1 room:`)
                // then one line per room"; `/who` "`N users in #ROOM:`
                // (`1 user in #ROOM:`) then one line per user".
                let expected = match query {
                    Query::Rooms => rooms_header(text),
                    Query::Who(_) => who_header(text),
                };
                let Some(expected) = expected else {
                    return;
                };
                c.queries.pop_front();
                Reply {
                    query,
                    header: text.to_string(),
                    expected,
                    lines: Vec::new(),
                }
            }
        };
        if reply.lines.len() == reply.expected {
            self.answers.push(reply);
        } else {
            c.reply = Some(reply);
        }
    }

    /// Compares the replies with the users' own view: (`/rooms` agrees,
    /// every `who` agrees, users counted by `/rooms`).
    fn compare_answers(&mut self) -> (bool, bool, usize) {
        let rooms = self.opts.rooms;
        let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for c in self.clients.iter().filter(|c| c.state == State::Active) {
            expected
                .entry(room_name(c.room, rooms))
                .or_default()
                .insert(c.name.clone());
        }
        let mut rooms_ok = false;
        let mut sum = 0;
        let mut who_ok = true;
        let mut whos = 0;
        let mut problems = Vec::new();
        for reply in &self.answers {
            match reply.query {
                Query::Rooms => {
                    let listed: BTreeMap<String, usize> =
                        reply.lines.iter().filter_map(|l| rooms_line(l)).collect();
                    sum = listed.values().sum();
                    let want: BTreeMap<String, usize> = expected
                        .iter()
                        .map(|(room, users)| (room.clone(), users.len()))
                        .collect();
                    rooms_ok = listed == want && sum == self.opts.clients;
                    if !rooms_ok {
                        problems.push(format!(
                            "/rooms lists {} rooms, {sum} users; the users see {} rooms{}",
                            listed.len(),
                            want.len(),
                            listed
                                .iter()
                                .find(|(r, n)| want.get(*r) != Some(n))
                                .map(|(r, n)| format!(
                                    "; #{r}: {n} listed, {:?} there",
                                    want.get(r)
                                ))
                                .unwrap_or_default()
                        ));
                    }
                }
                Query::Who(room) => {
                    whos += 1;
                    let name = room_name(room, rooms);
                    let listed: BTreeSet<String> = reply
                        .lines
                        .iter()
                        .map(|l| {
                            let l = l.strip_prefix("  ").unwrap_or(l);
                            l.strip_suffix(" (you)").unwrap_or(l).to_string()
                        })
                        .collect();
                    let want = expected.get(&name).cloned().unwrap_or_default();
                    let header_ok = reply.header.ends_with(&format!(" in #{name}:"));
                    if listed != want || !header_ok || listed.len() != reply.lines.len() {
                        who_ok = false;
                        problems.push(format!(
                            "`who` in #{name}: {:?}, {} listed, {} there, {} listed but not there, \
                             {} there but not listed",
                            reply.header,
                            listed.len(),
                            want.len(),
                            listed.difference(&want).count(),
                            want.difference(&listed).count()
                        ));
                    }
                }
            }
        }
        if whos != expected.len() {
            who_ok = false;
            problems.push(format!(
                "{whos} `who` replies for {} occupied rooms",
                expected.len()
            ));
        }
        println!(
            "  at the end: /rooms lists {sum} users; {whos} `who` replies for {} occupied rooms",
            expected.len()
        );
        for p in problems.iter().take(SAMPLES) {
            println!("  mismatch: {p}");
        }
        (rooms_ok, who_ok, sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_lines_are_parsed() {
        assert_eq!(parse_chat(b"127.0.0.1:5000: c12#3"), Some((12, 3)));
        assert_eq!(parse_chat(b"127.0.0.1:5000: c12#"), None);
        assert_eq!(parse_chat(b"127.0.0.1:5000: hello"), None);
        assert_eq!(parse_chat(b"127.0.0.1:5000 has left for #r3"), None);
        assert_eq!(parse_chat(b"127.0.0.1:5000: c1#2x"), None);
    }

    #[test]
    fn room_names_both_ways() {
        assert_eq!(room_name(3, 100), "r3");
        assert_eq!(room_name(100, 100), "lobby");
        assert_eq!(room_id("r3", 100), Some(3));
        assert_eq!(room_id("lobby", 100), Some(100));
        assert_eq!(room_id("r100", 100), None);
        assert_eq!(room_id("x", 100), None);
    }

    #[test]
    fn rooms_replies_are_parsed() {
        assert_eq!(rooms_header("2 rooms:"), Some(2));
        assert_eq!(rooms_header("1 room:"), Some(1));
        assert_eq!(rooms_header("2 users in #r1:"), None);
        assert_eq!(rooms_line("  #r1 (3 users)"), Some(("r1".into(), 3)));
        assert_eq!(
            rooms_line("  #lobby (1 user) (you are here)"),
            Some(("lobby".into(), 1))
        );
        assert_eq!(rooms_line("  127.0.0.1:5 (you)"), None);
    }

    // The delivery rules on made-up timelines: user 0 (A) speaks, user 1
    // (B) listens; stamps are chosen by hand.

    fn run_of(rooms: usize) -> Run {
        let opts = Options {
            clients: 2,
            rooms,
            duration: Duration::ZERO,
            chat_every: Duration::from_secs(1),
            move_every: Duration::from_secs(1),
            seed: 1,
        };
        let mut run = Run::new(SocketAddr::from(([127, 0, 0, 1], 1)), opts).expect("poll");
        for c in &mut run.clients {
            c.state = State::Active;
        }
        run
    }

    /// User `i` is in `room` from the join written at `w`, read at `r`.
    fn enter(run: &mut Run, i: usize, room: u16, w: u64, r: u64) {
        let c = &mut run.clients[i];
        (c.room, c.entered_w, c.entered_r) = (room, w, r);
        c.in_stay.clear();
    }

    /// A says a line in `room`, written at `w`, echo read at `e`; its seq.
    fn said(run: &mut Run, room: u16, w: u64, e: u64) -> u32 {
        let seq = run.lines[0].len() as u32;
        run.lines[0].push(LineRec {
            room,
            written: w,
            echoed: e,
        });
        run.room_log[usize::from(room)].push((0, seq));
        seq
    }

    fn violations(run: &Run) -> u64 {
        run.stats.violations.count
    }

    #[test]
    fn every_line_of_the_stay_once_in_order_passes() {
        let mut run = run_of(2);
        enter(&mut run, 1, 0, 1, 2);
        for k in 0..3 {
            let q = said(&mut run, 0, 10 + 10 * k, 11 + 10 * k);
            run.chat_line(1, 0, q, 12 + 10 * k);
        }
        run.close_stay(1, 100);
        assert_eq!(violations(&run), 0, "{:?}", run.stats.violations.samples);
        assert_eq!(run.stats.due_checked, 3);
    }

    #[test]
    fn a_line_missing_at_the_end_of_a_stay_is_caught() {
        let mut run = run_of(2);
        enter(&mut run, 1, 0, 1, 2);
        let q = said(&mut run, 0, 10, 11);
        said(&mut run, 0, 20, 21);
        run.chat_line(1, 0, q, 12);
        run.close_stay(1, 100);
        assert_eq!(violations(&run), 1, "{:?}", run.stats.violations.samples);
    }

    #[test]
    fn a_line_from_another_room_is_caught() {
        let mut run = run_of(2);
        enter(&mut run, 1, 0, 1, 2);
        let q = said(&mut run, 1, 10, 11);
        run.chat_line(1, 0, q, 12);
        assert_eq!(violations(&run), 1);
    }

    #[test]
    fn a_duplicate_is_caught() {
        let mut run = run_of(2);
        enter(&mut run, 1, 0, 1, 2);
        let q = said(&mut run, 0, 10, 11);
        run.chat_line(1, 0, q, 12);
        run.chat_line(1, 0, q, 13);
        assert_eq!(violations(&run), 1);
    }

    #[test]
    fn a_hole_between_two_lines_of_a_sender_is_caught() {
        let mut run = run_of(2);
        enter(&mut run, 1, 0, 1, 2);
        let first = said(&mut run, 0, 10, 11);
        said(&mut run, 0, 20, 21);
        let third = said(&mut run, 0, 30, 31);
        run.chat_line(1, 0, first, 12);
        run.chat_line(1, 0, third, 32);
        assert_eq!(violations(&run), 1);
    }

    #[test]
    fn a_sender_s_line_in_another_room_is_no_hole() {
        let mut run = run_of(2);
        enter(&mut run, 1, 0, 1, 2);
        let first = said(&mut run, 0, 10, 11);
        said(&mut run, 1, 20, 21);
        let third = said(&mut run, 0, 30, 31);
        run.chat_line(1, 0, first, 12);
        run.chat_line(1, 0, third, 32);
        run.close_stay(1, 100);
        assert_eq!(violations(&run), 0, "{:?}", run.stats.violations.samples);
    }

    #[test]
    fn a_line_echoed_before_the_join_was_written_must_not_arrive() {
        let mut run = run_of(2);
        let q = said(&mut run, 0, 3, 4);
        enter(&mut run, 1, 0, 5, 6);
        run.chat_line(1, 0, q, 7);
        assert_eq!(violations(&run), 1);
    }

    #[test]
    fn a_first_line_with_an_earlier_line_of_the_stay_missing_is_caught() {
        let mut run = run_of(2);
        enter(&mut run, 1, 0, 4, 6);
        said(&mut run, 0, 10, 11);
        let q = said(&mut run, 0, 20, 21);
        run.chat_line(1, 0, q, 22);
        assert_eq!(violations(&run), 1);
    }

    #[test]
    fn a_line_sent_while_the_join_was_in_flight_may_be_missing() {
        let mut run = run_of(2);
        enter(&mut run, 1, 0, 4, 6);
        said(&mut run, 0, 5, 7);
        let q = said(&mut run, 0, 10, 11);
        run.chat_line(1, 0, q, 12);
        run.close_stay(1, 100);
        assert_eq!(violations(&run), 0, "{:?}", run.stats.violations.samples);
        assert_eq!(run.stats.due_checked, 1);
    }

    #[test]
    fn only_lines_echoed_before_the_next_join_are_due() {
        let mut run = run_of(2);
        enter(&mut run, 1, 0, 1, 2);
        said(&mut run, 0, 10, 16);
        run.close_stay(1, 15);
        assert_eq!(violations(&run), 0);
        let mut run = run_of(2);
        enter(&mut run, 1, 0, 1, 2);
        said(&mut run, 0, 10, 14);
        run.close_stay(1, 15);
        assert_eq!(violations(&run), 1);
    }
}
