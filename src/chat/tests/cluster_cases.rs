//! The chat as one server of a cluster, with Redis played by hand.
//!
//! No socket and no Redis: a local user's command leaves [`Call`]s (taken
//! with [`Chat::take_calls`]); the test checks them, then feeds back the
//! event the Lua script of [`scripts`] would publish, built with
//! [`Builder`] field by field as the script concatenates it (US between
//! fields, RS between records), and looks at what users were sent.

use super::*;
use crate::chat::cluster::{Call, Cluster, Pending, Phase, Reply};
use crate::chat::scripts;
use crate::chat::wire::{Builder, RS};
use crate::iplimit::Exempt;
use crate::oper::OperGate;

/// Another server of the cluster.
const OTHER: &str = "00000000000000aa";
/// A third one.
const THIRD: &str = "00000000000000bb";

/// The SHA-1 (hex) by which `EVALSHA` names the script with this body.
fn sha(body: &str) -> String {
    let text = scripts::script(body);
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `ARGV[i]` of an `EVALSHA sha 0 ARGV...` call, 1-based as in Lua, as
/// the scripts see it: after the prelude took the deadline (`ARGV[3]`) out.
fn arg(call: &Call, i: usize) -> String {
    assert_eq!(call.args[0], b"EVALSHA", "{call:?}");
    let at = if i >= 3 { i + 1 } else { i };
    String::from_utf8(call.args[2 + at].clone()).expect("UTF-8 argument")
}

/// Every `ARGV` of an `EVALSHA` call, as the scripts see them.
fn argv(call: &Call) -> Vec<String> {
    (1..call.args.len() - 3).map(|i| arg(call, i)).collect()
}

/// Records joined with RS, as `table.concat(msg, RS)` does.
fn records(all: &[String]) -> String {
    all.join(&RS.to_string())
}

/// A `u server uid seq room name addr skeleton` record.
fn user_record(server: &str, uid: u64, seq: u64, room: &str, name: &str, addr: &str) -> String {
    Builder::new("u")
        .field(server)
        .field(uid)
        .field(seq)
        .field(room)
        .field(name)
        .field(addr)
        .field(names::skeleton(name))
        .build()
}

/// One clustered chat, and Redis's side of the registry kept by hand.
struct Cw {
    w: World,
    /// This server's id.
    me: String,
    /// Redis's `P:seq`.
    seq: u64,
}

impl Cw {
    /// A clustered chat, linked and synced with an empty registry.
    fn new() -> Cw {
        Cw::with(World::new())
    }

    fn with(mut w: World) -> Cw {
        w.chat.set_cluster(Cluster::new("chatd", "redis://test"));
        let me = w.chat.cluster().expect("clustered").id().to_string();
        let mut cw = Cw { w, me, seq: 0 };
        assert_eq!(cw.phase(), Phase::Down);
        cw.link_up();
        cw.reply(Pending::Resync, Reply::Array(Vec::new()));
        cw.feed(&Builder::new("Z").field(0).build());
        assert_eq!(cw.phase(), Phase::Up);
        cw.w.out.assert_quiet();
        cw
    }

    fn phase(&self) -> Phase {
        self.w.chat.cluster().expect("clustered").phase()
    }

    /// The link comes up: scripts loaded, then `RESYNC`; returns that call.
    fn link_up(&mut self) -> Call {
        self.w.chat.link_up(self.w.now);
        assert_eq!(self.phase(), Phase::Syncing);
        let mut calls = self.calls();
        let resync = calls.pop().expect("a resync");
        let clock = calls.pop().expect("a clock reading");
        assert_eq!(clock.args, vec![b"TIME".to_vec()]);
        assert!(matches!(clock.tag, Pending::Clock(_)));
        assert_eq!(calls.len(), 12, "every script is loaded first");
        for load in &calls {
            assert_eq!(load.args[..2], [b"SCRIPT".to_vec(), b"LOAD".to_vec()]);
            assert_eq!(load.tag, Pending::Fire);
        }
        assert_eq!(resync.tag, Pending::Resync);
        assert_eq!(resync.args[1], sha(scripts::RESYNC).into_bytes());
        resync
    }

    /// Every call queued since the last time.
    fn calls(&mut self) -> Vec<Call> {
        let mut calls = Vec::new();
        self.w.chat.take_calls(&mut calls);
        calls
    }

    /// The one call queued since the last time.
    fn one_call(&mut self) -> Call {
        let mut calls = self.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        calls.pop().expect("one call")
    }

    fn no_calls(&mut self) {
        let calls = self.calls();
        assert!(calls.is_empty(), "unexpected calls: {calls:?}");
    }

    /// A message arrives on a subscribed channel.
    fn feed(&mut self, payload: &str) {
        self.w
            .chat
            .on_message(payload.as_bytes(), self.w.now, &mut self.w.out);
    }

    /// Redis answers a call.
    fn reply(&mut self, tag: Pending, reply: Reply) {
        self.w
            .chat
            .on_reply(tag, reply, self.w.now, &mut self.w.out);
    }

    /// Redis's `INCR P:seq`.
    fn incr(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A local user connects from `addr`; Redis grants its first
    /// candidate name (`ARRIVE`) and publishes `A`. The greeting is taken
    /// out; its arrival is still batched.
    fn connect_from(&mut self, addr: &str) -> ConnId {
        let (id, lines) = self.w.connect_from(addr);
        assert!(lines.is_empty(), "nothing before Redis answers: {lines:?}");
        assert!(self.w.chat.is_waiting(id));
        let call = self.one_call();
        assert_eq!(call.tag, Pending::Arrive(id, 1));
        assert_eq!(call.args[1], sha(scripts::ARRIVE).into_bytes());
        let a = argv(&call);
        assert_eq!(
            a[..6],
            [
                "chatd",
                &self.me,
                &id.as_u64().to_string(),
                "lobby",
                addr,
                "20"
            ]
        );
        assert_eq!(a[6], addr, "the first candidate is the address");
        assert_eq!(a[7], names::skeleton(addr));
        let seq = self.incr();
        let event = Builder::new("A")
            .field(&a[1])
            .field(&a[2])
            .field(seq)
            .field(&a[3])
            .field(&a[6])
            .field(&a[4])
            .build();
        self.feed(&event);
        assert_eq!(self.w.out.take(id), vec![format!("You are {addr}")]);
        assert!(!self.w.chat.is_waiting(id));
        assert!(self.w.effects().contains(&Effect::Resume(id)));
        id
    }

    /// A local user from 127.0.0.1 on a port of its own.
    fn connect(&mut self) -> ConnId {
        let port = self.w.next_port;
        self.w.next_port += 1;
        self.connect_from(&format!("127.0.0.1:{port}"))
    }

    /// `n` local users, their arrivals flushed and forgotten.
    fn users(&mut self, n: usize) -> Vec<ConnId> {
        let ids = (0..n).map(|_| self.connect()).collect();
        self.w.settle();
        ids
    }

    /// A user of `server` arrives (`A`); returns its entry number.
    fn remote_arrives(&mut self, server: &str, uid: u64, room: &str, name: &str) -> u64 {
        let seq = self.incr();
        let event = Builder::new("A")
            .field(server)
            .field(uid)
            .field(seq)
            .field(room)
            .field(name)
            .field(format!("10.1.0.{}:4000", uid % 250))
            .build();
        self.feed(&event);
        seq
    }

    /// The name of the room local user `id` is in.
    fn room_of(&self, id: ConnId) -> String {
        let user = self.w.chat.users.get(&id).expect("connected");
        self.w
            .chat
            .rooms
            .get(user.room)
            .expect("a room")
            .name
            .clone()
    }

    /// Local user `id` moves to `room`: the `MOVE` call, then `J` as the
    /// script publishes it. Everything queued is forgotten.
    fn move_local(&mut self, id: ConnId, room: &str) {
        let from = self.room_of(id);
        self.w.send(id, &format!("/join {room}"));
        assert!(self.w.chat.is_waiting(id));
        let call = self.one_call();
        assert_eq!(call.tag, Pending::Move(id, room.to_string()));
        assert_eq!(call.args[1], sha(scripts::MOVE).into_bytes());
        let seq = self.incr();
        let event = Builder::new("J")
            .field(arg(&call, 2))
            .field(arg(&call, 3))
            .field(seq)
            .field(&from)
            .field(arg(&call, 4))
            .build();
        self.feed(&event);
        let got = self.w.out.take(id);
        assert_eq!(got.first(), Some(&format!("You are now in #{room}")));
        assert!(!self.w.chat.is_waiting(id));
        self.w.settle();
    }

    /// The `C` event the `SAY` script publishes for this call.
    fn echo_of(call: &Call) -> String {
        assert!(matches!(call.tag, Pending::Say(..)), "{call:?}");
        Builder::new("C")
            .field(arg(call, 2))
            .field(arg(call, 3))
            .field(arg(call, 4))
            .field(arg(call, 5))
            .field(arg(call, 6))
            .build()
    }

    /// `id`'s `who`.
    fn who(&mut self, id: ConnId) -> Vec<String> {
        self.w.ask(id, "/who")
    }

    /// Flushes presence and returns what `id` was sent.
    fn flushed(&mut self, id: ConnId) -> Vec<String> {
        self.w.flush();
        self.w.out.take(id)
    }
}

// ---- 1. a local line waits for its echo ----

#[test]
fn a_local_line_waits_for_its_echo_then_reaches_the_room_here() {
    let mut c = Cw::new();
    let [a, b, d] = c.users(3)[..] else {
        unreachable!()
    };
    c.move_local(d, "rust");
    c.remote_arrives(OTHER, 5, "lobby", "zed");
    c.w.settle();
    let line = format!("{}: hello there", c.w.name(a));

    c.w.send(a, "hello there");
    let call = c.one_call();
    assert_eq!(
        call.tag,
        Pending::Say(a, 1, "lobby".to_string(), line.clone())
    );
    assert_eq!(call.args[1], sha(scripts::SAY).into_bytes());
    assert_eq!(
        argv(&call),
        [
            "chatd",
            &c.me,
            &a.as_u64().to_string(),
            "lobby",
            &T0.to_string(),
            &line,
            "1000"
        ]
    );
    assert!(!c.w.chat.is_waiting(a), "a line alone does not stop input");
    c.w.out.assert_quiet();
    assert!(c.w.effects().is_empty());
    assert_eq!(
        c.w.chat.history_lines(),
        0,
        "not history before Redis has it"
    );
    // A command behind the line waits for it, and the input with it.
    c.w.send(a, "/who");
    assert!(c.w.chat.is_waiting(a));
    c.no_calls();
    c.w.out.assert_quiet();

    c.feed(&Cw::echo_of(&call));
    let who = vec![
        "3 users in #lobby:".to_string(),
        format!("  {} (you)", c.w.name(a)),
        format!("  {}", c.w.name(b)),
        "  zed".to_string(),
    ];
    let mut want = vec![line.clone()];
    want.extend(who);
    assert_eq!(c.w.out.take(a), want, "the line, then the reply");
    assert_eq!(c.w.out.take(b), vec![line.clone()]);
    assert!(c.w.out.take(d).is_empty(), "another room");
    c.w.out.assert_quiet();
    assert!(!c.w.chat.is_waiting(a));
    assert_eq!(c.w.effects(), vec![Effect::Resume(a)]);
    assert_eq!(c.w.chat.history_lines(), 1);

    // Lines pipeline up to the bound, then input waits for their echoes.
    let mut calls = Vec::new();
    for n in 0..crate::tuning::CLUSTER_LINES_IN_FLIGHT {
        assert!(!c.w.chat.is_waiting(a), "line {n}");
        c.w.send(a, &format!("line {n}"));
        calls.push(c.one_call());
    }
    assert!(c.w.chat.is_waiting(a));
    c.feed(&Cw::echo_of(&calls[0]));
    assert!(!c.w.chat.is_waiting(a));
    assert_eq!(c.w.effects(), vec![Effect::Resume(a)]);
    for call in &calls[1..] {
        c.feed(&Cw::echo_of(call));
    }
    c.w.out.take(a);
    c.w.out.take(b);
    assert!(c.w.effects().is_empty());

    // A remote user's line: delivered, nobody resumed.
    let theirs = Builder::new("C")
        .field(OTHER)
        .field(5)
        .field("lobby")
        .field(T0 + 1)
        .field("* zed waves")
        .build();
    c.feed(&theirs);
    assert_eq!(c.w.out.take(a), vec!["* zed waves"]);
    assert_eq!(c.w.out.take(b), vec!["* zed waves"]);
    c.w.out.assert_quiet();
    assert!(c.w.effects().is_empty());
}

// ---- 2. a remote arrival ----

#[test]
fn a_remote_arrival_is_announced_listed_in_entry_order_and_reachable_by_msg() {
    let mut c = Cw::new();
    let a = c.connect();
    c.w.settle();
    c.remote_arrives(OTHER, 5, "lobby", "zed");
    c.w.out.assert_quiet();
    let b = c.connect();
    let (na, nb) = (c.w.name(a), c.w.name(b));
    c.w.out.assert_quiet();

    c.w.flush();
    assert_eq!(
        c.w.out.take(a),
        vec!["zed has arrived".to_string(), format!("{nb} has arrived")]
    );
    assert!(c.w.out.take(b).is_empty(), "zed was there before b");
    c.w.out.assert_quiet();

    assert_eq!(
        c.who(b),
        vec![
            "3 users in #lobby:".to_string(),
            format!("  {na}"),
            "  zed".to_string(),
            format!("  {nb} (you)"),
        ]
    );

    assert_eq!(
        c.w.ask(b, "/msg ZED hello there"),
        vec!["[to zed] hello there"]
    );
    c.w.out.assert_quiet();
    let call = c.one_call();
    assert_eq!(call.tag, Pending::Fire);
    let want = Builder::new("M")
        .field(&c.me)
        .field(5)
        .field(&nb)
        .field("hello there")
        .build();
    assert_eq!(
        call.args,
        vec![
            b"PUBLISH".to_vec(),
            format!("chatd:to:{OTHER}").into_bytes(),
            want.into_bytes()
        ]
    );

    // And the other way: zed's `/msg` to a, published on this server's
    // channel.
    let private = Builder::new("M")
        .field(OTHER)
        .field(a.as_u64())
        .field("zed")
        .field("psst")
        .build();
    c.feed(&private);
    assert_eq!(c.w.out.take(a), vec!["[private] zed: psst"]);
    c.w.out.assert_quiet();
}

// ---- 3. renames ----

#[test]
fn a_rename_is_checked_here_then_decided_by_redis() {
    let mut c = Cw::new();
    let [a, b] = c.users(2)[..] else {
        unreachable!()
    };
    c.remote_arrives(OTHER, 7, "lobby", "bobl");
    c.w.settle();
    let old = c.w.name(a);

    // Local checks answer at once, without Redis.
    assert_eq!(c.w.ask(a, "/nick a:b"), vec![protocol::invalid_name("a:b")]);
    assert_eq!(c.w.ask(a, "/nick BOBL"), vec!["Name BOBL is taken"]);
    assert_eq!(
        c.w.ask(a, "/nick bob1"),
        vec!["Name bob1 is taken"],
        "look-alike"
    );
    c.no_calls();
    assert!(!c.w.chat.is_waiting(a));
    c.w.out.assert_quiet();

    // Taken in Redis meanwhile.
    assert!(c.w.ask(a, "/nick alice").is_empty());
    let call = c.one_call();
    assert_eq!(call.tag, Pending::Rename(a));
    assert_eq!(call.args[1], sha(scripts::RENAME).into_bytes());
    assert_eq!(
        argv(&call),
        ["chatd", &c.me, &a.as_u64().to_string(), "alice", "alice"]
    );
    assert!(c.w.chat.is_waiting(a));
    c.reply(Pending::Rename(a), Reply::Int(0));
    assert_eq!(c.w.out.take(a), vec!["Name alice is taken"]);
    c.w.out.assert_quiet();
    assert!(!c.w.chat.is_waiting(a));
    assert_eq!(c.w.effects(), vec![Effect::Resume(a)]);
    assert_eq!(c.w.name(a), old);

    // Granted: the answer alone changes nothing, the `R` event does.
    c.w.send(a, "/nick alice");
    let call = c.one_call();
    c.reply(call.tag.clone(), Reply::Int(1));
    c.w.out.assert_quiet();
    assert!(c.w.chat.is_waiting(a));
    let event = Builder::new("R")
        .field(&c.me)
        .field(a.as_u64())
        .field(&old)
        .field("alice")
        .build();
    c.feed(&event);
    let line = format!("{old} is now known as alice");
    assert_eq!(c.w.out.take(a), vec![line.clone()]);
    assert_eq!(c.w.out.take(b), vec![line]);
    c.w.out.assert_quiet();
    assert_eq!(c.w.effects(), vec![Effect::Resume(a)]);
    assert_eq!(c.w.name(a), "alice");
    assert_eq!(c.w.chat.names.find("ALICE"), Some(a));
    assert_eq!(c.w.chat.names.find(&old), None);

    // A remote rename is told to the room and frees the old name here.
    let event = Builder::new("R")
        .field(OTHER)
        .field(7)
        .field("bobl")
        .field("bobby")
        .build();
    c.feed(&event);
    assert_eq!(c.w.out.take(a), vec!["bobl is now known as bobby"]);
    assert_eq!(c.w.out.take(b), vec!["bobl is now known as bobby"]);
    assert!(
        c.w.ask(b, "/nick bob1").is_empty(),
        "free again: asks Redis"
    );
    assert_eq!(c.one_call().tag, Pending::Rename(b));
}

// ---- 4. the link goes down ----

#[test]
fn link_down_keeps_this_servers_users_chatting_on_their_own() {
    let mut c = Cw::new();
    let [a, b] = c.users(2)[..] else {
        unreachable!()
    };
    c.remote_arrives(OTHER, 5, "lobby", "zed");
    c.w.settle();
    let (na, nb) = (c.w.name(a), c.w.name(b));

    // In flight when the link fails: a's line, a newcomer, b's rename.
    c.w.send(a, "still here");
    let say = c.one_call();
    let (n, lines) = c.w.connect_from("127.0.0.1:45000");
    assert!(lines.is_empty());
    let arrive = c.one_call();
    assert_eq!(arrive.tag, Pending::Arrive(n, 1));
    c.w.send(b, "/nick bobby");
    let rename = c.one_call();
    assert_eq!(rename.tag, Pending::Rename(b));
    c.w.out.assert_quiet();

    c.w.chat.link_down(
        "connection refused",
        vec![say.tag, arrive.tag, rename.tag],
        c.w.now,
        &mut c.w.out,
    );
    assert_eq!(c.phase(), Phase::Down);
    let line = format!("{na}: still here");
    assert_eq!(c.w.out.take(a), vec![line.clone()]);
    assert_eq!(
        c.w.out.take(b),
        vec![line.clone(), protocol::NAMES_UNAVAILABLE.to_string()]
    );
    // The newcomer is greeted here, then gets the lobby's history, which
    // now has a's line.
    assert_eq!(
        c.w.out.take(n),
        vec![
            "You are 127.0.0.1:45000".to_string(),
            "1 line of history:".into(),
            hist(c.w.now, c.w.now, &line),
            "End of history".into(),
        ]
    );
    c.w.out.assert_quiet();
    let effects = c.w.effects();
    for id in [b, n] {
        assert!(effects.contains(&Effect::Resume(id)), "{effects:?}");
    }
    for id in [a, b, n] {
        assert!(!c.w.chat.is_waiting(id));
    }

    // zed goes without a word; the newcomer arrives as usual.
    c.w.flush();
    assert_eq!(c.w.out.take(a), vec!["127.0.0.1:45000 has arrived"]);
    assert_eq!(c.w.out.take(b), vec!["127.0.0.1:45000 has arrived"]);
    c.w.out.assert_quiet();
    assert_eq!(
        c.who(a),
        vec![
            "3 users in #lobby:".to_string(),
            format!("  {na} (you)"),
            format!("  {nb}"),
            "  127.0.0.1:45000".to_string(),
        ]
    );

    assert_eq!(c.w.ask(b, "/nick bobby"), vec![protocol::NAMES_UNAVAILABLE]);
    assert_eq!(c.w.ask(a, "/msg zed hi"), vec!["No such user: zed"]);
    c.no_calls();

    // Lines go straight to this server's users.
    c.w.send(a, "alone now");
    let line = format!("{na}: alone now");
    for id in [a, b, n] {
        assert_eq!(c.w.out.take(id), vec![line.clone()]);
    }
    c.no_calls();
    assert!(!c.w.chat.is_waiting(a));
}

#[test]
fn a_departure_unanswered_at_link_down_keeps_its_reason() {
    let mut c = Cw::new();
    let [a, b] = c.users(2)[..] else {
        unreachable!()
    };
    let na = c.w.name(a);
    c.w.chat
        .leave(a, &Leave::Quit(Some("bye all".into())), c.w.now);
    let call = c.one_call();
    assert_eq!(call.tag, Pending::Leave(a));
    assert_eq!(
        argv(&call)[2..],
        [a.as_u64().to_string(), "b".into(), "bye all".into()]
    );
    c.w.chat
        .link_down("reset", vec![call.tag], c.w.now, &mut c.w.out);
    assert_eq!(c.flushed(b), vec![format!("{na} has left (bye all)")]);
}

// ---- 5. a server lost ----

#[test]
fn a_lost_servers_users_leave_once_and_free_their_names() {
    let mut c = Cw::new();
    let a = c.connect();
    for (uid, name) in [(1, "z1"), (2, "z2"), (3, "z3")] {
        c.remote_arrives(OTHER, uid, "lobby", name);
    }
    for uid in 1..=4 {
        c.remote_arrives(THIRD, uid, "lobby", &format!("y{uid}"));
    }
    c.w.settle();
    assert_eq!(c.who(a)[0], "8 users in #lobby:");

    let seq = c.incr();
    c.feed(&Builder::new("X").field(OTHER).field(seq).build());
    let mut got = c.flushed(a);
    got.sort();
    assert_eq!(
        got,
        [
            "z1 has left (server lost)",
            "z2 has left (server lost)",
            "z3 has left (server lost)"
        ]
    );
    c.w.out.assert_quiet();

    // Once: the same `X` again changes nothing.
    let seq = c.incr();
    c.feed(&Builder::new("X").field(OTHER).field(seq).build());
    assert!(c.flushed(a).is_empty());
    assert_eq!(c.who(a)[0], "5 users in #lobby:");

    // Their names are free here.
    for name in ["z1", "Z2", "z3"] {
        assert_eq!(c.w.chat.names.find(name), None);
        assert!(c.w.chat.names.check(name, a).is_ok());
    }
    assert!(c.w.ask(a, "/nick z1").is_empty(), "asks Redis, not taken");
    assert_eq!(c.one_call().tag, Pending::Rename(a));

    // More than three: one line.
    let seq = c.incr();
    c.feed(&Builder::new("X").field(THIRD).field(seq).build());
    assert_eq!(c.flushed(a), vec!["4 users have left"]);
    c.w.out.assert_quiet();
}

// ---- 6. snapshot and sync ----

#[test]
fn a_snapshot_and_a_sync_put_remote_users_in_silently_in_entry_order() {
    let mut c = Cw::new();
    let a = c.connect();
    c.w.settle();
    let na = c.w.name(a);
    c.w.chat
        .link_down("pause", Vec::new(), c.w.now, &mut c.w.out);
    c.w.out.assert_quiet();

    let resync = c.link_up();
    let args = argv(&resync);
    // prefix, me, ttl, next seq, again = 0, 0 bans, then a: uid seq room
    // name addr skeleton.
    assert_eq!(args[4], "0", "a fresh registration");
    assert_eq!(args[5], "0");
    assert_eq!(
        args[6..],
        [
            a.as_u64().to_string(),
            "1".into(),
            "lobby".into(),
            na.clone(),
            na.clone(),
            names::skeleton(&na)
        ]
    );
    assert_eq!(c.phase(), Phase::Syncing);

    let snapshot = records(&[
        Builder::new("Z").field(20).build(),
        Builder::new("b").field("10.9.9.9").field("-").build(),
        user_record(OTHER, 2, 9, "lobby", "late", "10.0.0.2:1"),
        user_record(OTHER, 1, 4, "lobby", "early", "10.0.0.1:1"),
        user_record(THIRD, 1, 6, "rust", "elsewhere", "10.0.0.3:1"),
    ]);
    c.feed(&snapshot);
    assert_eq!(c.phase(), Phase::Up);
    c.w.flush();
    c.w.out.assert_quiet();
    assert_eq!(
        c.who(a),
        vec![
            "3 users in #lobby:".to_string(),
            format!("  {na} (you)"),
            "  early".into(),
            "  late".into(),
        ]
    );
    assert_eq!(
        c.w.ask(a, "/rooms"),
        vec![
            "2 rooms:",
            "  #lobby (3 users) (you are here)",
            "  #rust (1 user)"
        ]
    );
    assert!(c.w.chat.is_banned("10.9.9.9".parse().unwrap(), T0));
    assert_eq!(
        c.w.chat.names.find("late").map(ConnId::is_remote),
        Some(true)
    );

    // `Y`: OTHER registered again with other users; replaced silently.
    let sync = records(&[
        Builder::new("Y").field(OTHER).build(),
        user_record(OTHER, 3, 22, "lobby", "newer", "10.0.0.4:1"),
        user_record(OTHER, 1, 4, "lobby", "early", "10.0.0.1:1"),
    ]);
    c.feed(&sync);
    c.w.flush();
    c.w.out.assert_quiet();
    assert_eq!(
        c.who(a),
        vec![
            "3 users in #lobby:".to_string(),
            format!("  {na} (you)"),
            "  early".into(),
            "  newer".into(),
        ]
    );
    assert_eq!(c.w.chat.names.find("late"), None);
    // THIRD's user is untouched.
    assert!(c.w.chat.names.find("elsewhere").is_some());
    // This server's own `Y` changes nothing.
    c.feed(&Builder::new("Y").field(&c.me).build());
    assert_eq!(c.who(a)[0], "3 users in #lobby:");
}

// ---- 7. a remote move ----

#[test]
fn a_remote_move_is_told_to_both_rooms_and_counted() {
    let mut c = Cw::new();
    let [a, b] = c.users(2)[..] else {
        unreachable!()
    };
    c.move_local(b, "rust");
    c.remote_arrives(OTHER, 5, "lobby", "zed");
    c.w.settle();

    let seq = c.incr();
    let event = Builder::new("J")
        .field(OTHER)
        .field(5)
        .field(seq)
        .field("lobby")
        .field("rust")
        .build();
    c.feed(&event);
    c.w.flush();
    assert_eq!(c.w.out.take(a), vec!["zed has left for #rust"]);
    assert_eq!(c.w.out.take(b), vec!["zed has arrived"]);
    c.w.out.assert_quiet();
    assert_eq!(
        c.w.ask(a, "/rooms"),
        vec![
            "2 rooms:",
            "  #rust (2 users)",
            "  #lobby (1 user) (you are here)"
        ]
    );
    let nb = c.w.name(b);
    assert_eq!(
        c.who(b),
        vec![
            "2 users in #rust:".to_string(),
            format!("  {nb} (you)"),
            "  zed".into()
        ]
    );

    // A move from a room zed is not in is ignored.
    let seq = c.incr();
    let stale = Builder::new("J")
        .field(OTHER)
        .field(5)
        .field(seq)
        .field("lobby")
        .field("games")
        .build();
    c.feed(&stale);
    c.w.flush();
    c.w.out.assert_quiet();
    assert_eq!(c.w.ask(b, "/rooms")[0], "2 rooms:");
}

// ---- 8. a remote departure ----

#[test]
fn a_remote_departure_tells_its_reason() {
    let mut c = Cw::new();
    let a = c.connect();
    c.remote_arrives(OTHER, 5, "lobby", "zed");
    c.remote_arrives(OTHER, 6, "lobby", "yo");
    c.remote_arrives(OTHER, 7, "lobby", "ex");
    c.w.settle();

    let seq = c.incr();
    let kicked = Builder::new("L")
        .field(OTHER)
        .field(5)
        .field(seq)
        .field("k")
        .field("op")
        .field("spamming")
        .build();
    c.feed(&kicked);
    assert_eq!(c.flushed(a), vec!["zed has left (kicked by op: spamming)"]);
    assert_eq!(c.w.chat.names.find("zed"), None);

    let seq = c.incr();
    let quit = Builder::new("L")
        .field(OTHER)
        .field(6)
        .field(seq)
        .field("b")
        .field("gone fishing")
        .build();
    c.feed(&quit);
    let seq = c.incr();
    let plain = Builder::new("L")
        .field(OTHER)
        .field(7)
        .field(seq)
        .field("p")
        .build();
    c.feed(&plain);
    assert_eq!(
        c.flushed(a),
        vec!["yo has left (gone fishing)", "ex has left"]
    );
    c.w.out.assert_quiet();
    assert_eq!(c.who(a)[0], "1 user in #lobby:");
}

// ---- 9. a kick from another server ----

#[test]
fn a_kick_event_disconnects_the_local_user_and_its_departure_follows() {
    let mut c = Cw::new();
    let [a, b] = c.users(2)[..] else {
        unreachable!()
    };
    let na = c.w.name(a);
    let kick = Builder::new("K")
        .field(OTHER)
        .field(a.as_u64())
        .field("op")
        .field("spam")
        .build();
    c.feed(&kick);
    assert_eq!(c.w.out.take(a), vec!["You were kicked by op (spam)"]);
    c.w.out.assert_quiet();
    let reason = Leave::Kicked {
        by: "op".into(),
        reason: Some("spam".into()),
    };
    assert_eq!(c.w.effects(), vec![Effect::Disconnect(a, reason.clone())]);

    // The loop closes a: its departure goes through Redis.
    c.w.chat.leave(a, &reason, c.w.now);
    let call = c.one_call();
    assert_eq!(call.tag, Pending::Leave(a));
    assert_eq!(call.args[1], sha(scripts::LEAVE).into_bytes());
    let args = argv(&call);
    assert_eq!(
        args[2..],
        [
            a.as_u64().to_string(),
            "k".into(),
            "op".into(),
            "spam".into()
        ]
    );
    let seq = c.incr();
    let mut event = Builder::new("L").field(&args[1]).field(&args[2]).field(seq);
    for field in &args[3..] {
        event = event.field(field);
    }
    c.feed(&event.build());
    assert_eq!(
        c.flushed(b),
        vec![format!("{na} has left (kicked by op: spam)")]
    );
    c.w.out.assert_quiet();
    assert!(c.w.chat.user(a).is_none());

    // Without a reason; and for nobody.
    let kick = Builder::new("K")
        .field(OTHER)
        .field(b.as_u64())
        .field("op")
        .build();
    c.feed(&kick);
    assert_eq!(c.w.out.take(b), vec!["You were kicked by op"]);
    let kick = Builder::new("K")
        .field(OTHER)
        .field(a.as_u64())
        .field("op")
        .build();
    c.effects_and_quiet_after(&kick);
}

impl Cw {
    /// Takes the effects so far, feeds `payload`, and checks it changed
    /// nothing anyone can see.
    fn effects_and_quiet_after(&mut self, payload: &str) {
        self.w.effects();
        self.feed(payload);
        self.w.flush();
        self.w.out.assert_quiet();
        assert!(self.w.effects().is_empty(), "{payload:?}");
        self.no_calls();
    }
}

// ---- 10. a ban from another server ----

#[test]
fn a_ban_event_kicks_matching_local_users_and_refuses_the_address() {
    let mut w = World::new();
    w.chat = Chat::new(
        settings(),
        None,
        Security {
            oper: OperGate::disabled(),
            exempt: Exempt::none(),
        },
    );
    let mut c = Cw::with(w);
    let v1 = c.connect_from("10.0.0.7:1000");
    let v2 = c.connect_from("10.0.0.7:1001");
    let other = c.connect_from("10.0.0.8:1000");
    c.w.settle();

    let ban = Builder::new("B")
        .field(OTHER)
        .field("10.0.0.7")
        .field("-")
        .field("op")
        .build();
    c.feed(&ban);
    for v in [v1, v2] {
        assert_eq!(c.w.out.take(v), vec!["You were kicked by op (banned)"]);
    }
    assert!(c.w.out.take(other).is_empty());
    let kicked = Leave::Kicked {
        by: "op".into(),
        reason: Some("banned".into()),
    };
    let mut effects = c.w.effects();
    effects.sort_by_key(|e| format!("{e:?}"));
    let mut want = vec![
        Effect::Disconnect(v1, kicked.clone()),
        Effect::Disconnect(v2, kicked),
    ];
    want.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(effects, want);
    assert!(c.w.chat.is_banned("10.0.0.7".parse().unwrap(), T0));
    assert!(!c.w.chat.is_banned("10.0.0.8".parse().unwrap(), T0));
    c.no_calls();

    // An unban from elsewhere lifts it.
    c.feed(&Builder::new("U").field(OTHER).field("10.0.0.7").build());
    assert!(!c.w.chat.is_banned("10.0.0.7".parse().unwrap(), T0));

    // A ban with an end ends.
    let until = T0 + 600;
    let ban = Builder::new("B")
        .field(OTHER)
        .field("10.0.0.9")
        .field(until)
        .field("op")
        .build();
    c.feed(&ban);
    assert!(c.w.chat.is_banned("10.0.0.9".parse().unwrap(), T0 + 599));
    assert!(!c.w.chat.is_banned("10.0.0.9".parse().unwrap(), T0 + 601));

    // This server's own ban coming back is not applied twice.
    let own = Builder::new("B")
        .field(&c.me)
        .field("10.0.0.8")
        .field("-")
        .field("op")
        .build();
    c.effects_and_quiet_after(&own);
}

#[test]
fn a_ban_event_spares_exempt_users() {
    let mut c = Cw::new();
    let a = c.connect();
    c.w.settle();
    let ban = Builder::new("B")
        .field(OTHER)
        .field("127.0.0.1")
        .field("-")
        .field("op")
        .build();
    c.effects_and_quiet_after(&ban);
    assert!(c.w.chat.user(a).is_some());
    assert!(!c.w.chat.is_banned("127.0.0.1".parse().unwrap(), T0));
}

// ---- 11. malformed and stray events ----

#[test]
fn malformed_or_stray_events_are_ignored() {
    let mut c = Cw::new();
    let a = c.connect();
    c.remote_arrives(OTHER, 5, "lobby", "zed");
    c.w.settle();
    let before = c.who(a);
    let mut payloads: Vec<Vec<u8>> = [
        "",
        "?",
        "C",
        "A\u{1f}s",
        "L\u{1f}s\u{1f}1\u{1f}2\u{1f}z",
        "Z\u{1f}x",
        "X",
        "X\u{1f}srv\u{1f}notanumber",
        "K\u{1f}srv\u{1f}nan\u{1f}op",
        "A\u{1f}s\u{1f}1\u{1f}2\u{1f}lobby\u{1f}bob\u{1f}a\u{1e}q",
        "Y\u{1f}srv\u{1e}x",
        "B\u{1f}srv\u{1f}10.0.0.1\u{1f}soon\u{1f}op",
    ]
    .iter()
    .map(|p| p.as_bytes().to_vec())
    .collect();
    payloads.push(b"\xff\xfe".to_vec());
    payloads.push(b"C\x1fsrv\x1f1\x1flobby\x1f1\x1f\xff".to_vec());
    // Well-formed, but about nobody known, or meaningless.
    let stray = [
        Builder::new("A")
            .field(OTHER)
            .field(9)
            .field(50)
            .field("lobby")
            .field("bad")
            .field("not an address")
            .build(),
        Builder::new("A")
            .field(&c.me)
            .field(999)
            .field(51)
            .field("lobby")
            .field("ghost")
            .field("127.0.0.1:1")
            .build(),
        Builder::new("R")
            .field(OTHER)
            .field(999)
            .field("x")
            .field("y")
            .build(),
        Builder::new("R")
            .field(OTHER)
            .field(5)
            .field("notzed")
            .field("y")
            .build(),
        Builder::new("J")
            .field(OTHER)
            .field(999)
            .field(52)
            .field("lobby")
            .field("rust")
            .build(),
        Builder::new("L")
            .field(OTHER)
            .field(999)
            .field(53)
            .field("p")
            .build(),
        Builder::new("M")
            .field(OTHER)
            .field(999)
            .field("x")
            .field("y")
            .build(),
        Builder::new("K")
            .field(OTHER)
            .field(999)
            .field("op")
            .build(),
        Builder::new("B")
            .field(OTHER)
            .field("not-an-address")
            .field("-")
            .field("op")
            .build(),
        Builder::new("U").field(OTHER).field("nothing").build(),
        Builder::new("X")
            .field("ffffffffffffffff")
            .field(54)
            .build(),
        Builder::new("Q")
            .field("ffffffffffffffff")
            .field(55)
            .build(),
    ];
    payloads.extend(stray.iter().map(|p| p.as_bytes().to_vec()));
    for payload in &payloads {
        c.w.effects();
        c.w.chat.on_message(payload, c.w.now, &mut c.w.out);
        c.w.flush();
        assert!(c.w.out.lines.is_empty(), "{payload:?}: {:?}", c.w.out.lines);
        assert!(c.w.effects().is_empty(), "{payload:?}");
        c.no_calls();
    }
    assert_eq!(c.who(a), before);
    assert_eq!(c.w.chat.len(), 2);
    assert_eq!(c.phase(), Phase::Up);
}

#[test]
fn an_ignored_arrival_creates_no_room() {
    let mut c = Cw::with(World::with(Settings {
        max_rooms: 2,
        ..settings()
    }));
    let a = c.connect();
    c.w.settle();
    let stray = Builder::new("A")
        .field(OTHER)
        .field(9)
        .field(50)
        .field("ghost")
        .field("bad")
        .field("not an address")
        .build();
    c.feed(&stray);
    c.no_calls();
    assert_eq!(
        c.w.ask(a, "/rooms"),
        vec!["1 room:", "  #lobby (1 user) (you are here)"]
    );
    // Only the lobby exists, so a second room fits in --max-rooms 2.
    let got = c.w.ask(a, "/join rust");
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(c.one_call().tag, Pending::Move(a, "rust".into()));
}

// ---- more: a quit, a wall, /history ----

#[test]
fn a_server_that_quits_says_goodbye_for_its_users_plainly() {
    let mut c = Cw::new();
    let a = c.connect();
    c.remote_arrives(OTHER, 5, "lobby", "zed");
    c.w.settle();
    let seq = c.incr();
    c.feed(&Builder::new("Q").field(OTHER).field(seq).build());
    assert_eq!(c.flushed(a), vec!["zed has left"]);
    assert_eq!(c.w.chat.names.find("zed"), None);
}

#[test]
fn an_announcement_goes_through_redis_and_to_everyone_here() {
    let mut c = Cw::new();
    let [a, b] = c.users(2)[..] else {
        unreachable!()
    };
    c.move_local(b, "rust");
    let wall = Builder::new("W")
        .field(OTHER)
        .field("[announcement] op: maintenance at noon")
        .build();
    c.feed(&wall);
    for id in [a, b] {
        assert_eq!(
            c.w.out.take(id),
            vec!["[announcement] op: maintenance at noon"]
        );
    }
    c.w.out.assert_quiet();
}

#[test]
fn a_move_and_a_history_unanswered_at_link_down_are_done_here() {
    let mut c = Cw::new();
    let [a, b] = c.users(2)[..] else {
        unreachable!()
    };
    let na = c.w.name(a);
    c.w.send(a, "/join rust");
    let moved = c.one_call();
    assert_eq!(moved.tag, Pending::Move(a, "rust".into()));
    c.w.send(b, "/history 5");
    let history = c.one_call();
    assert_eq!(history.tag, Pending::History(b, "lobby".into(), 5));
    assert_eq!(history.args[0], b"XREVRANGE");
    assert_eq!(history.args[1], b"chatd:history:lobby");
    c.w.out.assert_quiet();

    c.w.chat.link_down(
        "timeout",
        vec![moved.tag, history.tag],
        c.w.now,
        &mut c.w.out,
    );
    assert_eq!(c.w.out.take(a), vec!["You are now in #rust"]);
    assert_eq!(c.w.out.take(b), vec!["No history in #lobby"]);
    assert_eq!(c.flushed(b), vec![format!("{na} has left for #rust")]);
    c.w.out.assert_quiet();
    let effects = c.w.effects();
    assert!(effects.contains(&Effect::Resume(a)) && effects.contains(&Effect::Resume(b)));
}

#[test]
fn taken_for_dead_this_server_registers_again_once() {
    let mut c = Cw::new();
    let a = c.connect();
    c.w.settle();
    let seq = c.incr();
    let me = c.me.clone();
    c.feed(&Builder::new("X").field(&me).field(seq).build());
    let call = c.one_call();
    assert_eq!(call.tag, Pending::Resync);
    assert_eq!(argv(&call)[4], "1", "again, while linked");
    assert_eq!(argv(&call)[6], a.as_u64().to_string());
    assert!(c.w.chat.user(a).is_some(), "its own users stay");
    c.w.flush();
    c.w.out.assert_quiet();
    c.reply(Pending::Heartbeat, Reply::Int(0));
    c.no_calls();
    c.reply(Pending::Resync, Reply::Array(Vec::new()));

    c.reply(Pending::Heartbeat, Reply::Int(0));
    assert_eq!(c.one_call().tag, Pending::Resync);
    c.reply(Pending::Heartbeat, Reply::Int(1));
    c.no_calls();
}

#[test]
fn a_request_redis_reaches_too_late_is_done_here() {
    let mut c = Cw::new();
    let a = c.connect();
    let b = c.connect();
    c.w.settle();
    // Redis's clock, once read, gives every request a deadline.
    c.reply(
        Pending::Clock(T0 * 1000),
        Reply::Array(vec![
            Reply::Bulk(T0.to_string().into_bytes()),
            Reply::Bulk(b"250000".to_vec()),
        ]),
    );
    c.w.send(a, "late line");
    let call = c.one_call();
    let deadline: i64 = String::from_utf8(call.args[5].clone())
        .unwrap()
        .parse()
        .unwrap();
    assert!(deadline > 0, "a deadline once the clock is known");
    // Redis refused it as late: the line is this server's only.
    c.reply(call.tag, Reply::Int(-2));
    let line = format!("{}: late line", c.w.name(a));
    assert_eq!(c.w.out.take(a), vec![line.clone()]);
    assert_eq!(c.w.out.take(b), vec![line]);
    c.w.out.assert_quiet();
}

#[test]
fn a_line_echoed_but_unanswered_when_the_link_fails_is_not_delivered_twice() {
    let mut c = Cw::new();
    let a = c.connect();
    let b = c.connect();
    c.w.settle();
    c.w.send(a, "once");
    let call = c.one_call();
    c.feed(&Cw::echo_of(&call));
    let line = format!("{}: once", c.w.name(a));
    assert_eq!(c.w.out.take(b), vec![line.clone()]);
    c.w.chat
        .link_down("lost", vec![call.tag], c.w.now, &mut c.w.out);
    assert_eq!(c.w.out.take(a), vec![line]);
    assert!(c.w.out.take(b).is_empty(), "delivered once");
    assert_eq!(c.w.chat.history_lines(), 1);
}

#[test]
fn a_users_own_move_applies_from_wherever_it_is_and_ends_its_wait() {
    let mut c = Cw::new();
    let a = c.connect();
    c.w.settle();
    c.w.send(a, "/join rust");
    let call = c.one_call();
    assert!(c.w.chat.is_waiting(a));
    // Redis's record said another room than this server thinks (a race
    // with a registration): the event still moves the user and ends the wait.
    let seq = c.incr();
    let event = Builder::new("J")
        .field(&c.me)
        .field(a.as_u64())
        .field(seq)
        .field("elsewhere")
        .field("rust")
        .build();
    let _ = call;
    c.feed(&event);
    assert!(!c.w.chat.is_waiting(a));
    assert_eq!(c.w.out.take(a), vec!["You are now in #rust"]);
    assert_eq!(c.w.ask(a, "/rooms")[1], "  #rust (1 user) (you are here)");
}
