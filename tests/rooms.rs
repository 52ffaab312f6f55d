//! PROTOCOL.md v2's rooms, history and unique default names, row by row,
//! over real loopback TCP against an in-process server.
//!
//! No test sleeps to let something happen: each waits for the line that
//! says it did. To show that a line was *not* sent to a user, the user
//! sends a probe (`/probe`, an unknown command) after the line it must not
//! get was already seen by someone else; the server runs lines in order on
//! one thread, so a wrongly delivered line would come before the probe's
//! answer.

mod common;

use chatd::Config;
use common::{Client, TestServer};
use socket2::{Domain, Socket, Type};
use std::net::{SocketAddr, TcpStream};

/// The answer to [`probe`].
const PROBE_REPLY: &str = "Unknown command: /probe (try /help)";

/// Checks that nothing is queued for `client` before the answer to a
/// probe it sends now.
fn probe(client: &mut Client) {
    client.send("/probe");
    client.expect(PROBE_REPLY);
}

/// `n` users in the lobby, every arrival notice read.
fn lobby(config: Config, n: usize) -> (TestServer, Vec<Client>) {
    let server = TestServer::start(config);
    let mut clients: Vec<Client> = (0..n).map(|_| server.join()).collect();
    sync(&mut clients);
    (server, clients)
}

/// The last client sends a private message to each of the others, and
/// everyone reads up to it. A private message flushes pending presence
/// first, so afterwards nobody has a notice still to read; and unlike a
/// chat line it leaves no history behind.
fn sync(clients: &mut [Client]) {
    let Some((last, others)) = clients.split_last_mut() else {
        return;
    };
    for other in others {
        last.send(&format!("/msg {} sync", other.name));
        last.skip_until(&format!("[to {}] sync", other.name));
        other.skip_until(&format!("[private] {}: sync", last.name));
    }
}

/// Moves `client` to `room` (lower case, no `#`; a room with no history)
/// and reads the confirmation.
fn join(client: &mut Client, room: &str) {
    client.send(&format!("/join {room}"));
    client.expect(&format!("You are now in #{room}"));
}

/// Moves `mover` to `room` and has each of `heard_by` (users of the
/// mover's old room) read its departure notice.
fn move_to(mover: &mut Client, room: &str, heard_by: &mut [&mut Client]) {
    join(mover, room);
    let line = format!("{} has left for #{room}", mover.name);
    for client in heard_by.iter_mut() {
        client.expect(&line);
    }
}

/// Moves `first`, then `second`, to `room` (a room with no history): the
/// users of their old room, `left_behind`, read both departures, and
/// `first` reads `second` arrive.
fn move_pair_to(
    first: &mut Client,
    second: &mut Client,
    room: &str,
    left_behind: &mut [&mut Client],
) {
    let mut heard_by: Vec<&mut Client> = left_behind.iter_mut().map(|c| &mut **c).collect();
    heard_by.push(&mut *second);
    move_to(first, room, &mut heard_by);
    move_to(second, room, left_behind);
    first.expect(&format!("{} has arrived", second.name));
}

/// `speaker` says `text` (a chat line, or `/me ACTION`): it and each of
/// `heard_by` read the line as broadcast, which is returned.
fn say(speaker: &mut Client, text: &str, heard_by: &mut [&mut Client]) -> String {
    speaker.send(text);
    let line = match text.strip_prefix("/me ") {
        Some(action) => format!("* {} {action}", speaker.name),
        None => format!("{}: {text}", speaker.name),
    };
    speaker.expect(&line);
    for client in heard_by.iter_mut() {
        client.expect(&line);
    }
    line
}

/// Sends `command` and reads `answer`, line by line.
fn ask(client: &mut Client, command: &str, answer: &[&str]) {
    client.send(command);
    for line in answer {
        client.expect(line);
    }
}

/// The text of a history line `[HH:MM] TEXT`, or a panic if it does not
/// have that shape. (The time itself depends on the clock; the unit tests
/// check it exactly.)
fn history_text(line: &str) -> &str {
    let b = line.as_bytes();
    let shaped = b.len() > 8
        && b[0] == b'['
        && b[1..3].iter().all(u8::is_ascii_digit)
        && b[3] == b':'
        && b[4..6].iter().all(u8::is_ascii_digit)
        && &b[6..8] == b"] ";
    assert!(shaped, "not a `[HH:MM] LINE` history line: {line:?}");
    &line[8..]
}

/// Reads a history block and checks its head, shape and end; returns the
/// lines' texts.
fn expect_history(client: &mut Client, texts: &[String]) {
    let head = match texts.len() {
        1 => "1 line of history:".to_string(),
        n => format!("{n} lines of history:"),
    };
    client.expect(&head);
    for text in texts {
        let line = client.line();
        assert_eq!(history_text(&line), text, "{}", client.name);
    }
    client.expect("End of history");
}

// ---- connect, with the lobby's history ----

#[test]
fn connect_greets_then_replays_the_lobby_history() {
    let server = TestServer::default_config();
    let mut a = server.join();
    a.send("hi");
    a.send("/me waves");
    let said = [format!("{}: hi", a.name), format!("* {} waves", a.name)];
    a.expect(&said[0]);
    a.expect(&said[1]);
    let mut b = server.join();
    expect_history(&mut b, &said);
    probe(&mut b);
    a.expect(&format!("{} has arrived", b.name));
}

#[test]
fn connect_replays_the_last_history_lines_or_none() {
    let config = Config {
        history: 1,
        ..Config::ephemeral()
    };
    let server = TestServer::start(config);
    let mut a = server.join();
    for word in ["one", "two"] {
        say(&mut a, word, &mut []);
    }
    let mut b = server.join();
    expect_history(&mut b, &[format!("{}: two", a.name)]);
    probe(&mut b);

    let config = Config {
        history: 0,
        ..Config::ephemeral()
    };
    let server = TestServer::start(config);
    let mut a = server.join();
    let unseen = say(&mut a, "unseen", &mut []);
    let mut b = server.join();
    probe(&mut b);
    // `/history` still answers, whatever --history is.
    b.send("/history");
    expect_history(&mut b, &[unseen]);
}

#[test]
fn a_fresh_lobby_has_no_history_block() {
    let server = TestServer::default_config();
    let mut a = server.join();
    probe(&mut a);
    a.send("/history");
    a.expect("No history in #lobby");
}

// ---- /join ----

#[test]
fn join_ok_already_and_invalid() {
    let server = TestServer::default_config();
    let mut a = server.join();
    a.send("/join #Rust");
    a.expect("You are now in #rust");
    a.send("/join rust");
    a.expect("You are already in #rust");
    a.send("/JOIN #RUST");
    a.expect("You are already in #rust");
    for (typed, shown) in [
        ("a b", "a b"),
        ("#a b", "a b"),
        ("#Bad!", "Bad!"),
        ("x:1", "x:1"),
    ] {
        a.send(&format!("/join {typed}"));
        a.expect(&format!(
            "Invalid room name: {shown} (1-32 letters, digits, _ - .)"
        ));
    }
    let long = "r".repeat(33);
    a.send(&format!("/join {long}"));
    a.expect(&format!(
        "Invalid room name: {long} (1-32 letters, digits, _ - .)"
    ));
    a.send("/join");
    a.expect("Usage: /join ROOM");
    a.send("/join lobby");
    a.expect("You are now in #lobby");
    a.send("/join #LOBBY");
    a.expect("You are already in #lobby");
}

#[test]
fn too_many_rooms_and_a_move_that_frees_its_room() {
    let config = Config {
        max_rooms: 2,
        ..Config::ephemeral()
    };
    let (_server, mut c) = lobby(config, 2);
    let [a, b] = &mut c[..] else { unreachable!() };
    move_to(a, "one", &mut [b]);
    b.send("/join two");
    b.expect("Too many rooms (max 2)");
    // a is alone in #one: its move frees #one first.
    join(a, "two");
    b.send("/join three");
    b.expect("Too many rooms (max 2)");
    // An existing room can always be joined.
    b.send("/join #two");
    b.expect("You are now in #two");
    a.expect(&format!("{} has arrived", b.name));
    // #two does not empty when a leaves it: no place for a third room.
    a.send("/join three");
    a.expect("Too many rooms (max 2)");
    probe(a);
    probe(b);
}

#[test]
fn departures_and_arrivals_across_rooms() {
    let (_server, mut c) = lobby(Config::ephemeral(), 4);
    let [a, b, x, y] = &mut c[..] else {
        unreachable!()
    };
    move_pair_to(x, y, "rust", &mut [a, b]);
    // b moves: the lobby hears where it went, #rust hears it arrive.
    b.send("/join #RUST");
    b.expect("You are now in #rust");
    a.expect(&format!("{} has left for #rust", b.name));
    x.expect(&format!("{} has arrived", b.name));
    y.expect(&format!("{} has arrived", b.name));
    // A disconnect in #rust is told to #rust only.
    let name = b.name.clone();
    b.send("/quit off");
    b.expect("Bye");
    b.expect_eof();
    x.expect(&format!("{name} has left (off)"));
    y.expect(&format!("{name} has left (off)"));
    probe(a);
    // Back to the lobby.
    move_to(x, "lobby", &mut [y]);
    a.expect(&format!("{} has arrived", x.name));
    probe(x);
    probe(y);
}

#[test]
fn chat_and_actions_stay_in_their_room() {
    let (_server, mut c) = lobby(Config::ephemeral(), 4);
    let [a, b, x, y] = &mut c[..] else {
        unreachable!()
    };
    move_pair_to(x, y, "rust", &mut [a, b]);
    say(x, "hello rust", &mut [y]);
    say(y, "/me waves", &mut [x]);
    probe(a);
    say(a, "hello lobby", &mut [b]);
    probe(x);
    probe(y);
}

#[test]
fn renames_are_told_to_the_room_only_and_names_are_global() {
    let (_server, mut c) = lobby(Config::ephemeral(), 3);
    let [a, b, x] = &mut c[..] else {
        unreachable!()
    };
    move_to(x, "rust", &mut [a, b]);
    x.rename("Xavier", &mut []);
    probe(a);
    a.send("/nick xavier");
    a.expect("Name xavier is taken");
    a.rename("Alice", &mut [b]);
    probe(x);
}

#[test]
fn private_messages_cross_rooms() {
    let (_server, mut c) = lobby(Config::ephemeral(), 3);
    let [a, b, x] = &mut c[..] else {
        unreachable!()
    };
    move_to(x, "far", &mut [a, b]);
    x.rename("Bob", &mut []);
    a.send("/msg bOB  across  rooms");
    x.expect(&format!("[private] {}: across  rooms", a.name));
    a.expect("[to Bob] across  rooms");
    x.send(&format!("/msg {} back", a.name.to_uppercase()));
    a.expect("[private] Bob: back");
    x.expect(&format!("[to {}] back", a.name));
    a.send("/msg nobody hi");
    a.expect("No such user: nobody");
    probe(b);
    // Private messages are not history.
    x.send("/history");
    x.expect("No history in #far");
}

// ---- /rooms and who ----

#[test]
fn rooms_most_users_first_then_by_name() {
    let (_server, mut c) = lobby(Config::ephemeral(), 6);
    {
        let [a, b, d, e, f, g] = &mut c[..] else {
            unreachable!()
        };
        move_pair_to(a, b, "b", &mut [d, e, f, g]);
        move_pair_to(d, e, "a", &mut [f, g]);
        move_to(f, "c", &mut [g]);
    }
    ask(
        &mut c[4],
        "/rooms",
        &[
            "4 rooms:",
            "  #a (2 users)",
            "  #b (2 users)",
            "  #c (1 user) (you are here)",
            "  #lobby (1 user)",
        ],
    );
    ask(
        &mut c[5],
        "/ROOMS",
        &[
            "4 rooms:",
            "  #a (2 users)",
            "  #b (2 users)",
            "  #c (1 user)",
            "  #lobby (1 user) (you are here)",
        ],
    );
    // The emptied lobby is not listed; #c went away with its last user.
    join(&mut c[5], "b");
    join(&mut c[4], "a");
    ask(
        &mut c[4],
        "/rooms",
        &[
            "2 rooms:",
            "  #a (3 users) (you are here)",
            "  #b (3 users)",
        ],
    );
}

#[test]
fn one_room_one_user_is_singular() {
    let server = TestServer::default_config();
    let mut a = server.join();
    ask(
        &mut a,
        "/rooms",
        &["1 room:", "  #lobby (1 user) (you are here)"],
    );
    probe(&mut a);
}

#[test]
fn who_lists_the_room_in_entry_order() {
    let (_server, mut c) = lobby(Config::ephemeral(), 4);
    let [a, b, x, y] = &mut c[..] else {
        unreachable!()
    };
    move_to(x, "rust", &mut [a, b, y]);
    // b goes and comes back: now the latest to enter the lobby.
    move_to(b, "tmp", &mut [a, y]);
    join(b, "lobby");
    a.expect(&format!("{} has arrived", b.name));
    y.expect(&format!("{} has arrived", b.name));
    let answer = [
        "3 users in #lobby:",
        &format!("  {}", a.name),
        &format!("  {} (you)", y.name),
        &format!("  {}", b.name),
    ];
    ask(y, "who", &answer);
    let answer = ["1 user in #rust:", &format!("  {} (you)", x.name)];
    ask(x, "/who", &answer);
}

// ---- /history ----

#[test]
fn history_with_and_without_n() {
    let server = TestServer::default_config();
    let mut a = server.join();
    let mut said = Vec::new();
    for i in 0..25 {
        a.send(&format!("line {i}"));
        said.push(format!("{}: line {i}", a.name));
    }
    for line in &said {
        a.expect(line);
    }
    a.send("/history");
    expect_history(&mut a, &said[5..]);
    a.send("/history 3");
    expect_history(&mut a, &said[22..]);
    a.send("/history 1");
    expect_history(&mut a, &said[24..]);
    a.send("/history 1000");
    expect_history(&mut a, &said);
    for bad in ["0", "1001", "x", "-1", "2 3"] {
        a.send(&format!("/history {bad}"));
        a.expect("Usage: /history [N]");
    }
}

#[test]
fn no_history_in_a_new_room_and_only_chat_and_actions_are_kept() {
    let (_server, mut c) = lobby(Config::ephemeral(), 2);
    let [a, b] = &mut c[..] else { unreachable!() };
    a.send("/join Quiet");
    a.expect("You are now in #quiet");
    b.expect(&format!("{} has left for #quiet", a.name));
    a.send("/history");
    a.expect("No history in #quiet");
    a.send("/history 7");
    a.expect("No history in #quiet");
    // Notices, renames, private messages and replies are not history.
    a.rename("Ann", &mut []);
    a.send(&format!("/msg {} psst", b.name));
    a.expect(&format!("[to {}] psst", b.name));
    b.expect("[private] Ann: psst");
    ask(a, "/who", &["1 user in #quiet:", "  Ann (you)"]);
    a.send("/history");
    a.expect("No history in #quiet");
    a.send("kept");
    a.expect("Ann: kept");
    a.send("/me kept too");
    a.expect("* Ann kept too");
    a.send("/history");
    expect_history(a, &["Ann: kept".to_string(), "* Ann kept too".to_string()]);
    // The lobby's history is its own.
    b.send("/history");
    b.expect("No history in #lobby");
}

#[test]
fn join_replays_the_rooms_history_but_not_what_comes_after() {
    let (_server, mut c) = lobby(Config::ephemeral(), 2);
    let [a, b] = &mut c[..] else { unreachable!() };
    move_to(a, "rust", &mut [b]);
    let before = say(a, "before", &mut []);
    join(b, "rust");
    expect_history(b, std::slice::from_ref(&before));
    a.expect(&format!("{} has arrived", b.name));
    let after = say(a, "after", &mut [b]);
    // An emptied room goes away, its history stays.
    move_to(a, "lobby", &mut [b]);
    join(b, "lobby");
    a.expect(&format!("{} has arrived", b.name));
    ask(
        b,
        "/rooms",
        &["1 room:", "  #lobby (2 users) (you are here)"],
    );
    join(b, "rust");
    expect_history(b, &[before, after]);
}

// ---- Names: the `~2` suffix ----

/// A server with `listeners` listeners on 127.0.0.1 (the harness's
/// `TestServer::start` forces one).
fn multi_server(listeners: usize) -> TestServer {
    let server = TestServer::start_as_configured(Config {
        listen: vec!["127.0.0.1:0".parse().unwrap(); listeners],
        ..Config::ephemeral()
    });
    assert_eq!(server.addrs.len(), listeners);
    server
}

/// Connects to `to` from the local address `from` (port 0 picks one),
/// sharing the port with other sockets bound the same way.
fn connect_from(from: SocketAddr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.set_reuse_port(true).expect("SO_REUSEPORT");
    socket
        .bind(&from.into())
        .expect("bind the shared local address");
    socket.connect(&to.into()).expect("connect");
    socket.into()
}

#[test]
fn the_same_client_address_on_several_listeners_gets_distinct_names() {
    let server = multi_server(3);
    let first = connect_from("127.0.0.1:0".parse().unwrap(), server.addrs[0]);
    let local = first.local_addr().unwrap();
    let mut x1 = Client::from_stream(first);
    x1.expect(&format!("You are {local}"));
    let mut x2 = Client::from_stream(connect_from(local, server.addrs[1]));
    assert_eq!(x2.name, local.to_string(), "same client address");
    x2.name = format!("{local}~2");
    x2.expect(&format!("You are {local}~2"));
    let mut x3 = Client::from_stream(connect_from(local, server.addrs[2]));
    x3.name = format!("{local}~3");
    x3.expect(&format!("You are {local}~3"));
    let other = Client::join(server.addrs[0]);
    // Arrival notices depend on how the four fell into batches: skip them.
    let mut all = [x1, x2, x3, other];
    sync(&mut all);
    let [x1, x2, x3, other] = &mut all;
    let names = other.who();
    assert_eq!(
        names,
        vec![
            local.to_string(),
            format!("{local}~2"),
            format!("{local}~3"),
            format!("{} (you)", other.name),
        ]
    );
    // The reported bug: a rename of one removed the other from the name
    // index, so /msg could no longer find it.
    x1.rename("first", &mut [x2, x3, other]);
    other.send(&format!("/msg {local}~2 still there?"));
    other.expect(&format!("[to {local}~2] still there?"));
    x2.expect(&format!("[private] {}: still there?", other.name));
    x2.rename("second", &mut [x1, x3, other]);
    other.send(&format!("/msg {local}~3 and you?"));
    other.expect(&format!("[to {local}~3] and you?"));
    x3.expect(&format!("[private] {}: and you?", other.name));
    other.send("/msg FIRST hi");
    other.expect("[to first] hi");
    x1.expect(&format!("[private] {}: hi", other.name));
    other.send(&format!("/msg {local} hi"));
    other.expect(&format!("No such user: {local}"));
    probe(x2);
    probe(x3);
}

// ---- Transport, presence and shutdown across rooms ----

#[test]
fn line_too_long_in_a_room_keeps_the_user_there() {
    let config = Config {
        max_line: 100,
        ..Config::ephemeral()
    };
    let (_server, mut c) = lobby(config, 3);
    let [a, b, x] = &mut c[..] else {
        unreachable!()
    };
    move_pair_to(a, b, "r", &mut [x]);
    a.send(&"x".repeat(150));
    a.expect("Line too long (max 100 bytes), discarded");
    say(a, "still in #r", &mut [b]);
    probe(x);
    a.send("/who");
    a.expect("2 users in #r:");
}

#[test]
fn four_moving_in_at_once_are_counted_in_the_room_they_enter() {
    let (_server, mut c) = lobby(Config::ephemeral(), 6);
    let mut lobby_watcher = c.remove(0);
    let mut room_watcher = c.remove(0);
    join(&mut room_watcher, "busy");
    lobby_watcher.expect(&format!("{} has left for #busy", room_watcher.name));
    for client in c.iter_mut() {
        client.expect(&format!("{} has left for #busy", room_watcher.name));
    }
    // All four ask at once; whether their moves fall into one batch or
    // several depends on timing, so count what each watcher hears.
    for client in c.iter_mut() {
        client.send("/join busy");
    }
    let count = |watcher: &mut Client, what: &str| {
        let mut seen = 0;
        while seen < 4 {
            let line = watcher.line();
            let n = line
                .strip_suffix(&format!(" users have {what}"))
                .map(|n| n.parse::<usize>().unwrap());
            match n {
                Some(n) => {
                    assert!(n > 3, "{line}");
                    seen += n;
                }
                None => {
                    assert!(line.contains(&format!(" has {what}")), "{line}");
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 4);
    };
    count(&mut room_watcher, "arrived");
    count(&mut lobby_watcher, "left");
    room_watcher.send("/who");
    room_watcher.expect("5 users in #busy:");
}

#[test]
fn shutdown_reaches_users_in_every_room() {
    let (server, mut c) = lobby(Config::ephemeral(), 3);
    {
        let [a, b, x] = &mut c[..] else {
            unreachable!()
        };
        move_to(a, "one", &mut [b, x]);
        move_to(b, "two", &mut [x]);
        probe(a);
        probe(b);
        probe(x);
    }
    server.stop();
    for client in c.iter_mut() {
        client.expect("Server is shutting down");
        client.expect_eof();
    }
}
