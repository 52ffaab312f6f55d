//! The chat itself: users, their names, rooms, presence and history, as
//! plain code with no sockets.
//!
//! A command comes in as a [`Command`] from a user; what it produces goes
//! out two ways. Lines to queue go straight to an [`Outbound`] (the server
//! implements it with the connections' outboxes, the tests with a
//! recording list), so a broadcast to a thousand users is a thousand queue
//! calls and nothing in between. Everything else the server must do — close
//! a connection, charge flood tokens for a long reply — comes back as an
//! [`Effect`] for the loop to apply. So every rule of PROTOCOL.md's tables
//! is a unit test here, without a `TcpStream`.
//!
//! ```text
//!  loop ── join / execute / leave / flush_presence ──> Chat ──> Outbound (outboxes)
//!    ^                                                   |
//!    └──────────── take_effects (disconnect, charge) <───┘
//! ```
//!
//! Presence notices are batched per room and flushed at each tick and just
//! before any line a user causes reaches another user (see
//! [`crate::presence`]); history is kept per room in memory and, with
//! `--db`, written to the [`Store`] once per tick.

use crate::command::Command;
use crate::history::{self, History};
use crate::id::ConnId;
use crate::iplimit::{AddrKey, Bans, Exempt, ban_expiry};
use crate::metrics::DisconnectReason;
use crate::names::{self, NameIndex};
use crate::oper::{MAX_WRONG_PASSWORDS, OperAttempt, OperGate};
use crate::presence::{Notice, Seq};
use crate::protocol::{self, Departure};
use crate::rooms::{LOBBY_ID, RoomId, Rooms};
use crate::store::Store;
use crate::tuning::REPLY_LINES_PER_TOKEN;
use log::{debug, info, warn};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Where the chat's lines go: one outbox per user.
pub trait Outbound {
    /// Queues one line for user `to`. A user who cannot take it is the
    /// implementor's business (it is cut off as too slow).
    fn line(&mut self, to: ConnId, line: &str);
    /// Queues a reply of several lines (`who`, `/rooms`, `/history`,
    /// `/help`) for user `to`, as one block.
    fn block(&mut self, to: ConnId, lines: &[String]);
}

/// Why a user left: decides the departure notice and the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leave {
    /// The client closed its side (EOF).
    Closed,
    /// The socket failed (reset, broken pipe, …).
    Failed(String),
    /// `/quit`, with its optional reason.
    Quit(Option<String>),
    /// No line for `--idle-timeout` seconds.
    Idle,
    /// More than `--max-outbound` bytes queued.
    TooSlow,
    /// Kicked by an operator (a ban kicks with the reason `banned`).
    Kicked {
        /// The operator's name.
        by: String,
        /// The operator's reason.
        reason: Option<String>,
    },
    /// The third wrong `/oper` password on one connection.
    WrongPasswords,
    /// A TLS connection refused at connect got its answer after the
    /// handshake (never a user; not a disconnect in the metrics).
    Refused,
    /// The server is shutting down; nobody is told of anyone leaving.
    Shutdown,
}

impl Leave {
    /// The `reason` label of `chatd_disconnects_total`.
    pub fn metric(&self) -> DisconnectReason {
        match self {
            Leave::Closed => DisconnectReason::Closed,
            Leave::Failed(_) => DisconnectReason::Error,
            Leave::Quit(_) => DisconnectReason::Quit,
            Leave::Idle => DisconnectReason::Idle,
            Leave::TooSlow => DisconnectReason::TooSlow,
            Leave::Kicked { .. } | Leave::WrongPasswords => DisconnectReason::Kicked,
            Leave::Refused => DisconnectReason::Closed,
            Leave::Shutdown => DisconnectReason::Shutdown,
        }
    }

    /// How the departure notice says it.
    pub fn departure(&self) -> Departure<'_> {
        match self {
            Leave::Quit(Some(reason)) => Departure::Because(reason),
            Leave::Idle => Departure::Because("idle timeout"),
            Leave::TooSlow => Departure::Because("too slow"),
            Leave::Kicked { by, reason } => Departure::Kicked {
                by,
                reason: reason.as_deref(),
            },
            Leave::Closed
            | Leave::Failed(_)
            | Leave::Quit(None)
            | Leave::WrongPasswords
            | Leave::Refused
            | Leave::Shutdown => Departure::Plain,
        }
    }

    /// Whether the queued output is still worth a last write.
    pub fn flush_on_close(&self) -> bool {
        !matches!(self, Leave::TooSlow | Leave::Failed(_))
    }
}

impl std::fmt::Display for Leave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leave::Closed => write!(f, "closed by client"),
            Leave::Failed(error) => write!(f, "socket error: {error}"),
            Leave::Quit(Some(reason)) => write!(f, "quit ({reason})"),
            Leave::Quit(None) => write!(f, "quit"),
            Leave::Idle => write!(f, "idle timeout"),
            Leave::TooSlow => write!(f, "too slow"),
            Leave::Kicked { by, reason: None } => write!(f, "kicked by {by}"),
            Leave::Kicked {
                by,
                reason: Some(reason),
            } => write!(f, "kicked by {by} ({reason})"),
            Leave::WrongPasswords => write!(f, "three wrong operator passwords"),
            Leave::Refused => write!(f, "refused"),
            Leave::Shutdown => write!(f, "server shutdown"),
        }
    }
}

/// What the server loop must do after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Close this user's connection (after a last flush, unless the reason
    /// says otherwise) and tell the chat through [`Chat::leave`].
    Disconnect(ConnId, Leave),
    /// The user was sent a reply of this many lines: it costs flood tokens
    /// beyond the one its line took (see [`Chat::reply_cost`]).
    Charge(ConnId, u32),
    /// The user waited for Redis (see [`Chat::is_waiting`]) and may go on:
    /// its input, left unread meanwhile, is to be read again.
    Resume(ConnId),
}

/// The time, as the chat needs it: monotonic for limits, wall-clock (UTC
/// unix seconds) for history.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// For rate limits and timeouts.
    pub instant: Instant,
    /// For history times.
    pub unix: i64,
}

impl Now {
    /// The current time, read from the system clocks.
    pub fn read() -> Now {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Now {
            instant: Instant::now(),
            unix,
        }
    }
}

/// The chat's knobs (from the command line).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Lines of history replayed on entering a room (`--history`); 0 = none.
    pub history_replay: usize,
    /// Rooms that may exist at once, the lobby included (`--max-rooms`).
    pub max_rooms: usize,
    /// Lines of history each room keeps in memory.
    pub history_per_room: usize,
    /// Bytes of history all rooms keep in memory together.
    pub history_max_bytes: usize,
}

/// Who may run operator commands, and what bans may not touch.
#[derive(Debug)]
pub struct Security {
    /// The `--oper-password-file` password and the memory of recent tries.
    pub oper: OperGate,
    /// `--ip-exempt`: addresses bans never apply to.
    pub exempt: Exempt,
}

impl Default for Security {
    /// No operators; loopback exempt.
    fn default() -> Self {
        Security {
            oper: OperGate::disabled(),
            exempt: Exempt::default(),
        }
    }
}

/// The default minutes of `/ban` (PROTOCOL.md: "default 60").
pub const DEFAULT_BAN_MINUTES: u64 = 60;

/// The kick reason of a ban (PROTOCOL.md: "the kicked users' reason is
/// `banned`").
pub const BANNED_REASON: &str = "banned";

/// The default `/history` length (PROTOCOL.md: "without N, 20 whatever
/// `--history` is").
pub const DEFAULT_HISTORY_REQUEST: usize = 20;

/// Where a user is connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// To this server.
    Local,
    /// To another server of the cluster.
    Remote {
        /// That server's id.
        server: std::sync::Arc<str>,
        /// The user's id there.
        uid: u64,
    },
}

/// What a local user waits for from Redis (its input unread meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// Its name and its arrival.
    Arrive,
    /// The verdict on this new name.
    Rename(String),
    /// Its move into this room.
    Move(String),
    /// A `/history` block.
    History(usize),
    /// The echoes of its own lines: too many on their way, or a command
    /// (kept in `deferred`) whose reply must come after them.
    Echo,
}

/// Lines for nobody: entries put in without anyone to tell.
pub(crate) struct NoOutbound;

impl Outbound for NoOutbound {
    fn line(&mut self, _: ConnId, _: &str) {}
    fn block(&mut self, _: ConnId, _: &[String]) {}
}

/// One connected user.
#[derive(Debug)]
pub struct User {
    /// The current name.
    pub name: String,
    /// Where the user connects from.
    pub addr: SocketAddr,
    /// The room the user is in.
    room: RoomId,
    /// The sequence number of the user's entry into that room.
    entered: Seq,
    /// An operator, after a successful `/oper`.
    oper: bool,
    /// Wrong `/oper` passwords so far on this connection.
    wrong_passwords: u32,
    /// This server, or another of the cluster.
    home: Home,
    /// What the user waits for from Redis, if anything.
    waiting: Option<Waiting>,
    /// Left, and why (its connection is closed); in the chat until its
    /// departure comes back from Redis.
    gone: Option<Box<Leave>>,
    /// In its room's member list (a newcomer waiting for its name is not).
    member: bool,
    /// Its chat lines sent to Redis and not back yet.
    in_flight: u32,
    /// Its chat lines sent to Redis so far (their serial numbers).
    said: u64,
    /// How many of them came back: lines come back in the order they were
    /// sent, so this is the serial of the last one back.
    heard: u64,
    /// A command that came while its lines were on their way, run once
    /// they are back (at most one: the user's input waits meanwhile).
    deferred: Option<Box<str>>,
}

/// Users, names, rooms, presence batches and history.
#[derive(Debug)]
pub struct Chat {
    /// Every connected user.
    users: HashMap<ConnId, User>,
    /// Names of connected users, for uniqueness and `/msg`.
    names: NameIndex<ConnId>,
    /// The lobby and every room with users.
    rooms: Rooms,
    /// Rooms with a presence batch to flush (each listed once).
    dirty: Vec<RoomId>,
    /// Every room's recent lines.
    history: History,
    /// With `--db`: where history is kept for good.
    store: Option<Store>,
    /// Operators' password and the addresses bans may not touch.
    security: Security,
    /// Banned addresses.
    bans: Bans,
    /// The next event sequence number (entries and departures).
    next_seq: Seq,
    /// What the loop must do next.
    effects: Vec<Effect>,
    /// Reused for presence flushes, so they do not allocate.
    notices: Vec<Notice>,
    /// Lines added to history so far (a metric).
    history_lines: u64,
    /// The knobs.
    settings: Settings,
    /// With `--cluster`: the other servers, through Redis.
    cluster: Option<cluster::Cluster>,
}

impl Chat {
    /// An empty chat: just the lobby; history (and bans) also go to
    /// `store`, if any, and the bans kept there apply at once.
    pub fn new(settings: Settings, store: Option<Store>, security: Security) -> Chat {
        let bans = load_bans(store.as_ref());
        Chat {
            users: HashMap::new(),
            names: NameIndex::new(),
            rooms: Rooms::new(),
            dirty: Vec::new(),
            history: History::new(settings.history_per_room, settings.history_max_bytes),
            store,
            security,
            bans,
            next_seq: 0,
            effects: Vec::new(),
            notices: Vec::new(),
            history_lines: 0,
            settings,
            cluster: None,
        }
    }

    /// How many users are connected.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when nobody is connected.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Rooms that have users.
    pub fn occupied_rooms(&self) -> usize {
        self.rooms.occupied().count()
    }

    /// Lines added to history so far.
    pub fn history_lines(&self) -> u64 {
        self.history_lines
    }

    /// The user `id`, if connected.
    pub fn user(&self, id: ConnId) -> Option<&User> {
        self.users.get(&id)
    }

    /// A newcomer from `addr`: named after its address (made unique),
    /// greeted, shown the lobby's history, announced to the lobby.
    pub fn join(&mut self, id: ConnId, addr: SocketAddr, now: Now, out: &mut impl Outbound) {
        if self.linked() {
            self.cluster_join(id, addr);
        } else {
            self.join_here(id, addr, now, out);
        }
    }

    /// [`join`](Self::join) decided by this server alone.
    fn join_here(&mut self, id: ConnId, addr: SocketAddr, now: Now, out: &mut impl Outbound) {
        let name = self.names.default_name(&addr.to_string());
        self.names.insert(&name, id);
        out.line(id, &protocol::you_are(&name));
        self.users.insert(
            id,
            User {
                name,
                addr,
                room: LOBBY_ID,
                entered: 0,
                oper: false,
                wrong_passwords: 0,
                home: Home::Local,
                waiting: None,
                gone: None,
                member: false,
                in_flight: 0,
                said: 0,
                heard: 0,
                deferred: None,
            },
        );
        self.enter(id, LOBBY_ID, now, out);
    }

    /// Takes user `id` out of the chat: name freed, departure batched in its
    /// room (except at shutdown). Nothing more is queued for it.
    pub fn leave(&mut self, id: ConnId, reason: &Leave, now: Now) {
        if *reason != Leave::Shutdown
            && self.linked()
            && self.users.get(&id).is_some_and(|u| u.home == Home::Local)
        {
            self.cluster_leave(id, reason);
            return;
        }
        let Some(user) = self.users.remove(&id) else {
            return;
        };
        if !user.member {
            return;
        }
        self.names.remove(&user.name, id);
        let seq = self.take_seq();
        let line = || protocol::left(&user.name, reason.departure());
        if *reason == Leave::Shutdown {
            self.exit(
                id,
                user.room,
                user.entered,
                now,
                None::<fn() -> String>,
                seq,
            );
        } else {
            self.exit(id, user.room, user.entered, now, Some(line), seq);
        }
    }

    /// Parses and carries out one line of user `id`. In a cluster, a
    /// command other than a chat line, typed while the user's own lines are
    /// on their way through Redis, waits for them (the user's input with
    /// it), so its reply comes after them.
    pub fn execute_line(&mut self, id: ConnId, text: &str, now: Now, out: &mut impl Outbound) {
        let command = crate::command::parse(text);
        if self.cluster.is_some()
            && !matches!(command, Command::Chat(_) | Command::Me(_) | Command::Empty)
            && let Some(user) = self.users.get_mut(&id)
            && user.in_flight > 0
        {
            user.deferred = Some(text.into());
            user.waiting = Some(Waiting::Echo);
            return;
        }
        self.execute(id, command, now, out);
    }

    /// Carries out `command` for user `id`.
    pub fn execute(&mut self, id: ConnId, command: Command<'_>, now: Now, out: &mut impl Outbound) {
        let Some(user) = self.users.get(&id) else {
            return;
        };
        match command {
            Command::Empty => {}
            Command::Chat(text) => {
                let line = protocol::chat(&user.name, text);
                self.say(id, user.room, line, now, out);
            }
            Command::Me(text) => {
                let line = protocol::action(&user.name, text);
                self.say(id, user.room, line, now, out);
            }
            _ if user.gone.is_some() || !user.member => {}
            Command::Who => self.who(id, out),
            Command::Rename(new) => self.rename(id, new, out),
            Command::Msg { to, text } => self.private(id, to, text, out),
            Command::Join(room) => self.join_room(id, room, now, out),
            Command::Rooms => self.list_rooms(id, out),
            Command::History(n) => {
                let room = user.room;
                let n = n.unwrap_or(DEFAULT_HISTORY_REQUEST);
                match self.rooms.get(room).map(|r| r.name.clone()) {
                    Some(name) if self.linked() => self.cluster_history(id, &name, n),
                    _ => self.history_reply(id, room, n, now, out),
                }
            }
            Command::Help => {
                let lines: Vec<String> = protocol::HELP.iter().map(|l| l.to_string()).collect();
                self.reply_block(id, &lines, out);
            }
            Command::Quit(reason) => {
                out.line(id, protocol::BYE);
                let reason = Leave::Quit(reason.map(str::to_string));
                self.effects.push(Effect::Disconnect(id, reason));
            }
            Command::Oper(password) => self.oper(id, password, now, out),
            Command::Kick { .. }
            | Command::Ban { .. }
            | Command::Unban(_)
            | Command::Bans
            | Command::Wall(_)
                if !user.oper =>
            {
                out.line(id, protocol::PERMISSION_DENIED)
            }
            Command::Kick { name, reason } => self.kick(id, name, reason, out),
            Command::Ban { target, minutes } => self.ban(id, target, minutes, now, out),
            Command::Unban(address) => self.unban(id, address, now, out),
            Command::Bans => self.list_bans(id, now, out),
            Command::Wall(text) => self.wall(id, text, out),
            Command::Usage(usage) => out.line(id, usage),
            Command::Unknown(word) => out.line(id, &protocol::unknown_command(word)),
        }
    }

    /// True if connections from `ip` are refused: banned and not exempt.
    pub fn is_banned(&mut self, ip: IpAddr, now_unix: i64) -> bool {
        !self.security.exempt.contains(ip) && self.bans.is_banned(ip, now_unix)
    }

    /// Moves what the loop must do into `into`.
    pub fn take_effects(&mut self, into: &mut Vec<Effect>) {
        into.append(&mut self.effects);
    }

    /// Sends every room's batched arrival and departure notices.
    pub fn flush_presence(&mut self, out: &mut impl Outbound) {
        let mut notices = std::mem::take(&mut self.notices);
        for room_id in std::mem::take(&mut self.dirty) {
            let Some(room) = self.rooms.get_mut(room_id) else {
                continue;
            };
            room.dirty = false;
            room.presence.take_notices(&mut notices);
            let departed = std::mem::take(&mut room.departed);
            for notice in notices.drain(..) {
                let skip: HashSet<ConnId> = if notice.not_for_departed {
                    departed.iter().copied().collect()
                } else {
                    HashSet::new()
                };
                for member in room.members.entered_before(notice.heard_by_joined_before) {
                    if !member.is_remote() && !skip.contains(&member) {
                        out.line(member, &notice.line);
                    }
                }
            }
        }
        self.notices = notices;
    }

    /// The flood tokens a reply of `lines` lines costs beyond the one its
    /// command line took: PROTOCOL.md's "N/100 tokens, at least 1".
    pub fn reply_cost(lines: usize) -> u32 {
        let tokens = (lines / REPLY_LINES_PER_TOKEN).max(1);
        u32::try_from(tokens - 1).unwrap_or(u32::MAX)
    }

    /// A chat line or action from a member of `room`: announced presence
    /// first, then to everyone in the room, then into its history.
    fn say(
        &mut self,
        id: ConnId,
        room_id: RoomId,
        line: String,
        now: Now,
        out: &mut impl Outbound,
    ) {
        if self.linked() {
            if let Some(room) = self.rooms.get(room_id).map(|r| r.name.clone()) {
                self.cluster_say(id, &room, line, now);
            }
            return;
        }
        self.say_here(room_id, &line, now.unix, out);
    }

    /// A line said in `room_id` at `unix`, delivered to its users on this
    /// server (all of them, alone; in a cluster, the others deliver to
    /// theirs), then into its history.
    fn say_here(&mut self, room_id: RoomId, line: &str, unix: i64, out: &mut impl Outbound) {
        debug!("{line}");
        self.flush_presence(out);
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        for member in room.members.iter() {
            if !member.is_remote() {
                out.line(member, line);
            }
        }
        self.history.push(&room.name, unix, line);
        if let Some(store) = self.store.as_mut() {
            store.queue_line(&room.name, unix, line);
        }
        self.history_lines += 1;
    }

    /// `who`: the room's users in order of entry, after pending presence so
    /// nobody is listed before their arrival was announced.
    fn who(&mut self, id: ConnId, out: &mut impl Outbound) {
        self.flush_presence(out);
        let Some(room) = self.users.get(&id).and_then(|u| self.rooms.get(u.room)) else {
            return;
        };
        let mut lines = Vec::with_capacity(room.members.len() + 1);
        lines.push(protocol::who_head(room.members.len(), &room.name));
        for member in room.members.iter() {
            if let Some(user) = self.users.get(&member) {
                lines.push(protocol::who_line(&user.name, member == id));
            }
        }
        self.reply_block(id, &lines, out);
    }

    /// `/nick`, `/name`, `rename|`: the rules, then the room is told.
    fn rename(&mut self, id: ConnId, new: &str, out: &mut impl Outbound) {
        let Some(user) = self.users.get(&id) else {
            return;
        };
        if user.name == new {
            out.line(id, &protocol::already_named(new));
            return;
        }
        if names::validate(new).is_err() {
            out.line(id, &protocol::invalid_name(new));
            return;
        }
        if self.names.check(new, id).is_err() {
            out.line(id, &protocol::name_taken(new));
            return;
        }
        if self.cluster.is_some() {
            self.cluster_rename(id, new, out);
            return;
        }
        let old = user.name.clone();
        let room = user.room;
        self.names.remove(&old, id);
        self.names.insert(new, id);
        if let Some(user) = self.users.get_mut(&id) {
            user.name = new.to_string();
        }
        info!("{old} is now known as {new}");
        self.flush_presence(out);
        let line = protocol::renamed(&old, new);
        if let Some(room) = self.rooms.get(room) {
            for member in room.members.iter().filter(|m| !m.is_remote()) {
                out.line(member, &line);
            }
        }
    }

    /// `/msg NAME TEXT`: to a user in any room.
    fn private(&mut self, id: ConnId, to: &str, text: &str, out: &mut impl Outbound) {
        let recipient = self
            .names
            .find(to)
            .and_then(|r| self.users.get(&r).map(|u| (r, u.name.clone())));
        let (Some((recipient, recipient_name)), Some(sender)) = (recipient, self.users.get(&id))
        else {
            out.line(id, &protocol::no_such_user(to));
            return;
        };
        let sender_name = sender.name.clone();
        debug!("{sender_name} -> {recipient_name}: {text}");
        self.flush_presence(out);
        if recipient.is_remote() {
            if !self.cluster_private(recipient, &sender_name, text) {
                out.line(id, &protocol::no_such_user(to));
                return;
            }
        } else {
            out.line(recipient, &protocol::private(&sender_name, text));
        }
        out.line(id, &protocol::private_sent(&recipient_name, text));
    }

    /// `/join ROOM`.
    fn join_room(&mut self, id: ConnId, typed: &str, now: Now, out: &mut impl Outbound) {
        let typed = typed.strip_prefix('#').unwrap_or(typed);
        if names::validate_room(typed).is_err() {
            out.line(id, &protocol::invalid_room(typed));
            return;
        }
        let name = typed.to_lowercase();
        let Some(user) = self.users.get(&id) else {
            return;
        };
        let old = user.room;
        let target = self.rooms.find(&name);
        if target == Some(old) {
            out.line(id, &protocol::already_in(&name));
            return;
        }
        if target.is_none() {
            let old_frees =
                old != LOBBY_ID && self.rooms.get(old).is_some_and(|r| r.members.len() == 1);
            let after = self.rooms.len() + 1 - usize::from(old_frees);
            if after > self.settings.max_rooms {
                out.line(id, &protocol::too_many_rooms(self.settings.max_rooms));
                return;
            }
        }
        if self.linked() {
            self.cluster_move(id, &name);
            return;
        }
        self.move_here(id, &name, now, out);
    }

    /// Moves user `id` from its room to `name` (checked), here alone.
    fn move_here(&mut self, id: ConnId, name: &str, now: Now, out: &mut impl Outbound) {
        let Some(user) = self.users.get(&id) else {
            return;
        };
        let (old, entered) = (user.room, user.entered);
        let user_name = user.name.clone();
        let seq = self.take_seq();
        let line = || protocol::left(&user_name, Departure::For(name));
        self.exit(id, old, entered, now, Some(line), seq);
        let target = match self.rooms.find(name) {
            Some(room) => room,
            None => self.rooms.create(name),
        };
        out.line(id, &protocol::now_in(name));
        self.enter(id, target, now, out);
    }

    /// `/rooms`: rooms with users, most users first, ties by name.
    fn list_rooms(&mut self, id: ConnId, out: &mut impl Outbound) {
        let here = self.users.get(&id).map(|u| u.room);
        let mut rooms: Vec<(usize, &str, bool)> = self
            .rooms
            .occupied()
            .map(|room| {
                let is_here = here
                    .and_then(|h| self.rooms.get(h))
                    .map(|r| r.name.as_str())
                    == Some(room.name.as_str());
                (room.members.len(), room.name.as_str(), is_here)
            })
            .collect();
        rooms.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let mut lines = Vec::with_capacity(rooms.len() + 1);
        lines.push(protocol::rooms_head(rooms.len()));
        for (users, name, is_here) in rooms {
            lines.push(protocol::rooms_line(name, users, is_here));
        }
        self.reply_block(id, &lines, out);
    }

    /// `/history [N]`, and the replay on entering a room.
    fn history_reply(
        &mut self,
        id: ConnId,
        room_id: RoomId,
        n: usize,
        now: Now,
        out: &mut impl Outbound,
    ) {
        let Some(room) = self.rooms.get(room_id) else {
            return;
        };
        let lines = self.history_block(&room.name, n, now);
        if lines.is_empty() {
            out.line(id, &protocol::no_history(&room.name));
        } else {
            self.reply_block(id, &lines, out);
        }
    }

    /// The history block of the last `n` lines of `room`, or nothing when
    /// the room has no history. Memory answers when it holds enough; past
    /// that, the database does (it has everything ever stored).
    fn history_block(&self, room: &str, n: usize, now: Now) -> Vec<String> {
        if !self.history.covers(room, n)
            && let Some(store) = &self.store
        {
            match store.recent(room, n) {
                Ok(lines) => return history::block(&lines, now.unix),
                Err(error) => warn!("history of #{room}: {error}"),
            }
        }
        history::block(self.history.last(room, n), now.unix)
    }

    /// Once per tick: writes the history lines of the last tick to the
    /// database, in one transaction.
    pub fn write_history(&mut self) {
        if let Some(store) = self.store.as_mut() {
            store.flush();
        }
    }

    /// After a restart, a room's history is in the database only: the
    /// first entry loads its recent lines into memory.
    fn load_history(&mut self, room: &str) {
        let Some(store) = &self.store else {
            return;
        };
        if self.history.is_loaded(room) {
            return;
        }
        match store.recent(room, self.history.per_room()) {
            Ok(lines) => self.history.replace_room(room, lines),
            Err(error) => warn!("loading the history of #{room}: {error}"),
        }
    }

    /// `/oper PASSWORD`: at most one try per address per 10 s; the third
    /// wrong password on a connection closes it.
    fn oper(&mut self, id: ConnId, password: &str, now: Now, out: &mut impl Outbound) {
        let Some(user) = self.users.get_mut(&id) else {
            return;
        };
        let key = AddrKey::from_ip(user.addr.ip());
        let attempt = self.security.oper.try_password(key, password, now.instant);
        out.line(id, attempt.reply());
        match attempt {
            OperAttempt::Granted => {
                user.oper = true;
                warn!("{} ({}) is now an operator", user.name, user.addr);
            }
            OperAttempt::Wrong => {
                user.wrong_passwords += 1;
                info!(
                    "{} ({}) gave a wrong operator password ({} of {MAX_WRONG_PASSWORDS})",
                    user.name, user.addr, user.wrong_passwords
                );
                if user.wrong_passwords >= MAX_WRONG_PASSWORDS {
                    self.effects
                        .push(Effect::Disconnect(id, Leave::WrongPasswords));
                }
            }
            OperAttempt::TooSoon | OperAttempt::Disabled => {}
        }
    }

    /// `/kick NAME [REASON]`, by an operator.
    fn kick(&mut self, id: ConnId, name: &str, reason: Option<&str>, out: &mut impl Outbound) {
        let Some(target) = self.names.find(name) else {
            out.line(id, &protocol::no_such_user(name));
            return;
        };
        let (Some(oper), Some(victim)) = (self.users.get(&id), self.users.get(&target)) else {
            return;
        };
        warn!(
            "operator {} ({}) kicked {} ({}){}",
            oper.name,
            oper.addr,
            victim.name,
            victim.addr,
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
        let (by, victim_name) = (oper.name.clone(), victim.name.clone());
        if target.is_remote() {
            self.cluster_kick(target, &by, reason);
        } else {
            self.kick_one(target, &by, reason, out);
        }
        out.line(id, &protocol::kicked(&victim_name));
    }

    /// Tells `target` it was kicked by `by` and has the loop close it.
    fn kick_one(
        &mut self,
        target: ConnId,
        by: &str,
        reason: Option<&str>,
        out: &mut impl Outbound,
    ) -> Option<()> {
        if self.users.get(&target)?.gone.is_some() {
            return None;
        }
        out.line(target, &protocol::kicked_you(by, reason));
        self.effects.push(Effect::Disconnect(
            target,
            Leave::Kicked {
                by: by.to_string(),
                reason: reason.map(str::to_string),
            },
        ));
        Some(())
    }

    /// `/ban NAME|ADDRESS [MINUTES]`, by an operator: every connection from
    /// that address (its /64 for IPv6) is kicked and new ones refused.
    fn ban(
        &mut self,
        id: ConnId,
        target: &str,
        minutes: Option<u64>,
        now: Now,
        out: &mut impl Outbound,
    ) {
        let ip = match target.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => match self.names.find(target).and_then(|t| self.users.get(&t)) {
                Some(user) => user.addr.ip(),
                None => {
                    out.line(id, &protocol::no_such_user(target));
                    return;
                }
            },
        };
        if self.security.exempt.contains(ip) {
            out.line(id, &protocol::exempt_from_bans(&ip.to_string()));
            return;
        }
        let key = AddrKey::from_ip(ip);
        let minutes = minutes.unwrap_or(DEFAULT_BAN_MINUTES);
        let until = ban_expiry(minutes, now.unix);
        if let Err(full) = self.bans.ban(key, until, now.unix) {
            out.line(id, &full.to_string());
            return;
        }
        if let Some(store) = self.store.as_mut() {
            store.save_ban(&key.to_string(), until);
        }
        let Some(oper) = self.users.get(&id) else {
            return;
        };
        let by = oper.name.clone();
        warn!(
            "operator {by} ({}) banned {key} for {}",
            oper.addr,
            if until.is_some() {
                format!("{minutes} min")
            } else {
                "good".to_string()
            }
        );
        out.line(id, &protocol::banned(&key.to_string(), minutes));
        self.cluster_ban(&key, until, &by);
        let victims: Vec<ConnId> = self
            .users
            .iter()
            .filter(|(_, user)| user.home == Home::Local && key.covers(user.addr.ip()))
            .map(|(&victim, _)| victim)
            .collect();
        for victim in victims {
            self.kick_one(victim, &by, Some(BANNED_REASON), out);
        }
    }

    /// `/unban ADDRESS`, by an operator.
    fn unban(&mut self, id: ConnId, address: &str, now: Now, out: &mut impl Outbound) {
        let Some(key) = AddrKey::parse(address) else {
            out.line(id, &protocol::not_banned(address));
            return;
        };
        if !self.bans.unban(key, now.unix) {
            out.line(id, &protocol::not_banned(&key.to_string()));
            return;
        }
        if let Some(store) = self.store.as_mut() {
            store.delete_ban(&key.to_string());
        }
        self.cluster_unban(&key);
        if let Some(oper) = self.users.get(&id) {
            warn!("operator {} ({}) unbanned {key}", oper.name, oper.addr);
        }
        out.line(id, &protocol::unbanned(&key.to_string()));
    }

    /// `/bans`, by an operator: soonest expiry first, unlimited ones last.
    fn list_bans(&mut self, id: ConnId, now: Now, out: &mut impl Outbound) {
        let bans = self.bans.list(now.unix);
        let mut lines = Vec::with_capacity(bans.len() + 1);
        lines.push(protocol::bans_head(bans.len()));
        for (key, until) in bans {
            let until = until.map(history::format_until);
            lines.push(protocol::bans_line(&key.to_string(), until.as_deref()));
        }
        self.reply_block(id, &lines, out);
    }

    /// `/wall TEXT`, by an operator: to everyone in every room.
    fn wall(&mut self, id: ConnId, text: &str, out: &mut impl Outbound) {
        let Some(oper) = self.users.get(&id) else {
            return;
        };
        warn!("operator {} ({}) announced: {text}", oper.name, oper.addr);
        let line = protocol::announcement(&oper.name, text);
        if self.linked() {
            self.cluster_wall(line);
        } else {
            self.wall_here(&line, out);
        }
    }

    /// An announcement to every user of this server.
    fn wall_here(&mut self, line: &str, out: &mut impl Outbound) {
        self.flush_presence(out);
        for (&id, user) in &self.users {
            if user.home == Home::Local && user.member && user.gone.is_none() {
                out.line(id, line);
            }
        }
    }

    /// Queues a multi-line reply and charges for its length.
    fn reply_block(&mut self, id: ConnId, lines: &[String], out: &mut impl Outbound) {
        out.block(id, lines);
        let cost = Chat::reply_cost(lines.len());
        if cost > 0 {
            self.effects.push(Effect::Charge(id, cost));
        }
    }

    /// Puts user `id` into room `room_id` as a new event: history replay to
    /// it, arrival batched for the others.
    fn enter(&mut self, id: ConnId, room_id: RoomId, now: Now, out: &mut impl Outbound) {
        let seq = self.take_seq();
        self.enter_at(id, room_id, seq, true, cluster::Replay::Memory, now, out);
    }

    /// Puts user `id` into room `room_id` as event `seq`; its arrival is
    /// batched for the others if `announce`, and the room's lines replayed
    /// to it as `replay` says.
    #[allow(clippy::too_many_arguments)]
    fn enter_at(
        &mut self,
        id: ConnId,
        room_id: RoomId,
        seq: Seq,
        announce: bool,
        replay: cluster::Replay<'_>,
        now: Now,
        out: &mut impl Outbound,
    ) {
        let Some(user) = self.users.get_mut(&id) else {
            return;
        };
        user.room = room_id;
        user.entered = seq;
        user.member = true;
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        room.members.push(seq, id);
        if announce {
            room.presence.arrived(seq, &user.name);
            if !room.dirty {
                room.dirty = true;
                self.dirty.push(room_id);
            }
        }
        let room_name = room.name.clone();
        if room.members.len() == 1 {
            self.load_history(&room_name);
            self.history.room_occupied(&room_name);
        }
        let count = self.settings.history_replay;
        let block = match replay {
            _ if count == 0 => Vec::new(),
            cluster::Replay::Memory => self.history_block(&room_name, count, now),
            cluster::Replay::Lines(lines) => history::block(lines, now.unix),
            cluster::Replay::None => Vec::new(),
        };
        if !block.is_empty() {
            out.block(id, &block);
        }
    }

    /// Takes the member who entered `room_id` as `entered` out of it, with a
    /// departure notice made by `line` (none at shutdown) as event `seq`. A
    /// room other than the lobby that empties goes away (its history stays).
    fn exit(
        &mut self,
        id: ConnId,
        room_id: RoomId,
        entered: Seq,
        now: Now,
        line: Option<impl FnOnce() -> String>,
        seq: Seq,
    ) {
        let Some(room) = self.rooms.get_mut(room_id) else {
            return;
        };
        room.members.remove(entered, id);
        if let Some(line) = line {
            room.presence.left(seq, line);
            room.departed.push(id);
            if !room.dirty {
                room.dirty = true;
                self.dirty.push(room_id);
            }
        }
        if room.members.is_empty() {
            self.history.room_emptied(&room.name, now.unix);
            self.rooms.remove_if_empty(room_id);
        }
    }

    fn take_seq(&mut self) -> Seq {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

/// The bans kept in the database, less those that expired meanwhile.
fn load_bans(store: Option<&Store>) -> Bans {
    let mut bans = Bans::new();
    let Some(store) = store else {
        return bans;
    };
    let now = Now::read().unix;
    match store.load_bans() {
        Ok(saved) => {
            for (text, until) in saved {
                let Some(key) = AddrKey::parse(&text) else {
                    warn!("ignoring a stored ban of {text:?}: not an address");
                    continue;
                };
                if until.is_some_and(|until| until <= now) {
                    continue;
                }
                if let Err(full) = bans.ban(key, until, now) {
                    warn!("ignoring stored bans: {full}");
                    break;
                }
            }
        }
        Err(error) => warn!("could not load bans: {error}"),
    }
    bans
}

pub mod cluster;
pub mod scripts;
pub mod wire;

#[cfg(test)]
mod tests;
