//! The chat across several servers (`--cluster`): what goes to Redis, and
//! what the events coming back do — still plain code with no sockets.
//!
//! # The design in one paragraph
//!
//! Every server subscribes to one channel, `P:events`. Anything that
//! changes what users see — a line, an arrival, a departure, a rename, a
//! move, a ban, an announcement — is not applied where it happens: it is
//! sent to Redis (a Lua script of [`super::scripts`] that updates the
//! registry and publishes the event in one step) and applied when it comes
//! back through the channel, by every server, the origin included. Redis
//! runs one thing at a time, so the channel has one order, and every
//! server applies the same events in the same order: a room's lines, its
//! presence notices and `who`'s order of entry agree everywhere. Each
//! server thus keeps a *replica* of every user of the cluster (remote ones
//! under ids of [`crate::id::REMOTE_GENERATION`]), so `who`, `/rooms`,
//! `/msg` and `/kick` are answered from memory. Redis's hashes are the
//! authority for what must be decided once: a name (claimed atomically by
//! its skeleton) and who is connected where (for a server that links
//! later, or again).
//!
//! A user whose command needs Redis's answer (a rename, a move, a
//! `/history`, its own arrival) *waits*: its later lines stay unread until
//! the answer, so they keep their order behind it.
//!
//! # Phases
//!
//! ```text
//!   Down ──link Up──> Syncing ──snapshot (Z) on P:to:S──> Up
//!    ^                   |                                |
//!    └──── link Down ────┴────────────────────────────────┘
//! ```
//!
//! While `Down` the server is a chat of its own (remote users are dropped
//! from the replica without notices, so `who` lists the local ones);
//! `Syncing` and `Up` publish everything. On `Up` the server registers its
//! users again and reads everyone else's from the snapshot, which Redis
//! publishes on the server's own channel in the same step, so it is exactly
//! the state the next event applies to.
//!
//! # Liveness
//!
//! Each server refreshes `P:alive:S` (a TTL key) every second. Every
//! server, once linked for a few seconds, runs [`super::scripts::REAP`]
//! every second: a registered server whose key expired is removed and `X`
//! published for it — by whichever server ran the script first, so once.
//! Everyone then announces its users as `NAME has left (server lost)`.

use super::scripts::{self, events_channel, server_channel};
use super::wire::{self, Builder, Event, Gone, UserRecord};
use super::{Chat, Effect, Home, Leave, Now, Outbound, User, Waiting};
use crate::cluster::tuning::REPLY_TIMEOUT;
use crate::history::{self, Line};
use crate::id::ConnId;
use crate::iplimit::AddrKey;
use crate::names;
use crate::presence::Seq;
use crate::protocol::{self, Departure};
use crate::rooms::LOBBY_ID;
use crate::tuning::CLUSTER_LINES_IN_FLIGHT;
use log::{debug, info, warn};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a server's heartbeat key lives: missing this long, it is
/// taken for dead. Within PROTOCOL.md's 10 s with the reap period and a
/// tick to spare.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(5);

/// How often the heartbeat is refreshed and dead servers are looked for.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// How long a server must have been linked before it reaps others: after
/// Redis comes back from a pause every heartbeat key may have expired,
/// and the live servers need a moment to register again.
pub const REAP_GRACE: Duration = Duration::from_secs(3);

/// Default-name candidates (`ADDR`, `ADDR~2`, …) offered per arrival
/// request; if all are taken the next request offers the next ones.
pub const NAME_CANDIDATES: usize = 8;

/// Where the link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No Redis: a chat of this server's users only.
    Down,
    /// Linked, registered, waiting for the snapshot.
    Syncing,
    /// Linked and whole.
    Up,
}

/// What a request to Redis was for, so its answer (or its loss) can be
/// applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// A newcomer's name claim, offering candidates from number `next`.
    Arrive(ConnId, usize),
    /// A rename.
    Rename(ConnId),
    /// A move to a room.
    Move(ConnId, String),
    /// A departure.
    Leave(ConnId),
    /// A default name for a user whose name was given away, offering
    /// candidates from number `next`.
    Reclaim(ConnId, usize),
    /// `/history N`.
    History(ConnId, String, usize),
    /// A chat line by a user (its serial number among the user's lines),
    /// to a room: delivered here if the link fails before its echo came.
    Say(ConnId, u64, String, String),
    /// An announcement (likewise).
    Wall(String),
    /// Registration after the link came up.
    Resync,
    /// `TIME`, sent at this local time (unix milliseconds): Redis's clock,
    /// for the requests' deadlines.
    Clock(i64),
    /// The heartbeat.
    Heartbeat,
    /// Nothing to do with the answer.
    Fire,
}

/// One command for Redis.
#[derive(Debug)]
pub struct Call {
    /// What it is for.
    pub tag: Pending,
    /// The command and its arguments.
    pub args: Vec<Vec<u8>>,
}

/// Redis's answer, as much of it as the chat reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nil.
    Nil,
    /// An integer.
    Int(i64),
    /// A string.
    Bulk(Vec<u8>),
    /// An array.
    Array(Vec<Reply>),
    /// An error.
    Error(String),
}

impl From<crate::cluster::OwnedFrame> for Reply {
    fn from(frame: crate::cluster::OwnedFrame) -> Self {
        use crate::cluster::OwnedFrame as F;
        match frame {
            F::Null => Reply::Nil,
            F::Integer(n) => Reply::Int(n),
            F::BulkString(b) => Reply::Bulk(b),
            F::SimpleString(s) => Reply::Bulk(s),
            F::Error(e) => Reply::Error(e.to_string()),
            F::Array(items) => Reply::Array(items.into_iter().map(Reply::from).collect()),
        }
    }
}

/// The cluster side of the chat.
#[derive(Debug)]
pub struct Cluster {
    /// `--cluster-name`: the prefix of every key and channel.
    prefix: String,
    /// This server's id: random, new at every start.
    me: Arc<str>,
    /// The `--cluster` URL, for the log.
    url: String,
    /// Where the link is.
    phase: Phase,
    /// When the link last came up.
    up_since: Option<Instant>,
    /// When the heartbeat last went.
    last_beat: Option<Instant>,
    /// True once this outage was logged.
    warned: bool,
    /// A registration was sent and not answered yet: another request for
    /// one (a heartbeat and a `lost` event both saying this server was
    /// taken for dead) is not needed.
    registering: bool,
    /// Remote users: (server, uid) → the id they have here.
    remote: HashMap<(Arc<str>, u64), ConnId>,
    /// Server ids, shared by their users' records.
    servers: HashMap<Arc<str>, usize>,
    /// The next remote id's slot.
    next_remote: u32,
    /// When the scripts were last loaded again after a `NOSCRIPT`.
    reloaded: Option<Instant>,
    /// A registration failed: try again with the next heartbeat.
    resync_due: bool,
    /// Redis's clock less this server's, in milliseconds, once known.
    clock_offset: Option<i64>,
    /// Commands for the loop to send.
    calls: Vec<Call>,
    /// Script texts (prelude included), built once.
    texts: Texts,
    /// `P:events`.
    events: String,
    /// `P:to:S`.
    mine: String,
}

/// One Lua script: its text (loaded once per connection) and its SHA-1,
/// by which every call names it (`EVALSHA`), so a chat line does not carry
/// a kilobyte of Lua to Redis.
#[derive(Debug)]
struct Script {
    /// The prelude and the body.
    text: String,
    /// The SHA-1 of `text`, in hex.
    sha: String,
}

impl Script {
    fn new(body: &str) -> Script {
        let text = scripts::script(body);
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
        let sha = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Script { text, sha }
    }
}

/// Every script.
#[derive(Debug)]
struct Texts {
    arrive: Script,
    rename: Script,
    moved: Script,
    leave: Script,
    say: Script,
    ban: Script,
    unban: Script,
    heartbeat: Script,
    reap: Script,
    quit: Script,
    resync: Script,
    reclaim: Script,
}

impl Texts {
    fn all(&self) -> [&Script; 12] {
        [
            &self.arrive,
            &self.rename,
            &self.moved,
            &self.leave,
            &self.say,
            &self.ban,
            &self.unban,
            &self.heartbeat,
            &self.reap,
            &self.quit,
            &self.resync,
            &self.reclaim,
        ]
    }
}

impl Cluster {
    /// The cluster side of a server linking through `url` with key prefix
    /// `prefix`; starts `Down`.
    pub fn new(prefix: &str, url: &str) -> Cluster {
        let me: Arc<str> = Arc::from(server_id().as_str());
        Cluster {
            prefix: prefix.to_string(),
            events: events_channel(prefix),
            mine: server_channel(prefix, &me),
            me,
            url: url.to_string(),
            phase: Phase::Down,
            up_since: None,
            last_beat: None,
            warned: false,
            registering: false,
            remote: HashMap::new(),
            servers: HashMap::new(),
            next_remote: 0,
            clock_offset: None,
            reloaded: None,
            resync_due: false,
            calls: Vec::new(),
            texts: Texts {
                arrive: Script::new(scripts::ARRIVE),
                rename: Script::new(scripts::RENAME),
                moved: Script::new(scripts::MOVE),
                leave: Script::new(scripts::LEAVE),
                say: Script::new(scripts::SAY),
                ban: Script::new(scripts::BAN),
                unban: Script::new(scripts::UNBAN),
                heartbeat: Script::new(scripts::HEARTBEAT),
                reap: Script::new(scripts::REAP),
                quit: Script::new(scripts::QUIT),
                resync: Script::new(scripts::RESYNC),
                reclaim: Script::new(scripts::RECLAIM),
            },
        }
    }

    /// The channels to subscribe to: the events, and this server's own.
    pub fn channels(&self) -> [&str; 2] {
        [&self.events, &self.mine]
    }

    /// This server's id in the cluster.
    pub fn id(&self) -> &str {
        &self.me
    }

    /// Where the link is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Queues `SCRIPT LOAD` of every script: first thing on a new link.
    fn load_scripts(&mut self) {
        let loads: Vec<Call> = self
            .texts
            .all()
            .iter()
            .map(|script| Call {
                tag: Pending::Fire,
                args: vec![
                    b"SCRIPT".to_vec(),
                    b"LOAD".to_vec(),
                    script.text.clone().into_bytes(),
                ],
            })
            .collect();
        self.calls.extend(loads);
    }

    /// Queues `EVALSHA sha 0 prefix me deadline args...`: the deadline is
    /// in Redis's clock, [`REPLY_TIMEOUT`] from now (0 until the clock is
    /// known); past it the scripts that change what users see refuse, as
    /// this server will have given up on the request and done it locally.
    fn eval(&mut self, tag: Pending, which: fn(&Texts) -> &Script, args: &[&[u8]]) {
        let deadline = self.clock_offset.map_or(0, |offset| {
            let timeout = i64::try_from(REPLY_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
            unix_millis().saturating_add(offset).saturating_add(timeout)
        });
        let mut all: Vec<Vec<u8>> = Vec::with_capacity(args.len() + 6);
        all.push(b"EVALSHA".to_vec());
        all.push(which(&self.texts).sha.as_bytes().to_vec());
        all.push(b"0".to_vec());
        all.push(self.prefix.as_bytes().to_vec());
        all.push(self.me.as_bytes().to_vec());
        all.push(deadline.to_string().into_bytes());
        all.extend(args.iter().map(|a| a.to_vec()));
        self.calls.push(Call { tag, args: all });
    }

    /// Queues `PUBLISH channel payload`.
    fn publish(&mut self, channel: String, payload: String) {
        self.calls.push(Call {
            tag: Pending::Fire,
            args: vec![
                b"PUBLISH".to_vec(),
                channel.into_bytes(),
                payload.into_bytes(),
            ],
        });
    }

    /// The id a remote user has here (made on first sight).
    fn remote_id(&mut self, server: &str, uid: u64) -> (ConnId, bool) {
        let server = self.intern(server);
        if let Some(&id) = self.remote.get(&(Arc::clone(&server), uid)) {
            return (id, false);
        }
        let id = ConnId::remote(self.next_remote);
        self.next_remote = self.next_remote.wrapping_add(1);
        self.remote.insert((server, uid), id);
        (id, true)
    }

    /// One shared copy of a server id.
    fn intern(&mut self, server: &str) -> Arc<str> {
        if let Some((known, _)) = self.servers.get_key_value(server) {
            return Arc::clone(known);
        }
        let rc: Arc<str> = Arc::from(server);
        self.servers.insert(Arc::clone(&rc), 0);
        rc
    }
}

/// The wall clock in unix milliseconds.
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Redis's `TIME` reply in unix milliseconds.
fn redis_millis(reply: &Reply) -> Option<i64> {
    let Reply::Array(parts) = reply else {
        return None;
    };
    let number = |part: &Reply| match part {
        Reply::Bulk(text) => std::str::from_utf8(text).ok()?.parse::<i64>().ok(),
        _ => None,
    };
    Some(number(parts.first()?)? * 1000 + number(parts.get(1)?)? / 1000)
}

/// A random id for this run of the server (16 hex digits).
fn server_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    format!("{:016x}", hasher.finish())
}

/// Default names `from` on for a user at `addr` (`ADDR`, `ADDR~2`, …), each
/// followed by its skeleton: the candidates a script claims the first free
/// one of.
fn default_names(addr: &str, from: usize) -> Vec<Vec<u8>> {
    let mut args = Vec::with_capacity(2 * NAME_CANDIDATES);
    for n in from..from + NAME_CANDIDATES {
        let name = if n == 1 {
            addr.to_string()
        } else {
            format!("{addr}{}{n}", names::DEFAULT_NAME_COUNTER)
        };
        args.push(names::skeleton(&name).into_bytes());
        args.insert(args.len() - 1, name.into_bytes());
    }
    args
}

/// A user's id as the cluster knows it.
fn uid(id: ConnId) -> u64 {
    id.as_u64()
}

/// Lines of an event as history lines.
fn lines_of(history: &[(i64, &str)]) -> Vec<Line> {
    history
        .iter()
        .map(|&(at, text)| Line::new(at, text))
        .collect()
}

/// How a departure is put in an `L` event.
fn gone_of(reason: &Leave) -> Gone<'_> {
    match reason.departure() {
        Departure::Plain | Departure::For(_) => Gone::Plain,
        Departure::Because(why) => Gone::Because(why),
        Departure::Kicked { by, reason } => Gone::Kicked { by, reason },
    }
}

/// How an `L` event's departure is told.
fn departure_of<'a>(why: &'a Gone<'a>) -> Departure<'a> {
    match why {
        Gone::Plain => Departure::Plain,
        Gone::Because(reason) => Departure::Because(reason),
        Gone::Kicked { by, reason } => Departure::Kicked {
            by,
            reason: *reason,
        },
    }
}

impl Chat {
    /// Makes this chat one server of a cluster.
    pub fn set_cluster(&mut self, cluster: Cluster) {
        self.cluster = Some(cluster);
    }

    /// The cluster side, if any.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// True when commands go through Redis (linked, or linking).
    pub(super) fn linked(&self) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.phase != Phase::Down)
    }

    /// True while user `id` waits for Redis: its input must stay unread.
    pub fn is_waiting(&self, id: ConnId) -> bool {
        self.cluster.is_some() && self.users.get(&id).is_some_and(|u| u.waiting.is_some())
    }

    /// Moves the commands for Redis into `into`.
    pub fn take_calls(&mut self, into: &mut Vec<Call>) {
        if let Some(cluster) = self.cluster.as_mut() {
            into.append(&mut cluster.calls);
        }
    }

    /// Ends user `id`'s wait: its input may be read again.
    fn resume(&mut self, id: ConnId) {
        if let Some(user) = self.users.get_mut(&id)
            && user.waiting.take().is_some()
        {
            self.effects.push(Effect::Resume(id));
        }
    }

    // ----- requests: what local users do, sent to Redis ---------------

    /// A newcomer while linked: it waits for its name.
    pub(super) fn cluster_join(&mut self, id: ConnId, addr: SocketAddr) {
        self.users.insert(
            id,
            User {
                name: addr.to_string(),
                addr,
                room: LOBBY_ID,
                entered: 0,
                oper: false,
                wrong_passwords: 0,
                home: Home::Local,
                waiting: Some(Waiting::Arrive),
                gone: None,
                member: false,
                in_flight: 0,
                said: 0,
                heard: 0,
                deferred: None,
            },
        );
        self.request_arrival(id, 1);
    }

    /// Offers default names `from` on for user `id`.
    fn request_arrival(&mut self, id: ConnId, from: usize) {
        let Some(user) = self.users.get(&id) else {
            return;
        };
        let base = user.addr.to_string();
        let replay = self.settings.history_replay.to_string();
        let mut args: Vec<Vec<u8>> = vec![
            uid(id).to_string().into_bytes(),
            crate::rooms::LOBBY.as_bytes().to_vec(),
            base.clone().into_bytes(),
            replay.into_bytes(),
        ];
        args.extend(default_names(&base, from));
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.eval(Pending::Arrive(id, from), |t| &t.arrive, &refs);
        }
    }

    /// A local user whose name another server gave away while this one was
    /// taken for dead: it gets a default name, told to its room as a
    /// rename, so names stay unique.
    fn request_reclaim(&mut self, id: ConnId, from: usize) {
        let Some(user) = self.users.get(&id) else {
            return;
        };
        let mut args: Vec<Vec<u8>> = vec![uid(id).to_string().into_bytes()];
        args.extend(default_names(&user.addr.to_string(), from));
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.eval(Pending::Reclaim(id, from), |t| &t.reclaim, &refs);
        }
    }

    /// A local user's departure while linked: told to Redis; the user stays
    /// in the replica (gone) until the event comes back.
    pub(super) fn cluster_leave(&mut self, id: ConnId, reason: &Leave) {
        let Some(user) = self.users.get_mut(&id) else {
            return;
        };
        user.gone = Some(Box::new(reason.clone()));
        user.waiting = None;
        let mut args = vec![uid(id).to_string()];
        args.extend(wire::gone_fields(&gone_of(reason)));
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.eval(Pending::Leave(id), |t| &t.leave, &refs);
        }
    }

    /// A chat line or action while linked.
    pub(super) fn cluster_say(&mut self, id: ConnId, room: &str, line: String, now: Now) {
        let maxlen = self.history.per_room().to_string();
        let unix = now.unix.to_string();
        let uid = uid(id).to_string();
        let mut serial = 0;
        if let Some(user) = self.users.get_mut(&id) {
            user.in_flight += 1;
            user.said += 1;
            serial = user.said;
            if user.in_flight >= CLUSTER_LINES_IN_FLIGHT {
                user.waiting = Some(Waiting::Echo);
            }
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.eval(
                Pending::Say(id, serial, room.to_string(), line.clone()),
                |t| &t.say,
                &[
                    uid.as_bytes(),
                    room.as_bytes(),
                    unix.as_bytes(),
                    line.as_bytes(),
                    maxlen.as_bytes(),
                ],
            );
        }
    }

    /// A rename that passed the local checks: Redis decides.
    pub(super) fn cluster_rename(&mut self, id: ConnId, new: &str, out: &mut impl Outbound) {
        if !self.linked() {
            out.line(id, protocol::NAMES_UNAVAILABLE);
            return;
        }
        let skel = names::skeleton(new);
        let uid = uid(id).to_string();
        if let Some(user) = self.users.get_mut(&id) {
            user.waiting = Some(Waiting::Rename(new.to_string()));
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.eval(
                Pending::Rename(id),
                |t| &t.rename,
                &[uid.as_bytes(), new.as_bytes(), skel.as_bytes()],
            );
        }
    }

    /// A move that passed the local checks.
    pub(super) fn cluster_move(&mut self, id: ConnId, room: &str) {
        let uid = uid(id).to_string();
        let replay = self.settings.history_replay.to_string();
        if let Some(user) = self.users.get_mut(&id) {
            user.waiting = Some(Waiting::Move(room.to_string()));
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.eval(
                Pending::Move(id, room.to_string()),
                |t| &t.moved,
                &[uid.as_bytes(), room.as_bytes(), replay.as_bytes()],
            );
        }
    }

    /// `/history N` while linked: read from the room's stream.
    pub(super) fn cluster_history(&mut self, id: ConnId, room: &str, n: usize) {
        if let Some(user) = self.users.get_mut(&id) {
            user.waiting = Some(Waiting::History(n));
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let key = format!("{}:history:{room}", cluster.prefix);
        cluster.calls.push(Call {
            tag: Pending::History(id, room.to_string(), n),
            args: vec![
                b"XREVRANGE".to_vec(),
                key.into_bytes(),
                b"+".to_vec(),
                b"-".to_vec(),
                b"COUNT".to_vec(),
                n.to_string().into_bytes(),
            ],
        });
    }

    /// A private message to a user of another server.
    pub(super) fn cluster_private(&mut self, to: ConnId, sender: &str, text: &str) -> bool {
        if !self.linked() {
            return false;
        }
        let Some((server, uid)) = self.home_of(to) else {
            return false;
        };
        let Some(cluster) = self.cluster.as_mut() else {
            return false;
        };
        let event = Builder::new("M")
            .field(&cluster.me)
            .field(uid)
            .field(sender)
            .field(text)
            .build();
        cluster.publish(server_channel(&cluster.prefix, &server), event);
        true
    }

    /// A kick of a user of another server.
    pub(super) fn cluster_kick(&mut self, to: ConnId, by: &str, reason: Option<&str>) {
        if !self.linked() {
            return;
        }
        let Some((server, uid)) = self.home_of(to) else {
            return;
        };
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let mut event = Builder::new("K").field(&cluster.me).field(uid).field(by);
        if let Some(reason) = reason {
            event = event.field(reason);
        }
        cluster.publish(server_channel(&cluster.prefix, &server), event.build());
    }

    /// A ban made here, for the others.
    pub(super) fn cluster_ban(&mut self, key: &AddrKey, until: Option<i64>, by: &str) {
        if !self.linked() {
            return;
        }
        let key = key.to_string();
        let until = until.map_or_else(|| "-".to_string(), |u| u.to_string());
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.eval(
                Pending::Fire,
                |t| &t.ban,
                &[key.as_bytes(), until.as_bytes(), by.as_bytes()],
            );
        }
    }

    /// An unban made here, for the others.
    pub(super) fn cluster_unban(&mut self, key: &AddrKey) {
        if !self.linked() {
            return;
        }
        let key = key.to_string();
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.eval(Pending::Fire, |t| &t.unban, &[key.as_bytes()]);
        }
    }

    /// An announcement while linked.
    pub(super) fn cluster_wall(&mut self, line: String) {
        if let Some(cluster) = self.cluster.as_mut() {
            let event = Builder::new("W").field(&cluster.me).field(&line).build();
            let channel = cluster.events.clone();
            cluster.calls.push(Call {
                tag: Pending::Wall(line),
                args: vec![
                    b"PUBLISH".to_vec(),
                    channel.into_bytes(),
                    event.into_bytes(),
                ],
            });
        }
    }

    /// The server and uid of a remote user.
    fn home_of(&self, id: ConnId) -> Option<(Arc<str>, u64)> {
        match &self.users.get(&id)?.home {
            Home::Remote { server, uid } => Some((Arc::clone(server), *uid)),
            Home::Local => None,
        }
    }

    // ----- the link ----------------------------------------------------

    /// The link came up: register again and ask for the snapshot.
    pub fn link_up(&mut self, now: Now) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        cluster.phase = Phase::Syncing;
        cluster.up_since = Some(now.instant);
        cluster.last_beat = Some(now.instant);
        cluster.resync_due = false;
        cluster.load_scripts();
        cluster.calls.push(Call {
            tag: Pending::Clock(unix_millis()),
            args: vec![b"TIME".to_vec()],
        });
        self.request_resync(false, now);
    }

    /// Registers this server, its users and bans (the `RESYNC` script);
    /// `again` while linked (see the script).
    fn request_resync(&mut self, again: bool, now: Now) {
        let ttl = HEARTBEAT_TTL.as_millis().to_string();
        let again = if again { "1" } else { "0" }.to_string();
        let mut args: Vec<String> = vec![ttl, self.next_seq.to_string(), again];
        let bans = self.bans.list(now.unix);
        args.push(bans.len().to_string());
        for (key, until) in bans {
            args.push(key.to_string());
            args.push(until.map_or_else(|| "-".to_string(), |u| u.to_string()));
        }
        for (&id, user) in &self.users {
            if user.home != Home::Local || user.gone.is_some() || !user.member {
                continue;
            }
            let Some(room) = self.rooms.get(user.room) else {
                continue;
            };
            args.push(uid(id).to_string());
            args.push(user.entered.to_string());
            args.push(room.name.clone());
            args.push(user.name.clone());
            args.push(user.addr.to_string());
            args.push(names::skeleton(&user.name));
        }
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.registering = true;
            cluster.eval(Pending::Resync, |t| &t.resync, &refs);
        }
    }

    /// The link went down (or a command could not be sent): a chat of this
    /// server's users from now on; whatever waited for Redis is done here.
    pub fn link_down(
        &mut self,
        why: &str,
        unanswered: Vec<Pending>,
        now: Now,
        out: &mut impl Outbound,
    ) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let was = cluster.phase;
        cluster.phase = Phase::Down;
        cluster.registering = false;
        cluster.up_since = None;
        if !cluster.warned {
            cluster.warned = true;
            warn!(
                "cluster: Redis at {} unreachable: {why}; chatting on with this server's users, retrying every second",
                cluster.url
            );
        } else if was != Phase::Down {
            debug!("cluster: link down again: {why}");
        }
        // What was asked of Redis and never sent is as unanswered as what
        // was sent: after it, in the order it was asked.
        let unsent: Vec<Pending> = std::mem::take(&mut cluster.calls)
            .into_iter()
            .map(|call| call.tag)
            .collect();
        // Remote users go without a word: they may well still be there.
        self.forget_remote_users(now);
        for tag in unanswered.into_iter().chain(unsent) {
            self.not_sent(tag, now, out);
        }
        // Lines answered but not echoed will not be: nobody waits for them.
        for user in self.users.values_mut() {
            if user.waiting.is_none() {
                user.in_flight = 0;
                user.heard = user.said;
            }
        }
        // Whoever still waits is served here.
        let local: Vec<ConnId> = self
            .users
            .iter()
            .filter(|(_, u)| u.waiting.is_some() || u.gone.is_some())
            .map(|(&id, _)| id)
            .collect();
        for id in local {
            self.settle_locally(id, now, out);
        }
    }

    /// A command that will get no answer: what it was for is done here.
    pub fn not_sent(&mut self, tag: Pending, now: Now, out: &mut impl Outbound) {
        match tag {
            Pending::Say(id, serial, room, line) => {
                // Its echo may have come before the link failed, its answer
                // not: then it was delivered already.
                if self.users.get(&id).is_some_and(|u| u.heard >= serial) {
                    return;
                }
                if let Some(room_id) = self.rooms.find(&room) {
                    self.say_here(room_id, &line, now.unix, out);
                }
                self.echoed(id, now, out);
            }
            Pending::Wall(line) => self.wall_here(&line, out),
            Pending::Arrive(id, _)
            | Pending::Rename(id)
            | Pending::Move(id, _)
            | Pending::Leave(id)
            | Pending::History(id, _, _) => self.settle_locally(id, now, out),
            Pending::Resync
            | Pending::Heartbeat
            | Pending::Reclaim(..)
            | Pending::Clock(_)
            | Pending::Fire => {}
        }
    }

    /// One of user `id`'s lines came back (or will not): once few enough
    /// are on their way its input goes on, and once none is, the command
    /// that waited for them runs.
    fn echoed(&mut self, id: ConnId, now: Now, out: &mut impl Outbound) {
        let Some(user) = self.users.get_mut(&id) else {
            return;
        };
        user.in_flight = user.in_flight.saturating_sub(1);
        user.heard = (user.heard + 1).min(user.said);
        if user.waiting != Some(Waiting::Echo) {
            return;
        }
        if user.deferred.is_none() {
            if user.in_flight < CLUSTER_LINES_IN_FLIGHT {
                self.resume(id);
            }
            return;
        }
        if user.in_flight > 0 {
            return;
        }
        let deferred = user.deferred.take();
        user.waiting = None;
        if let Some(text) = deferred {
            self.execute_line(id, &text, now, out);
        }
        if self.users.get(&id).is_some_and(|u| u.waiting.is_none()) {
            self.effects.push(Effect::Resume(id));
        }
    }

    /// Finishes here what user `id` waited for from Redis.
    fn settle_locally(&mut self, id: ConnId, now: Now, out: &mut impl Outbound) {
        let Some(user) = self.users.get(&id) else {
            return;
        };
        if let Some(reason) = user.gone.clone() {
            self.drop_user(id, &reason, now);
            return;
        }
        match user.waiting.clone() {
            Some(Waiting::Arrive) => {
                let addr = user.addr;
                self.users.remove(&id);
                self.join_here(id, addr, now, out);
                self.effects.push(Effect::Resume(id));
            }
            Some(Waiting::Rename(_)) => {
                out.line(id, protocol::NAMES_UNAVAILABLE);
                self.resume(id);
            }
            Some(Waiting::Move(room)) => {
                self.resume(id);
                self.move_here(id, &room, now, out);
            }
            Some(Waiting::Echo) => {
                if let Some(user) = self.users.get_mut(&id) {
                    user.in_flight = 0;
                    user.heard = user.said;
                }
                self.echoed(id, now, out);
            }
            Some(Waiting::History(n)) => {
                let room = user.room;
                self.resume(id);
                self.history_reply(id, room, n, now, out);
            }
            None => {}
        }
    }

    /// Redis answered a command.
    pub fn on_reply(&mut self, tag: Pending, reply: Reply, now: Now, out: &mut impl Outbound) {
        if reply == Reply::Int(-2) {
            debug!("cluster: Redis reached a request past its deadline: {tag:?}");
            self.not_sent(tag, now, out);
            return;
        }
        if let Reply::Error(error) = &reply {
            warn!("cluster: Redis refused a command ({tag:?}): {error}");
            if let Some(cluster) = self.cluster.as_mut() {
                if error.starts_with("NOSCRIPT")
                    && cluster
                        .reloaded
                        .is_none_or(|at| now.instant.duration_since(at) >= HEARTBEAT_EVERY)
                {
                    cluster.reloaded = Some(now.instant);
                    cluster.load_scripts();
                }
                if tag == Pending::Resync {
                    // Tried again with the next heartbeat.
                    cluster.registering = false;
                    cluster.resync_due = true;
                }
            }
            self.not_sent(tag, now, out);
            return;
        }
        match tag {
            Pending::Arrive(id, from) => {
                if reply == Reply::Nil && self.users.get(&id).is_some_and(|u| u.gone.is_none()) {
                    self.request_arrival(id, from + NAME_CANDIDATES);
                }
            }
            Pending::Rename(id) => match reply {
                Reply::Int(1) => {}
                Reply::Int(0) => {
                    if let Some(Waiting::Rename(new)) =
                        self.users.get(&id).and_then(|u| u.waiting.clone())
                    {
                        out.line(id, &protocol::name_taken(&new));
                    }
                    self.resume(id);
                }
                _ => self.settle_locally(id, now, out),
            },
            Pending::Move(id, _) => {
                if reply != Reply::Int(1) {
                    self.settle_locally(id, now, out);
                }
            }
            Pending::History(id, room, n) => {
                self.resume(id);
                let lines = stream_lines(&reply);
                let block = history::block(&lines, now.unix);
                if block.is_empty() {
                    out.line(id, &protocol::no_history(&room));
                } else {
                    let _ = n;
                    self.reply_block(id, &block, out);
                }
            }
            Pending::Resync => {
                if let Some(cluster) = self.cluster.as_mut() {
                    cluster.registering = false;
                }
                let Reply::Array(uids) = reply else {
                    return;
                };
                if !uids.is_empty() {
                    warn!(
                        "cluster: {} of this server's users have names another server gave away meanwhile; they get default names",
                        uids.len()
                    );
                }
                for uid in uids {
                    if let Reply::Bulk(text) = uid
                        && let Some(raw) =
                            std::str::from_utf8(&text).ok().and_then(|t| t.parse().ok())
                    {
                        self.request_reclaim(ConnId::from_u64(raw), 1);
                    }
                }
            }
            Pending::Clock(sent) => {
                if let (Some(redis), Some(cluster)) = (redis_millis(&reply), self.cluster.as_mut())
                {
                    cluster.clock_offset = Some(redis - sent);
                }
            }
            Pending::Reclaim(id, from) => {
                if reply == Reply::Nil {
                    self.request_reclaim(id, from + NAME_CANDIDATES);
                }
            }
            Pending::Heartbeat => {
                if reply == Reply::Int(0)
                    && self
                        .cluster()
                        .is_some_and(|c| c.phase == Phase::Up && !c.registering)
                {
                    warn!("cluster: the others took this server for dead; registering again");
                    self.request_resync(true, now);
                }
            }
            Pending::Leave(_) | Pending::Say(..) | Pending::Wall(_) | Pending::Fire => {}
        }
    }

    /// Once per tick: the heartbeat, and the search for dead servers.
    pub fn cluster_tick(&mut self, now: Now) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if cluster.phase == Phase::Down {
            return;
        }
        if cluster
            .last_beat
            .is_some_and(|at| now.instant.duration_since(at) < HEARTBEAT_EVERY)
        {
            return;
        }
        cluster.last_beat = Some(now.instant);
        let ttl = HEARTBEAT_TTL.as_millis().to_string();
        cluster.eval(Pending::Heartbeat, |t| &t.heartbeat, &[ttl.as_bytes()]);
        if std::mem::take(&mut cluster.resync_due) {
            let again = cluster.phase == Phase::Up;
            self.request_resync(again, now);
            return;
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if cluster.phase == Phase::Up
            && cluster
                .up_since
                .is_some_and(|at| now.instant.duration_since(at) >= REAP_GRACE)
        {
            cluster.eval(Pending::Fire, |t| &t.reap, &[]);
        }
    }

    /// At shutdown: this server's users and names go from Redis at once.
    pub fn cluster_quit(&mut self) {
        if !self.linked() {
            return;
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.eval(Pending::Fire, |t| &t.quit, &[]);
        }
    }

    // ----- events: what every server applies ---------------------------

    /// A message from the channel (or this server's own).
    pub fn on_message(&mut self, payload: &[u8], now: Now, out: &mut impl Outbound) {
        let event = match wire::parse(payload) {
            Ok(event) => event,
            Err(error) => {
                warn!("cluster: {error}");
                return;
            }
        };
        let Some(me) = self.cluster.as_ref().map(|c| Arc::clone(&c.me)) else {
            return;
        };
        let mine = |server: &str| server == &*me;
        match event {
            Event::Arrive { user, history } => {
                self.apply_arrive(&user, &history, mine(user.server), now, out)
            }
            Event::Rename {
                server,
                uid,
                old,
                new,
            } => {
                if let Some(id) = self.find_user(server, uid, mine(server)) {
                    self.apply_rename(id, old, new, out);
                }
            }
            Event::Move {
                server,
                uid,
                seq,
                from,
                to,
                history,
            } => {
                if let Some(id) = self.find_user(server, uid, mine(server)) {
                    self.apply_move(id, seq, from, to, &history, now, out);
                }
            }
            Event::Leave {
                server,
                uid,
                seq,
                why,
            } => {
                self.bump_seq(seq);
                if let Some(id) = self.find_user(server, uid, mine(server)) {
                    let line = self
                        .users
                        .get(&id)
                        .map(|u| protocol::left(&u.name, departure_of(&why)));
                    self.remove_user(id, line, seq, now);
                    if let Some(cluster) = self.cluster.as_mut() {
                        cluster.remote.remove(&(Arc::from(server), uid));
                    }
                }
            }
            Event::Say {
                server,
                uid,
                room,
                unix,
                line,
            } => {
                if let Some(room_id) = self.rooms.find(room) {
                    self.say_here(room_id, line, unix, out);
                } else {
                    self.history.push(room, unix, line);
                    self.history_lines += 1;
                }
                if mine(server) {
                    self.echoed(ConnId::from_u64(uid), now, out);
                }
            }
            Event::Wall { line, .. } => self.wall_here(line, out),
            Event::Private {
                uid, sender, text, ..
            } => {
                if let Some(id) = self.find_user(&me, uid, true)
                    && self.users.get(&id).is_none_or(|u| u.gone.is_none())
                {
                    self.flush_presence(out);
                    out.line(id, &protocol::private(sender, text));
                }
            }
            Event::Kick {
                uid, by, reason, ..
            } => {
                if let Some(id) = self.find_user(&me, uid, true) {
                    if let Some(user) = self.users.get(&id) {
                        warn!(
                            "operator {by} (on another server) kicked {} ({})",
                            user.name, user.addr
                        );
                    }
                    self.kick_one(id, by, reason, out);
                }
            }
            Event::Ban {
                server,
                key,
                until,
                by,
            } => {
                if !mine(server) {
                    self.apply_ban(key, until, by, now, out);
                }
            }
            Event::Unban { server, key } => {
                if !mine(server)
                    && let Some(key) = AddrKey::parse(key)
                {
                    self.bans.unban(key, now.unix);
                }
            }
            Event::Lost { server, seq } => {
                if mine(server) {
                    if self.cluster().is_some_and(|c| !c.registering) {
                        warn!("cluster: the others took this server for dead; registering again");
                        self.request_resync(true, now);
                    }
                } else {
                    info!("cluster: server {server} lost; its users have left");
                    self.drop_server(server, Some(Gone::Because(protocol::SERVER_LOST)), seq, now);
                }
            }
            Event::Quit { server, seq } => {
                if !mine(server) {
                    info!("cluster: server {server} shut down; its users have left");
                    self.drop_server(server, Some(Gone::Plain), seq, now);
                }
            }
            Event::Sync { server, users } => {
                if !mine(server) {
                    self.replace_server(server, &users, now);
                }
            }
            Event::Snapshot { seq, bans, users } => self.apply_snapshot(seq, &bans, &users, now),
        }
    }

    /// The id here of user `uid` of `server`.
    fn find_user(&self, server: &str, uid: u64, mine: bool) -> Option<ConnId> {
        let id = if mine {
            ConnId::from_u64(uid)
        } else {
            let cluster = self.cluster.as_ref()?;
            *cluster.remote.get(&(Arc::from(server), uid))?
        };
        self.users.contains_key(&id).then_some(id)
    }

    /// Keeps the local sequence numbers above everything seen.
    fn bump_seq(&mut self, seq: Seq) {
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// `A`: a user arrived, here or elsewhere.
    fn apply_arrive(
        &mut self,
        record: &UserRecord<'_>,
        history: &[(i64, &str)],
        mine: bool,
        now: Now,
        out: &mut impl Outbound,
    ) {
        self.bump_seq(record.seq);
        if !mine {
            self.insert_remote(record, true, now, out);
            return;
        }
        let id = ConnId::from_u64(record.uid);
        let Some(user) = self.users.get_mut(&id) else {
            return;
        };
        if user.member {
            return;
        }
        user.name = record.name.to_string();
        user.waiting = None;
        let gone = user.gone.is_some();
        self.names.insert(record.name, id);
        if !gone {
            out.line(id, &protocol::you_are(record.name));
            self.effects.push(Effect::Resume(id));
        }
        let room = self.room_named(record.room);
        let lines = lines_of(history);
        self.enter_at(id, room, record.seq, true, Replay::Lines(&lines), now, out);
    }

    /// The room called `name`, made if it does not exist.
    fn room_named(&mut self, name: &str) -> crate::rooms::RoomId {
        match self.rooms.find(name) {
            Some(room) => room,
            None => self.rooms.create(name),
        }
    }

    /// A user of another server put in the replica, in its room at its
    /// place of entry; its arrival told to the room if `announce`.
    fn insert_remote(
        &mut self,
        record: &UserRecord<'_>,
        announce: bool,
        now: Now,
        out: &mut impl Outbound,
    ) {
        let Ok(addr) = record.addr.parse::<SocketAddr>() else {
            warn!("cluster: a user with a bad address {:?}", record.addr);
            return;
        };
        self.bump_seq(record.seq);
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let (id, new) = cluster.remote_id(record.server, record.uid);
        if !new {
            return;
        }
        let server = cluster.intern(record.server);
        let room = self.room_named(record.room);
        self.users.insert(
            id,
            User {
                name: record.name.to_string(),
                addr,
                room,
                entered: 0,
                oper: false,
                wrong_passwords: 0,
                home: Home::Remote {
                    server,
                    uid: record.uid,
                },
                waiting: None,
                gone: None,
                member: false,
                in_flight: 0,
                said: 0,
                heard: 0,
                deferred: None,
            },
        );
        self.names.insert(record.name, id);
        self.enter_at(id, room, record.seq, announce, Replay::None, now, out);
    }

    /// `R`: a rename, told to the room.
    fn apply_rename(&mut self, id: ConnId, old: &str, new: &str, out: &mut impl Outbound) {
        let Some(user) = self.users.get_mut(&id) else {
            return;
        };
        let waited = matches!(&user.waiting, Some(Waiting::Rename(asked)) if asked == new);
        if user.name != old {
            if waited {
                self.resume(id);
            }
            return;
        }
        user.name = new.to_string();
        let room = user.room;
        self.names.remove(old, id);
        self.names.insert(new, id);
        info!("{old} is now known as {new}");
        self.flush_presence(out);
        let line = protocol::renamed(old, new);
        if let Some(room) = self.rooms.get(room) {
            for member in room.members.iter().filter(|m| !m.is_remote()) {
                out.line(member, &line);
            }
        }
        if waited {
            self.resume(id);
        }
    }

    /// `J`: a move between rooms.
    #[allow(clippy::too_many_arguments)]
    fn apply_move(
        &mut self,
        id: ConnId,
        seq: Seq,
        from: &str,
        to: &str,
        history: &[(i64, &str)],
        now: Now,
        out: &mut impl Outbound,
    ) {
        self.bump_seq(seq);
        let Some(user) = self.users.get(&id) else {
            return;
        };
        // A remote user's move applies only from the room it is in here (a
        // stale or repeated event changes nothing); a local user's own move
        // always applies, from wherever it is: the event is what every
        // other server did.
        let old = if user.home == Home::Local {
            Some(user.room).filter(|_| user.member)
        } else {
            self.rooms.find(from).filter(|&r| r == user.room)
        };
        let Some(old) = old else {
            if matches!(user.waiting, Some(Waiting::Move(_))) {
                self.resume(id);
            }
            return;
        };
        let local = user.home == Home::Local && user.gone.is_none();
        let (name, entered) = (user.name.clone(), user.entered);
        let line = || protocol::left(&name, Departure::For(to));
        self.exit(id, old, entered, now, Some(line), seq);
        let target = self.room_named(to);
        let replay = if local {
            self.resume(id);
            out.line(id, &protocol::now_in(to));
            Replay::Lines(&lines_of(history))
        } else {
            Replay::None
        };
        self.enter_at(id, target, seq, true, replay, now, out);
    }

    /// Takes a user out of the replica: its name, its place in its room,
    /// with a departure notice made by `line` (none: silently).
    fn remove_user(&mut self, id: ConnId, line: Option<String>, seq: Seq, now: Now) {
        let Some(user) = self.users.remove(&id) else {
            return;
        };
        self.names.remove(&user.name, id);
        if user.member {
            self.exit(
                id,
                user.room,
                user.entered,
                now,
                line.map(|l| move || l),
                seq,
            );
        }
    }

    /// Takes every remote user out of the replica, without a word.
    fn forget_remote_users(&mut self, now: Now) {
        let remote: Vec<ConnId> = self
            .users
            .iter()
            .filter(|(_, u)| u.home != Home::Local)
            .map(|(&id, _)| id)
            .collect();
        for id in remote {
            self.remove_user(id, None, 0, now);
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.remote.clear();
            cluster.servers.clear();
        }
    }

    /// Removes user `id` from the replica, its departure for `reason`
    /// announced as happening now.
    fn drop_user(&mut self, id: ConnId, reason: &Leave, now: Now) {
        let seq = self.take_seq();
        let line = self
            .users
            .get(&id)
            .map(|u| protocol::left(&u.name, reason.departure()));
        self.remove_user(id, line, seq, now);
    }

    /// Every user of `server` leaves, announced with `why` (or silently).
    fn drop_server(&mut self, server: &str, why: Option<Gone<'_>>, seq: Seq, now: Now) {
        self.bump_seq(seq);
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let ids: Vec<((Arc<str>, u64), ConnId)> = cluster
            .remote
            .iter()
            .filter(|((s, _), _)| &**s == server)
            .map(|(k, &id)| (k.clone(), id))
            .collect();
        for (key, _) in &ids {
            cluster.remote.remove(key);
        }
        cluster.servers.remove(server);
        for (_, id) in ids {
            let line = why.as_ref().and_then(|why| {
                self.users
                    .get(&id)
                    .map(|u| protocol::left(&u.name, departure_of(why)))
            });
            self.remove_user(id, line, seq, now);
        }
    }

    /// `Y`: `server` registered (again); its users replace what this
    /// server knew of them, without notices.
    fn replace_server(&mut self, server: &str, users: &[UserRecord<'_>], now: Now) {
        self.drop_server(server, None, 0, now);
        for record in users {
            self.insert_remote(record, false, now, &mut super::NoOutbound);
        }
    }

    /// `Z`: everyone else, and every ban; the replica is whole again.
    fn apply_snapshot(
        &mut self,
        seq: Seq,
        bans: &[(&str, Option<i64>)],
        users: &[UserRecord<'_>],
        now: Now,
    ) {
        self.bump_seq(seq);
        self.forget_remote_users(now);
        for record in users {
            self.insert_remote(record, false, now, &mut super::NoOutbound);
        }
        // This server's own bans stand; Redis's fill in the others.
        let held: Vec<AddrKey> = self
            .bans
            .list(now.unix)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for &(key, until) in bans {
            if let Some(key) = AddrKey::parse(key)
                && !held.contains(&key)
            {
                let _ = self.bans.ban(key, until, now.unix);
            }
        }
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if cluster.phase == Phase::Syncing {
            cluster.phase = Phase::Up;
            cluster.warned = false;
            let servers = cluster.servers.len() + 1;
            info!(
                "cluster: linked to Redis at {} as server {} ({servers} servers, {} users)",
                cluster.url,
                cluster.me,
                self.users.len()
            );
        }
    }

    /// `B` from another server: the ban applies here too.
    fn apply_ban(
        &mut self,
        key: &str,
        until: Option<i64>,
        by: &str,
        now: Now,
        out: &mut impl Outbound,
    ) {
        let Some(key) = AddrKey::parse(key) else {
            return;
        };
        if let Err(full) = self.bans.ban(key, until, now.unix) {
            warn!("cluster: {full}");
        }
        let victims: Vec<ConnId> = self
            .users
            .iter()
            .filter(|(_, u)| {
                u.home == Home::Local
                    && u.gone.is_none()
                    && key.covers(u.addr.ip())
                    && !self.security.exempt.contains(u.addr.ip())
            })
            .map(|(&id, _)| id)
            .collect();
        for victim in victims {
            self.kick_one(victim, by, Some(super::BANNED_REASON), out);
        }
    }
}

/// How a room is replayed to the user entering it.
pub(super) enum Replay<'a> {
    /// From this server's memory (and `--db`).
    Memory,
    /// These lines (from Redis, with the entry).
    Lines(&'a [Line]),
    /// None: a remote user, whose own server replays.
    None,
}

/// An `XREVRANGE` reply as history lines, oldest first.
fn stream_lines(reply: &Reply) -> Vec<Line> {
    let Reply::Array(entries) = reply else {
        return Vec::new();
    };
    let mut lines: Vec<Line> = entries
        .iter()
        .filter_map(|entry| {
            let Reply::Array(parts) = entry else {
                return None;
            };
            let Some(Reply::Array(fields)) = parts.get(1) else {
                return None;
            };
            let mut at = 0;
            let mut text = None;
            for pair in fields.chunks(2) {
                if let [Reply::Bulk(name), Reply::Bulk(value)] = pair {
                    match name.as_slice() {
                        b"t" => at = std::str::from_utf8(value).ok()?.parse().ok()?,
                        b"l" => text = Some(String::from_utf8_lossy(value).into_owned()),
                        _ => {}
                    }
                }
            }
            Some(Line::new(at, text?))
        })
        .collect();
    lines.reverse();
    lines
}
