//! Unit tests of the chat state: every command and room rule without a socket.
//!
//! A [`Rec`] records every line the chat queues, in order, with its
//! recipient; the helpers below connect users, run their lines through the
//! real command parser and take out what one user was sent. Time is
//! injected ([`at`]), so history times are exact.

use super::*;
use crate::command;
use std::time::Instant;

/// A fixed wall-clock time for the tests (2023-11-14 22:13:20 UTC).
const T0: i64 = 1_700_000_000;

/// Records every queued line, in order.
#[derive(Debug, Default)]
struct Rec {
    /// (recipient, line), in the order they were queued.
    lines: Vec<(ConnId, String)>,
    /// (recipient, lines) of every [`Outbound::block`] call.
    blocks: Vec<(ConnId, usize)>,
}

impl Outbound for Rec {
    fn line(&mut self, to: ConnId, line: &str) {
        self.lines.push((to, line.to_string()));
    }

    fn block(&mut self, to: ConnId, lines: &[String]) {
        self.blocks.push((to, lines.len()));
        for line in lines {
            self.lines.push((to, line.clone()));
        }
    }
}

impl Rec {
    /// Takes out everything queued for `id` so far, in order.
    fn take(&mut self, id: ConnId) -> Vec<String> {
        let mut mine = Vec::new();
        self.lines.retain(|(to, line)| {
            if *to == id {
                mine.push(line.clone());
                false
            } else {
                true
            }
        });
        mine
    }

    /// Forgets everything queued so far.
    fn clear(&mut self) {
        self.lines.clear();
        self.blocks.clear();
    }

    /// Asserts that nothing at all is queued for anyone.
    fn assert_quiet(&self) {
        assert!(self.lines.is_empty(), "unexpected lines: {:?}", self.lines);
    }
}

/// The chat, its recorder and a clock.
struct World {
    chat: Chat,
    out: Rec,
    now: Now,
    next_slot: usize,
    next_port: u16,
}

fn settings() -> Settings {
    Settings {
        history_replay: 20,
        max_rooms: 1000,
        history_per_room: 1000,
        history_max_bytes: 64 << 20,
    }
}

/// The time `secs` seconds after [`T0`].
fn at(secs: i64) -> Now {
    Now {
        instant: Instant::now(),
        unix: T0 + secs,
    }
}

impl World {
    fn new() -> World {
        World::with(settings())
    }

    fn with(settings: Settings) -> World {
        World {
            chat: Chat::new(settings, None, Security::default()),
            out: Rec::default(),
            now: at(0),
            next_slot: 0,
            next_port: 40000,
        }
    }

    /// A new connection from 127.0.0.1 on a port of its own, greeting and
    /// lobby history taken out (the arrival is still batched).
    fn connect(&mut self) -> ConnId {
        let port = self.next_port;
        self.next_port += 1;
        let (id, _) = self.connect_from(&format!("127.0.0.1:{port}"));
        id
    }

    /// A new connection from `addr`; returns its id and every line it was
    /// sent on joining (greeting, lobby history).
    fn connect_from(&mut self, addr: &str) -> (ConnId, Vec<String>) {
        let id = ConnId::new(self.next_slot, 7);
        self.next_slot += 1;
        let addr: SocketAddr = addr.parse().unwrap();
        self.chat.join(id, addr, self.now, &mut self.out);
        let lines = self.out.take(id);
        (id, lines)
    }

    /// Connects `n` users and flushes their arrivals; nothing is left queued.
    fn users(&mut self, n: usize) -> Vec<ConnId> {
        let ids: Vec<ConnId> = (0..n).map(|_| self.connect()).collect();
        self.settle();
        ids
    }

    /// Runs one client line (through the real parser) for `id`.
    fn send(&mut self, id: ConnId, line: &str) {
        self.chat
            .execute(id, command::parse(line), self.now, &mut self.out);
    }

    /// Runs a line for `id` and returns what `id` was sent.
    fn ask(&mut self, id: ConnId, line: &str) -> Vec<String> {
        self.send(id, line);
        self.out.take(id)
    }

    /// Flushes presence and forgets every line and effect.
    fn settle(&mut self) {
        self.chat.flush_presence(&mut self.out);
        self.out.clear();
        self.effects();
    }

    /// Flushes presence batches.
    fn flush(&mut self) {
        self.chat.flush_presence(&mut self.out);
    }

    /// The effects queued since the last call.
    fn effects(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.chat.take_effects(&mut effects);
        effects
    }

    fn name(&self, id: ConnId) -> String {
        self.chat.user(id).expect("connected").name.clone()
    }

    /// Renames `id` and forgets the announcement.
    fn rename(&mut self, id: ConnId, name: &str) {
        let old = self.name(id);
        let got = self.ask(id, &format!("/nick {name}"));
        assert_eq!(got, vec![format!("{old} is now known as {name}")]);
        self.settle();
    }

    /// Moves `id` to `room` and forgets every line queued so far, the
    /// move's included.
    fn join_room(&mut self, id: ConnId, room: &str) {
        self.out.take(id);
        let got = self.ask(id, &format!("/join {room}"));
        let want = format!("You are now in #{}", room.to_lowercase());
        assert_eq!(got.first(), Some(&want), "{got:?}");
        self.settle();
    }
}

/// The expected `[TIME] LINE` for a line sent at `sent`, shown at `now`.
fn hist(sent: Now, now: Now, line: &str) -> String {
    format!("[{}] {line}", history::format_time(sent.unix, now.unix))
}

/// True for `[..:..] REST` (the `HH:MM` shape, whatever the digits).
fn has_time_shape(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 8
        && b[0] == b'['
        && b[1..3].iter().all(u8::is_ascii_digit)
        && b[3] == b':'
        && b[4..6].iter().all(u8::is_ascii_digit)
        && &b[6..8] == b"] "
}

// ---- connect: greeting, lobby history, arrival ----

#[test]
fn join_greets_with_the_address_and_batches_the_arrival() {
    let mut w = World::new();
    let (a, lines) = w.connect_from("127.0.0.1:5000");
    assert_eq!(lines, vec!["You are 127.0.0.1:5000"]);
    w.flush();
    w.out.assert_quiet();
    let (b, lines) = w.connect_from("[::1]:6000");
    assert_eq!(lines, vec!["You are [::1]:6000"]);
    w.out.assert_quiet();
    w.flush();
    assert_eq!(w.out.take(a), vec!["[::1]:6000 has arrived"]);
    assert!(
        w.out.take(b).is_empty(),
        "nobody hears of their own arrival"
    );
    w.out.assert_quiet();
    assert_eq!(w.chat.len(), 2);
    assert_eq!(w.chat.occupied_rooms(), 1);
}

#[test]
fn default_names_are_unique_with_tilde_suffixes() {
    let mut w = World::new();
    let (a, la) = w.connect_from("127.0.0.1:5000");
    let (b, lb) = w.connect_from("127.0.0.1:5000");
    let (c, lc) = w.connect_from("127.0.0.1:5000");
    assert_eq!(la, vec!["You are 127.0.0.1:5000"]);
    assert_eq!(lb, vec!["You are 127.0.0.1:5000~2"]);
    assert_eq!(lc, vec!["You are 127.0.0.1:5000~3"]);
    w.flush();
    assert_eq!(
        w.out.take(a),
        vec![
            "127.0.0.1:5000~2 has arrived",
            "127.0.0.1:5000~3 has arrived"
        ]
    );
    assert_eq!(w.out.take(b), vec!["127.0.0.1:5000~3 has arrived"]);
    assert!(w.out.take(c).is_empty());
    // A freed default name is given again.
    w.chat.leave(a, &Leave::Closed, w.now);
    let (_, ld) = w.connect_from("127.0.0.1:5000");
    assert_eq!(ld, vec!["You are 127.0.0.1:5000"]);
}

#[test]
fn renaming_one_of_two_same_address_users_keeps_the_other_reachable() {
    // The reported bug: both got the same name, and a rename of one took
    // the other out of the name index.
    let mut w = World::new();
    let (a, _) = w.connect_from("127.0.0.1:5000");
    let (b, _) = w.connect_from("127.0.0.1:5000");
    let c = w.connect();
    w.settle();
    assert_ne!(w.name(a), w.name(b));
    w.rename(a, "alice");
    let got = w.ask(c, "/msg 127.0.0.1:5000~2 still there?");
    assert_eq!(got, vec!["[to 127.0.0.1:5000~2] still there?"]);
    let c_name = w.name(c);
    assert_eq!(
        w.out.take(b),
        vec![format!("[private] {c_name}: still there?")]
    );
    // And the other way round: b renames, a's new name and the freed
    // address name behave.
    w.rename(b, "bob");
    assert_eq!(w.ask(c, "/msg ALICE hi"), vec!["[to alice] hi"]);
    assert_eq!(w.out.take(a), vec![format!("[private] {c_name}: hi")]);
    assert_eq!(
        w.ask(c, "/msg 127.0.0.1:5000 hi"),
        vec!["No such user: 127.0.0.1:5000"]
    );
    assert_eq!(
        w.ask(c, "/msg 127.0.0.1:5000~2 hi"),
        vec!["No such user: 127.0.0.1:5000~2"]
    );
}

#[test]
fn join_replays_the_lobby_history_after_the_greeting() {
    let mut w = World::new();
    let a = w.users(1)[0];
    let name = w.name(a);
    let said = w.now;
    w.send(a, "hello");
    w.send(a, "/me waves");
    w.settle();
    w.now = at(90);
    let (_, lines) = w.connect_from("127.0.0.1:5999");
    assert_eq!(
        lines,
        vec![
            "You are 127.0.0.1:5999".to_string(),
            "2 lines of history:".to_string(),
            hist(said, w.now, &format!("{name}: hello")),
            hist(said, w.now, &format!("* {name} waves")),
            "End of history".to_string(),
        ]
    );
    assert!(has_time_shape(&lines[2]), "{}", lines[2]);
}

#[test]
fn replay_on_entry_is_the_last_history_lines_and_zero_means_none() {
    let mut w = World::with(Settings {
        history_replay: 2,
        ..settings()
    });
    let a = w.users(1)[0];
    let name = w.name(a);
    for i in 0..5 {
        w.send(a, &format!("line {i}"));
    }
    w.settle();
    let (_, lines) = w.connect_from("127.0.0.1:5999");
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[1], "2 lines of history:");
    assert!(
        lines[2].ends_with(&format!("] {name}: line 3")),
        "{lines:?}"
    );
    assert!(
        lines[3].ends_with(&format!("] {name}: line 4")),
        "{lines:?}"
    );
    assert_eq!(lines[4], "End of history");

    let mut w = World::with(Settings {
        history_replay: 1,
        ..settings()
    });
    let a = w.users(1)[0];
    w.send(a, "only");
    w.send(a, "last");
    w.settle();
    let (_, lines) = w.connect_from("127.0.0.1:5999");
    assert_eq!(lines[1], "1 line of history:", "{lines:?}");
    assert_eq!(lines[3], "End of history");

    let mut w = World::with(Settings {
        history_replay: 0,
        ..settings()
    });
    let a = w.users(1)[0];
    w.send(a, "not replayed");
    w.settle();
    let (b, lines) = w.connect_from("127.0.0.1:5999");
    assert_eq!(lines, vec!["You are 127.0.0.1:5999"]);
    // `/history` still works, 20 by default whatever --history is.
    let got = w.ask(b, "/history");
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], "1 line of history:");
    let b_room = w.ask(b, "/join quiet");
    assert_eq!(b_room, vec!["You are now in #quiet"]);
}

#[test]
fn no_history_block_when_the_lobby_has_none() {
    let mut w = World::new();
    let (_, lines) = w.connect_from("127.0.0.1:5000");
    assert_eq!(lines, vec!["You are 127.0.0.1:5000"]);
    assert!(w.out.blocks.is_empty());
}

// ---- chat, /me, rename, /msg ----

#[test]
fn chat_and_actions_reach_only_the_senders_room_sender_included() {
    let mut w = World::new();
    let [a, b, c, d] = w.users(4)[..] else {
        unreachable!()
    };
    w.join_room(c, "rust");
    w.join_room(d, "rust");
    let an = w.name(a);
    w.send(a, "hello lobby");
    assert_eq!(w.out.take(a), vec![format!("{an}: hello lobby")]);
    assert_eq!(w.out.take(b), vec![format!("{an}: hello lobby")]);
    w.out.assert_quiet();
    let cn = w.name(c);
    w.send(c, "/me likes rust");
    assert_eq!(w.out.take(c), vec![format!("* {cn} likes rust")]);
    assert_eq!(w.out.take(d), vec![format!("* {cn} likes rust")]);
    w.out.assert_quiet();
    assert_eq!(w.ask(a, "/me"), vec!["Usage: /me TEXT"]);
    w.out.assert_quiet();
}

#[test]
fn a_newcomers_first_line_follows_its_arrival() {
    let mut w = World::new();
    let a = w.users(1)[0];
    let b = w.connect();
    let bn = w.name(b);
    w.send(b, "first!");
    assert_eq!(
        w.out.take(a),
        vec![format!("{bn} has arrived"), format!("{bn}: first!")]
    );
    assert_eq!(w.out.take(b), vec![format!("{bn}: first!")]);
    // And a private message too.
    let c = w.connect();
    let cn = w.name(c);
    let an = w.name(a);
    w.send(c, &format!("/msg {an} psst"));
    assert_eq!(
        w.out.take(a),
        vec![format!("{cn} has arrived"), format!("[private] {cn}: psst")]
    );
    // And a rename.
    let d = w.connect();
    let dn = w.name(d);
    w.send(d, "/nick Dee");
    assert_eq!(
        w.out.take(a),
        vec![
            format!("{dn} has arrived"),
            format!("{dn} is now known as Dee")
        ]
    );
}

#[test]
fn rename_rules_and_the_room_only_broadcast() {
    let mut w = World::new();
    let [a, b, c] = w.users(3)[..] else {
        unreachable!()
    };
    w.join_room(c, "rust");
    let old = w.name(a);
    w.send(a, "/nick Alice");
    let line = format!("{old} is now known as Alice");
    assert_eq!(w.out.take(a), vec![line.clone()]);
    assert_eq!(w.out.take(b), vec![line]);
    w.out.assert_quiet();
    // Names are unique across rooms, without regard to case.
    assert_eq!(w.ask(c, "/nick alice"), vec!["Name alice is taken"]);
    assert_eq!(w.ask(c, "rename|ALICE"), vec!["Name ALICE is taken"]);
    assert_eq!(w.ask(a, "/nick Alice"), vec!["You are already Alice"]);
    let long = "a".repeat(33);
    for bad in ["a b", "x:1", "bob!", long.as_str()] {
        assert_eq!(
            w.ask(c, &format!("/nick {bad}")),
            vec![format!("Invalid name: {bad} (1-32 letters, digits, _ - .)")]
        );
    }
    // A change of case is allowed and announced.
    w.send(a, "/name alice");
    assert_eq!(w.out.take(a), vec!["Alice is now known as alice"]);
    assert_eq!(w.out.take(b), vec!["Alice is now known as alice"]);
    w.out.assert_quiet();
    // In #rust, only #rust hears it.
    let cold = w.name(c);
    w.send(c, "/nick Carol");
    assert_eq!(w.out.take(c), vec![format!("{cold} is now known as Carol")]);
    w.out.assert_quiet();
    // The old name is free again.
    w.send(b, &format!("/msg {old} hi"));
    assert_eq!(w.out.take(b), vec![format!("No such user: {old}")]);
    assert_eq!(w.ask(b, "/nick Carol"), vec!["Name Carol is taken"]);
    assert_eq!(w.ask(b, "/msg"), vec!["Usage: /msg NAME TEXT"]);
    assert_eq!(w.ask(b, "/nick"), vec!["Usage: /nick NAME"]);
    assert_eq!(w.ask(b, "rename|"), vec!["Usage: rename|NAME"]);
}

#[test]
fn a_rename_is_not_history() {
    let mut w = World::new();
    let a = w.users(1)[0];
    w.rename(a, "alice");
    assert_eq!(w.ask(a, "/history"), vec!["No history in #lobby"]);
}

#[test]
fn private_messages_reach_any_room_with_the_recipients_spelling() {
    let mut w = World::new();
    let [a, b, c] = w.users(3)[..] else {
        unreachable!()
    };
    w.join_room(b, "far");
    w.rename(b, "Bob");
    let an = w.name(a);
    w.send(a, "/msg bOB   psst,  secret");
    assert_eq!(
        w.out.take(b),
        vec![format!("[private] {an}: psst,  secret")]
    );
    assert_eq!(w.out.take(a), vec!["[to Bob] psst,  secret"]);
    w.out.assert_quiet();
    assert_eq!(w.ask(a, "/msg nobody hi"), vec!["No such user: nobody"]);
    w.out.assert_quiet();
    // Private messages are not history, in either room.
    assert_eq!(w.ask(b, "/history"), vec!["No history in #far"]);
    assert_eq!(w.ask(c, "/history"), vec!["No history in #lobby"]);
}

// ---- /join ----

#[test]
fn join_moves_with_or_without_hash_in_any_case() {
    let mut w = World::new();
    let [a, b, c] = w.users(3)[..] else {
        unreachable!()
    };
    assert_eq!(w.ask(a, "/join rust"), vec!["You are now in #rust"]);
    w.settle();
    assert_eq!(w.ask(b, "/join #Rust"), vec!["You are now in #rust"]);
    w.settle();
    assert_eq!(w.ask(c, "/JOIN RUST"), vec!["You are now in #rust"]);
    w.settle();
    assert_eq!(w.ask(c, "/join #rUST"), vec!["You are already in #rust"]);
    assert_eq!(w.ask(c, "/join rust"), vec!["You are already in #rust"]);
    assert_eq!(w.chat.occupied_rooms(), 1, "the lobby is empty");
    let got = w.ask(c, "/who");
    assert_eq!(got[0], "3 users in #rust:");
    assert_eq!(w.ask(c, "/join"), vec!["Usage: /join ROOM"]);
    w.out.assert_quiet();
}

#[test]
fn already_in_the_lobby() {
    let mut w = World::new();
    let a = w.users(1)[0];
    assert_eq!(w.ask(a, "/join #LOBBY"), vec!["You are already in #lobby"]);
    assert_eq!(w.ask(a, "/join lobby"), vec!["You are already in #lobby"]);
    w.out.assert_quiet();
}

#[test]
fn invalid_room_names_repeat_the_name_as_typed_without_the_hash() {
    let mut w = World::new();
    let a = w.users(1)[0];
    let long = "r".repeat(33);
    for (typed, shown) in [
        ("a b", "a b"),
        ("#a b", "a b"),
        ("#Bad!", "Bad!"),
        ("x:1", "x:1"),
        ("#x/y", "x/y"),
        (long.as_str(), long.as_str()),
    ] {
        assert_eq!(
            w.ask(a, &format!("/join {typed}")),
            vec![format!(
                "Invalid room name: {shown} (1-32 letters, digits, _ - .)"
            )],
            "/join {typed}"
        );
    }
    // 32 characters, and Unicode letters, are fine.
    let ok = "é".repeat(32);
    assert_eq!(
        w.ask(a, &format!("/join {ok}")),
        vec![format!("You are now in #{ok}")]
    );
    assert_eq!(
        w.ask(a, "/join Zoë_1.x-Ü"),
        vec!["You are now in #zoë_1.x-ü"]
    );
    assert_eq!(w.ask(a, "/join 日本"), vec!["You are now in #日本"]);
}

#[test]
fn join_tells_the_old_room_and_the_new_one() {
    let mut w = World::new();
    let [a, b, c, d] = w.users(4)[..] else {
        unreachable!()
    };
    w.join_room(c, "rust");
    w.join_room(d, "rust");
    let bn = w.name(b);
    assert_eq!(w.ask(b, "/join rust"), vec!["You are now in #rust"]);
    w.out.assert_quiet();
    w.flush();
    assert_eq!(w.out.take(a), vec![format!("{bn} has left for #rust")]);
    assert_eq!(w.out.take(c), vec![format!("{bn} has arrived")]);
    assert_eq!(w.out.take(d), vec![format!("{bn} has arrived")]);
    assert!(w.out.take(b).is_empty());
    w.out.assert_quiet();
    // Back to the lobby: #rust hears where b went.
    w.send(b, "/join lobby");
    assert_eq!(w.out.take(b), vec!["You are now in #lobby"]);
    w.flush();
    assert_eq!(w.out.take(a), vec![format!("{bn} has arrived")]);
    assert_eq!(w.out.take(c), vec![format!("{bn} has left for #lobby")]);
    assert_eq!(w.out.take(d), vec![format!("{bn} has left for #lobby")]);
    w.out.assert_quiet();
}

#[test]
fn join_replays_the_new_rooms_history_after_you_are_now_in() {
    let mut w = World::new();
    let [a, b] = w.users(2)[..] else {
        unreachable!()
    };
    w.join_room(a, "rust");
    let an = w.name(a);
    let said = w.now;
    w.send(a, "borrowck");
    w.settle();
    w.now = at(300);
    let got = w.ask(b, "/join rust");
    assert_eq!(
        got,
        vec![
            "You are now in #rust".to_string(),
            "1 line of history:".to_string(),
            hist(said, w.now, &format!("{an}: borrowck")),
            "End of history".to_string(),
        ]
    );
    assert_eq!(w.out.blocks, vec![(b, 3)], "the history is one block");
}

#[test]
fn an_emptied_room_goes_away_but_its_history_stays() {
    let mut w = World::new();
    let [a, b] = w.users(2)[..] else {
        unreachable!()
    };
    w.join_room(a, "tmp");
    let an = w.name(a);
    w.send(a, "remember me");
    w.settle();
    w.join_room(a, "lobby");
    assert_eq!(w.chat.occupied_rooms(), 1);
    let rooms = w.ask(b, "/rooms");
    assert_eq!(rooms, vec!["1 room:", "  #lobby (2 users) (you are here)"]);
    let got = w.ask(b, "/join tmp");
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[1], "1 line of history:");
    assert!(got[2].ends_with(&format!("] {an}: remember me")), "{got:?}");
    // Leaving (disconnect) frees it too.
    w.settle();
    w.chat.leave(b, &Leave::Closed, w.now);
    assert_eq!(w.chat.occupied_rooms(), 1);
    assert_eq!(
        w.ask(a, "/rooms"),
        vec!["1 room:", "  #lobby (1 user) (you are here)"]
    );
}

#[test]
fn too_many_rooms_counts_the_lobby() {
    let mut w = World::with(Settings {
        max_rooms: 1,
        ..settings()
    });
    let a = w.users(1)[0];
    assert_eq!(w.ask(a, "/join rust"), vec!["Too many rooms (max 1)"]);
    assert_eq!(w.ask(a, "/join lobby"), vec!["You are already in #lobby"]);
    w.out.assert_quiet();

    let mut w = World::with(Settings {
        max_rooms: 3,
        ..settings()
    });
    let [a, b, c] = w.users(3)[..] else {
        unreachable!()
    };
    w.join_room(a, "one");
    w.join_room(b, "two");
    assert_eq!(w.ask(c, "/join three"), vec!["Too many rooms (max 3)"]);
    w.flush();
    w.out.assert_quiet();
    // Joining an existing room is always possible.
    assert_eq!(w.ask(c, "/join one"), vec!["You are now in #one"]);
    w.settle();
    // A freed room makes room again.
    w.join_room(b, "lobby");
    assert_eq!(w.ask(c, "/join three"), vec!["You are now in #three"]);
}

#[test]
fn a_move_that_empties_the_old_room_frees_its_place_first() {
    let mut w = World::with(Settings {
        max_rooms: 2,
        ..settings()
    });
    let [a, b, c] = w.users(3)[..] else {
        unreachable!()
    };
    w.join_room(a, "one");
    // a is alone in #one: moving to a new room needs no extra place.
    assert_eq!(w.ask(a, "/join two"), vec!["You are now in #two"]);
    w.settle();
    assert_eq!(w.chat.occupied_rooms(), 2);
    // b, from the lobby (which never frees), cannot create a third.
    assert_eq!(w.ask(b, "/join three"), vec!["Too many rooms (max 2)"]);
    // With two in #two, the mover's room does not empty: refused.
    w.join_room(c, "two");
    assert_eq!(w.ask(c, "/join three"), vec!["Too many rooms (max 2)"]);
    // The lobby emptied by a move is not freed either.
    w.join_room(b, "two");
    assert_eq!(w.chat.occupied_rooms(), 1);
    assert_eq!(w.ask(a, "/join three"), vec!["Too many rooms (max 2)"]);
    w.join_room(a, "lobby");
    w.join_room(b, "lobby");
    // c alone in #two: a move to a new room frees #two first.
    assert_eq!(w.ask(c, "/join three"), vec!["You are now in #three"]);
    w.settle();
    assert_eq!(
        w.ask(c, "/rooms"),
        vec![
            "2 rooms:",
            "  #lobby (2 users)",
            "  #three (1 user) (you are here)"
        ]
    );
}

// ---- who ----

#[test]
fn who_lists_the_room_in_entry_order_and_marks_you() {
    let mut w = World::new();
    let [a, b, c, d] = w.users(4)[..] else {
        unreachable!()
    };
    let n: Vec<String> = [a, b, c, d].iter().map(|&id| w.name(id)).collect();
    // b goes away and comes back: now the latest to enter.
    w.join_room(b, "elsewhere");
    w.join_room(b, "lobby");
    w.join_room(d, "rust");
    assert_eq!(
        w.ask(c, "who"),
        vec![
            "3 users in #lobby:".to_string(),
            format!("  {}", n[0]),
            format!("  {} (you)", n[2]),
            format!("  {}", n[1]),
        ]
    );
    assert_eq!(
        w.ask(d, "/WHO"),
        vec!["1 user in #rust:".to_string(), format!("  {} (you)", n[3])]
    );
    // A rename keeps the place.
    w.rename(a, "Zed");
    assert_eq!(w.ask(b, "/who")[1], "  Zed");
}

#[test]
fn who_flushes_pending_presence_first() {
    let mut w = World::new();
    let a = w.users(1)[0];
    let b = w.connect();
    let bn = w.name(b);
    let an = w.name(a);
    assert_eq!(
        w.ask(a, "/who"),
        vec![
            format!("{bn} has arrived"),
            "2 users in #lobby:".to_string(),
            format!("  {an} (you)"),
            format!("  {bn}"),
        ]
    );
}

// ---- /rooms ----

#[test]
fn rooms_are_listed_most_users_first_then_by_name() {
    let mut w = World::new();
    let ids = w.users(6);
    w.join_room(ids[0], "b");
    w.join_room(ids[1], "b");
    w.join_room(ids[2], "a");
    w.join_room(ids[3], "a");
    w.join_room(ids[4], "c");
    assert_eq!(
        w.ask(ids[4], "/rooms"),
        vec![
            "4 rooms:",
            "  #a (2 users)",
            "  #b (2 users)",
            "  #c (1 user) (you are here)",
            "  #lobby (1 user)",
        ]
    );
    assert_eq!(
        w.ask(ids[5], "/ROOMS"),
        vec![
            "4 rooms:",
            "  #a (2 users)",
            "  #b (2 users)",
            "  #c (1 user)",
            "  #lobby (1 user) (you are here)",
        ]
    );
    // The emptied lobby is not listed.
    w.join_room(ids[5], "a");
    assert_eq!(
        w.ask(ids[5], "/rooms"),
        vec![
            "3 rooms:",
            "  #a (3 users) (you are here)",
            "  #b (2 users)",
            "  #c (1 user)",
        ]
    );
}

#[test]
fn one_room_is_singular() {
    let mut w = World::new();
    let a = w.users(1)[0];
    assert_eq!(
        w.ask(a, "/rooms"),
        vec!["1 room:", "  #lobby (1 user) (you are here)"]
    );
    assert_eq!(w.out.blocks, vec![(a, 2)]);
}

// ---- /history ----

#[test]
fn history_block_format_and_default_of_twenty() {
    let mut w = World::new();
    let [a, b] = w.users(2)[..] else {
        unreachable!()
    };
    let an = w.name(a);
    let mut sent = Vec::new();
    for i in 0..25 {
        w.now = at(i * 60);
        sent.push(w.now);
        w.send(a, &format!("line {i}"));
    }
    w.settle();
    w.now = at(25 * 60);
    let got = w.ask(b, "/history");
    assert_eq!(got.len(), 22, "{got:?}");
    assert_eq!(got[0], "20 lines of history:");
    for (k, i) in (5..25).enumerate() {
        assert_eq!(got[k + 1], hist(sent[i], w.now, &format!("{an}: line {i}")));
        assert!(has_time_shape(&got[k + 1]), "{}", got[k + 1]);
    }
    assert_eq!(got[21], "End of history");
    let got = w.ask(b, "/history 3");
    assert_eq!(
        got,
        vec![
            "3 lines of history:".to_string(),
            hist(sent[22], w.now, &format!("{an}: line 22")),
            hist(sent[23], w.now, &format!("{an}: line 23")),
            hist(sent[24], w.now, &format!("{an}: line 24")),
            "End of history".to_string(),
        ]
    );
    let got = w.ask(b, "/history 1");
    assert_eq!(got[0], "1 line of history:");
    assert_eq!(got.len(), 3);
    // More than there is: all of it.
    let got = w.ask(b, "/history 1000");
    assert_eq!(got[0], "25 lines of history:");
    assert_eq!(got.len(), 27);
    for bad in ["/history 0", "/history 1001", "/history x", "/history -1"] {
        assert_eq!(w.ask(b, bad), vec!["Usage: /history [N]"], "{bad}");
    }
}

#[test]
fn history_times_are_the_send_times() {
    let mut w = World::new();
    let a = w.users(1)[0];
    let an = w.name(a);
    w.now = at(0);
    w.send(a, "early");
    w.now = at(2 * 3600 + 17 * 60);
    w.send(a, "later");
    w.settle();
    let asked = at(30 * 3600);
    w.now = asked;
    let got = w.ask(a, "/history");
    assert_eq!(
        got,
        vec![
            "2 lines of history:".to_string(),
            hist(at(0), asked, &format!("{an}: early")),
            hist(at(2 * 3600 + 17 * 60), asked, &format!("{an}: later")),
            "End of history".to_string(),
        ]
    );
}

#[test]
fn no_history_names_the_room() {
    let mut w = World::new();
    let [a, b] = w.users(2)[..] else {
        unreachable!()
    };
    assert_eq!(w.ask(a, "/history"), vec!["No history in #lobby"]);
    assert_eq!(w.ask(a, "/history 5"), vec!["No history in #lobby"]);
    w.join_room(b, "Quiet");
    assert_eq!(w.ask(b, "/history"), vec!["No history in #quiet"]);
    w.out.assert_quiet();
}

#[test]
fn history_keeps_chat_lines_and_actions_only_per_room() {
    let mut w = World::new();
    let [a, b, c] = w.users(3)[..] else {
        unreachable!()
    };
    let (an, bn) = (w.name(a), w.name(b));
    w.send(a, "chat line");
    w.send(a, "/me acts");
    w.send(a, "//slash line");
    w.send(a, &format!("/msg {bn} private"));
    w.send(a, "/nick alice");
    w.send(a, "/who");
    w.send(a, "/rooms");
    w.send(a, "/bogus");
    w.send(a, "");
    w.join_room(c, "other");
    w.send(c, "elsewhere");
    w.settle();
    let got = w.ask(b, "/history");
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[0], "3 lines of history:");
    assert!(got[1].ends_with(&format!("] {an}: chat line")), "{got:?}");
    assert!(got[2].ends_with(&format!("] * {an} acts")), "{got:?}");
    assert!(got[3].ends_with(&format!("] {an}: /slash line")), "{got:?}");
    assert_eq!(got[4], "End of history");
    let got = w.ask(c, "/history");
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[1].ends_with(": elsewhere"), "{got:?}");
}

#[test]
fn lines_said_after_entering_are_never_in_the_entry_block() {
    let mut w = World::new();
    let a = w.users(1)[0];
    let an = w.name(a);
    w.send(a, "before");
    w.settle();
    let (b, lines) = w.connect_from("127.0.0.1:5999");
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(lines[2].ends_with(&format!("] {an}: before")));
    w.send(a, "after");
    assert_eq!(
        w.out.take(b),
        vec![format!("{an}: after")],
        "live, not as history"
    );
    // The same on /join.
    w.join_room(a, "rust");
    w.send(a, "in rust");
    w.settle();
    let got = w.ask(b, "/join rust");
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got[2].ends_with(&format!("] {an}: in rust")));
    w.send(a, "later in rust");
    assert_eq!(w.out.take(b), vec![format!("{an}: later in rust")]);
}

#[test]
fn history_per_room_is_bounded() {
    let mut w = World::with(Settings {
        history_per_room: 3,
        ..settings()
    });
    let a = w.users(1)[0];
    let an = w.name(a);
    for i in 0..5 {
        w.send(a, &format!("n{i}"));
    }
    w.settle();
    let got = w.ask(a, "/history 10");
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[0], "3 lines of history:");
    assert!(got[1].ends_with(&format!("] {an}: n2")), "{got:?}");
    assert!(got[3].ends_with(&format!("] {an}: n4")), "{got:?}");
}

// ---- leave ----

#[test]
fn leave_announces_each_reason_to_the_room_only() {
    let cases: Vec<(Leave, Option<&str>)> = vec![
        (Leave::Closed, Some("")),
        (Leave::Failed("connection reset".into()), Some("")),
        (Leave::Quit(None), Some("")),
        (
            Leave::Quit(Some("gone fishing".into())),
            Some(" (gone fishing)"),
        ),
        (Leave::Idle, Some(" (idle timeout)")),
        (Leave::TooSlow, Some(" (too slow)")),
        (
            Leave::Kicked {
                by: "op".into(),
                reason: None,
            },
            Some(" (kicked by op)"),
        ),
        (
            Leave::Kicked {
                by: "op".into(),
                reason: Some("spam".into()),
            },
            Some(" (kicked by op: spam)"),
        ),
        (
            Leave::Kicked {
                by: "op".into(),
                reason: Some("banned".into()),
            },
            Some(" (kicked by op: banned)"),
        ),
        (Leave::WrongPasswords, Some("")),
        (Leave::Shutdown, None),
    ];
    for (reason, suffix) in cases {
        let mut w = World::new();
        let [a, _b, c, d] = w.users(4)[..] else {
            unreachable!()
        };
        w.join_room(c, "rust");
        w.join_room(d, "rust");
        let cn = w.name(c);
        w.chat.leave(c, &reason, w.now);
        w.flush();
        match suffix {
            Some(suffix) => {
                assert_eq!(
                    w.out.take(d),
                    vec![format!("{cn} has left{suffix}")],
                    "{reason:?}"
                )
            }
            None => assert!(w.out.take(d).is_empty(), "{reason:?}"),
        }
        w.out.assert_quiet();
        assert!(w.chat.user(c).is_none());
        assert_eq!(w.chat.len(), 3);
        // The name is free and nothing more is sent to the leaver.
        assert_eq!(
            w.ask(a, &format!("/msg {cn} hi")),
            vec![format!("No such user: {cn}")]
        );
        w.send(d, "still here");
        assert!(w.out.take(c).is_empty());
        w.out.clear();
        // Leaving twice, or commands from a gone user, do nothing.
        w.chat.leave(c, &reason, w.now);
        w.send(c, "ghost");
        w.flush();
        w.out.take(d);
        w.out.assert_quiet();
    }
}

#[test]
fn a_user_who_leaves_frees_its_name() {
    let mut w = World::new();
    let [a, b] = w.users(2)[..] else {
        unreachable!()
    };
    w.rename(a, "alice");
    w.chat.leave(a, &Leave::Quit(None), w.now);
    w.settle();
    assert_eq!(w.ask(b, "/msg alice hi"), vec!["No such user: alice"]);
    w.rename(b, "Alice");
}

#[test]
fn quit_says_bye_and_asks_for_a_disconnect() {
    let mut w = World::new();
    let [a, b] = w.users(2)[..] else {
        unreachable!()
    };
    assert_eq!(w.ask(a, "/quit"), vec!["Bye"]);
    assert_eq!(w.effects(), vec![Effect::Disconnect(a, Leave::Quit(None))]);
    assert_eq!(w.ask(b, "/QUIT gone fishing"), vec!["Bye"]);
    assert_eq!(
        w.effects(),
        vec![Effect::Disconnect(
            b,
            Leave::Quit(Some("gone fishing".into()))
        )]
    );
}

// ---- presence batches per room ----

#[test]
fn three_arrivals_are_one_by_one_and_newcomers_hear_only_later_ones() {
    let mut w = World::new();
    let watcher = w.users(1)[0];
    let [x, y, z] = [w.connect(), w.connect(), w.connect()];
    let (xn, yn, zn) = (w.name(x), w.name(y), w.name(z));
    w.flush();
    assert_eq!(
        w.out.take(watcher),
        vec![
            format!("{xn} has arrived"),
            format!("{yn} has arrived"),
            format!("{zn} has arrived"),
        ]
    );
    assert_eq!(
        w.out.take(x),
        vec![format!("{yn} has arrived"), format!("{zn} has arrived")]
    );
    assert_eq!(w.out.take(y), vec![format!("{zn} has arrived")]);
    assert!(w.out.take(z).is_empty());
    w.out.assert_quiet();
}

#[test]
fn more_than_three_arrivals_are_one_line_for_those_not_among_them() {
    let mut w = World::new();
    let [lobby_watcher, room_watcher] = w.users(2)[..] else {
        unreachable!()
    };
    w.join_room(room_watcher, "rust");
    let newcomers: Vec<ConnId> = (0..4).map(|_| w.connect()).collect();
    w.flush();
    assert_eq!(w.out.take(lobby_watcher), vec!["4 users have arrived"]);
    w.out.assert_quiet();
    // They move to #rust together: one line in each room.
    for &id in &newcomers {
        assert_eq!(w.ask(id, "/join rust"), vec!["You are now in #rust"]);
    }
    w.flush();
    assert_eq!(w.out.take(lobby_watcher), vec!["4 users have left"]);
    assert_eq!(w.out.take(room_watcher), vec!["4 users have arrived"]);
    w.out.assert_quiet();
    // Three leave #rust for the lobby: one by one, with `for #ROOM`.
    let names: Vec<String> = newcomers.iter().map(|&id| w.name(id)).collect();
    for &id in &newcomers[..3] {
        w.send(id, "/join lobby");
    }
    w.out.clear();
    w.flush();
    let left: Vec<String> = names[..3]
        .iter()
        .map(|n| format!("{n} has left for #lobby"))
        .collect();
    assert_eq!(w.out.take(room_watcher), left);
    assert_eq!(w.out.take(newcomers[3]), left);
    let arrived: Vec<String> = names[..3]
        .iter()
        .map(|n| format!("{n} has arrived"))
        .collect();
    assert_eq!(w.out.take(lobby_watcher), arrived);
    assert_eq!(w.out.take(newcomers[0]), arrived[1..].to_vec());
    assert_eq!(w.out.take(newcomers[1]), arrived[2..].to_vec());
    w.out.assert_quiet();
}

#[test]
fn more_than_three_departures_are_one_line() {
    let mut w = World::new();
    let ids = w.users(6);
    let other = w.users(1)[0];
    w.join_room(other, "rust");
    for &id in &ids[1..5] {
        w.chat.leave(id, &Leave::Idle, w.now);
    }
    w.flush();
    assert_eq!(w.out.take(ids[0]), vec!["4 users have left"]);
    assert_eq!(w.out.take(ids[5]), vec!["4 users have left"]);
    w.out.assert_quiet();
}

#[test]
fn a_batch_tells_arrivals_before_departures_and_both_for_a_brief_visit() {
    let mut w = World::new();
    let [watcher, goner] = w.users(2)[..] else {
        unreachable!()
    };
    let gn = w.name(goner);
    w.chat.leave(goner, &Leave::Closed, w.now);
    let visitor = w.connect();
    let vn = w.name(visitor);
    let newcomer = w.connect();
    let nn = w.name(newcomer);
    w.chat
        .leave(visitor, &Leave::Quit(Some("bye now".into())), w.now);
    w.flush();
    assert_eq!(
        w.out.take(watcher),
        vec![
            format!("{vn} has arrived"),
            format!("{nn} has arrived"),
            format!("{gn} has left"),
            format!("{vn} has left (bye now)"),
        ]
    );
    // The newcomer hears only of what happened after it came.
    assert_eq!(
        w.out.take(newcomer),
        vec![format!("{vn} has left (bye now)")]
    );
    w.out.assert_quiet();
}

#[test]
fn presence_is_batched_per_room() {
    let mut w = World::new();
    let [a, b, c] = w.users(3)[..] else {
        unreachable!()
    };
    w.join_room(b, "one");
    w.join_room(c, "two");
    // Two arrivals in the lobby, two moves into #one: per room, each batch
    // has at most three, so one by one everywhere.
    let x = w.connect();
    let y = w.connect();
    let (xn, yn) = (w.name(x), w.name(y));
    w.flush();
    assert_eq!(
        w.out.take(a),
        vec![format!("{xn} has arrived"), format!("{yn} has arrived")]
    );
    w.out.take(x);
    w.out.assert_quiet();
    w.send(x, "/join one");
    w.send(y, "/join one");
    w.out.clear();
    w.flush();
    assert_eq!(
        w.out.take(a),
        vec![
            format!("{xn} has left for #one"),
            format!("{yn} has left for #one")
        ]
    );
    assert_eq!(
        w.out.take(b),
        vec![format!("{xn} has arrived"), format!("{yn} has arrived")]
    );
    assert_eq!(w.out.take(x), vec![format!("{yn} has arrived")]);
    assert!(w.out.take(c).is_empty(), "#two heard nothing");
    w.out.assert_quiet();
}

#[test]
fn n_users_have_left_is_not_told_to_one_of_the_n_who_came_back() {
    // PROTOCOL.md: "An `N users have …` line goes to everyone in the room
    // who is not among the N." One of four who left #a comes back within
    // the same batch: it is among the N, so it must not hear the line.
    let mut w = World::new();
    let ids = w.users(5);
    let watcher = ids[0];
    for &id in &ids {
        w.join_room(id, "a");
    }
    let back = ids[1];
    let bn = w.name(back);
    for &id in &ids[1..] {
        w.send(id, "/join lobby");
    }
    w.send(back, "/join a");
    w.out.clear();
    w.flush();
    assert_eq!(
        w.out.take(watcher),
        vec![format!("{bn} has arrived"), "4 users have left".to_string()]
    );
    let heard = w.out.take(back);
    assert!(
        !heard.iter().any(|l| l == "4 users have left"),
        "one of the 4 heard of its own departure: {heard:?}"
    );
}

#[test]
fn flush_with_nothing_pending_sends_nothing() {
    let mut w = World::new();
    w.users(3);
    w.flush();
    w.flush();
    w.out.assert_quiet();
}

// ---- reply cost ----

#[test]
fn reply_cost_is_n_over_100_at_least_1_less_the_line_itself() {
    assert_eq!(Chat::reply_cost(0), 0);
    assert_eq!(Chat::reply_cost(1), 0);
    assert_eq!(Chat::reply_cost(99), 0);
    assert_eq!(Chat::reply_cost(100), 0);
    assert_eq!(Chat::reply_cost(199), 0);
    assert_eq!(Chat::reply_cost(200), 1);
    assert_eq!(Chat::reply_cost(1002), 9);
    assert_eq!(Chat::reply_cost(20_001), 199);
}

#[test]
fn long_replies_charge_tokens() {
    let mut w = World::new();
    let ids = w.users(250);
    let a = ids[0];
    let got = w.ask(a, "/who");
    assert_eq!(got.len(), 251);
    assert_eq!(got[0], "250 users in #lobby:");
    assert_eq!(w.effects(), vec![Effect::Charge(a, 1)]);
    // A short reply costs nothing more than its line.
    w.join_room(ids[1], "small");
    w.ask(ids[1], "/who");
    w.ask(ids[1], "/rooms");
    w.ask(ids[1], "/help");
    assert_eq!(w.effects(), vec![]);
    // /history 1000 of 1000 lines: 1002 lines, 10 tokens, 9 beyond the line.
    for i in 0..1000 {
        w.send(ids[1], &format!("l{i}"));
    }
    w.settle();
    let got = w.ask(ids[1], "/history 1000");
    assert_eq!(got.len(), 1002);
    assert_eq!(got[0], "1000 lines of history:");
    assert_eq!(w.effects(), vec![Effect::Charge(ids[1], 9)]);
    let got = w.ask(ids[1], "/history");
    assert_eq!(got.len(), 22);
    assert_eq!(w.effects(), vec![]);
}

#[test]
fn help_ends_with_end_of_help_and_unknown_commands_say_so() {
    let mut w = World::new();
    let a = w.users(1)[0];
    let got = w.ask(a, "/help");
    assert_eq!(got.last().map(String::as_str), Some("End of help"));
    assert!(got.iter().any(|l| l.starts_with("/join")), "{got:?}");
    assert!(got.iter().any(|l| l.starts_with("/rooms")), "{got:?}");
    assert!(got.iter().any(|l| l.starts_with("/history")), "{got:?}");
    assert_eq!(
        w.ask(a, "/dance now"),
        vec!["Unknown command: /dance (try /help)"]
    );
}

#[test]
fn a_stale_id_for_a_reused_slot_is_nobody() {
    let mut w = World::new();
    let old = ConnId::new(100, 1);
    let new = ConnId::new(100, 2);
    let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    w.chat.join(old, addr, w.now, &mut w.out);
    w.chat.leave(old, &Leave::Closed, w.now);
    w.chat.join(new, addr, w.now, &mut w.out);
    w.settle();
    w.send(old, "from the past");
    w.chat.leave(old, &Leave::Closed, w.now);
    w.flush();
    w.out.assert_quiet();
    assert_eq!(
        w.ask(new, "/who"),
        vec!["1 user in #lobby:", "  127.0.0.1:5000 (you)"]
    );
}
mod cluster_cases;
