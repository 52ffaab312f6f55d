//! PROTOCOL.md, row by row, over real loopback TCP against an in-process
//! server. Each test names the row it checks.

mod common;

use chatd::Config;
use chatd::flood::FloodLimit;
use common::{Client, TestServer};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `n` users in one room, every arrival notice already read, so each
/// client's next line is whatever the test causes.
fn room(config: Config, n: usize) -> (TestServer, Vec<Client>) {
    let server = TestServer::start(config);
    let mut clients: Vec<Client> = (0..n).map(|_| server.join()).collect();
    sync(&mut clients);
    (server, clients)
}

/// Every client's greeted name, by index (a copy, so lines can be formatted
/// while a client is borrowed for reading).
fn names(clients: &[Client]) -> Vec<String> {
    clients.iter().map(|c| c.name.clone()).collect()
}

/// The last client says something; everyone reads up to it. Broadcasts
/// flush pending presence first, so afterwards nobody has notices pending.
fn sync(clients: &mut [Client]) {
    let last = clients.len() - 1;
    clients[last].send("sync");
    let line = format!("{}: sync", clients[last].name);
    for client in clients.iter_mut() {
        client.skip_until(&line);
    }
}

// ---- "What the server sends" ----

#[test]
fn connect_greets_newcomer_and_announces_to_others() {
    let server = TestServer::default_config();
    let mut alice = server.join();
    let bob = server.join();
    alice.expect(&format!("{} has arrived", bob.name));
}

#[test]
fn newcomer_never_hears_of_earlier_users_and_its_first_line_follows_its_arrival() {
    let server = TestServer::default_config();
    let mut alice = server.join();
    let mut bob = server.join();
    bob.send("first!");
    alice.expect(&format!("{} has arrived", bob.name));
    alice.expect(&format!("{}: first!", bob.name));
    bob.expect(&format!("{}: first!", bob.name));
}

#[test]
fn chat_line_goes_to_everyone_sender_included() {
    let (_server, mut c) = room(Config::ephemeral(), 3);
    let n = names(&c);
    c[1].send("hello there");
    let line = format!("{}: hello there", n[1]);
    for client in c.iter_mut() {
        client.expect(&line);
    }
}

#[test]
fn me_is_an_action_for_everyone() {
    let (_server, mut c) = room(Config::ephemeral(), 2);
    let n = names(&c);
    c[0].send("/me waves");
    let line = format!("* {} waves", n[0]);
    c[0].expect(&line);
    c[1].expect(&line);
    c[0].send("/me");
    c[0].expect("Usage: /me TEXT");
}

#[test]
fn rename_is_announced_to_everyone() {
    let (_server, mut c) = room(Config::ephemeral(), 2);
    let old = c[0].name.clone();
    c[0].send("/nick Alice");
    c[0].expect(&format!("{old} is now known as Alice"));
    c[1].expect(&format!("{old} is now known as Alice"));
    c[1].send("rename|Bob");
    let old_bob = c[1].name.clone();
    c[0].expect(&format!("{old_bob} is now known as Bob"));
    c[1].expect(&format!("{old_bob} is now known as Bob"));
    c[0].send("/name Carol");
    c[0].expect("Alice is now known as Carol");
    c[1].expect("Alice is now known as Carol");
}

#[test]
fn eof_announces_departure_once() {
    let (_server, mut c) = room(Config::ephemeral(), 2);
    let n = names(&c);
    let name = c[0].name.clone();
    c[0].shutdown_write();
    c[0].expect_eof();
    c[1].expect(&format!("{name} has left"));
    c[1].send("still here");
    c[1].expect(&format!("{}: still here", n[1]));
}

#[test]
fn reset_announces_departure() {
    let (_server, mut c) = room(Config::ephemeral(), 2);
    let gone = c.remove(0);
    let name = gone.name.clone();
    let socket = socket2::SockRef::from(gone.stream());
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    drop(gone);
    c[0].expect(&format!("{name} has left"));
}

#[test]
fn quit_says_bye_closes_and_announces() {
    let (_server, mut c) = room(Config::ephemeral(), 3);
    let (n0, n1) = (c[0].name.clone(), c[1].name.clone());
    c[0].send("/quit");
    c[0].expect("Bye");
    c[0].expect_eof();
    c[2].expect(&format!("{n0} has left"));
    c[1].send("/QUIT gone fishing");
    c[1].skip_until("Bye");
    c[1].expect_eof();
    c[2].expect(&format!("{n1} has left (gone fishing)"));
}

#[test]
fn idle_user_is_kicked_within_a_tick_while_active_user_stays() {
    let config = Config {
        idle_timeout: Some(Duration::from_secs(1)),
        ..Config::ephemeral()
    };
    let server = TestServer::start(config);
    let mut active = server.join();
    let mut idle = server.join();
    let idle_since = Instant::now();
    active.expect(&format!("{} has arrived", idle.name));
    // The active user presses Enter every 200 ms: empty lines are activity.
    let pinger = std::thread::spawn({
        let mut stream = active.stream().try_clone().unwrap();
        move || {
            for _ in 0..12 {
                stream.write_all(b"\n").unwrap();
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });
    idle.expect("Disconnected: idle for 1 s");
    let waited = idle_since.elapsed();
    idle.expect_eof();
    assert!(waited >= Duration::from_secs(1), "kicked early: {waited:?}");
    assert!(waited < Duration::from_secs(4), "kicked late: {waited:?}");
    active.expect(&format!("{} has left (idle timeout)", idle.name));
    pinger.join().unwrap();
    active.send("/who");
    active.expect("1 user in #lobby:");
    active.expect(&format!("  {} (you)", active.name));
}

#[test]
fn idle_timeout_zero_never_kicks() {
    let config = Config {
        idle_timeout: None,
        ..Config::ephemeral()
    };
    let server = TestServer::start(config);
    let mut c = server.join();
    c.send("/who");
    c.expect("1 user in #lobby:");
}

#[test]
fn server_full_refuses_with_a_line() {
    let config = Config {
        max_clients: Some(2),
        ..Config::ephemeral()
    };
    let (server, mut c) = room(config, 2);
    let mut third = Client::connect(server.addr);
    third.expect("Server is full, try again later");
    third.expect_eof();
    let name = c[0].name.clone();
    c[0].send("/quit");
    c[1].expect(&format!("{name} has left"));
    let _fourth = server.join();
}

#[test]
fn slow_reader_is_cut_off_while_others_get_every_line() {
    let config = Config {
        max_outbound: 64 * 1024,
        flood: FloodLimit { rate: 0, burst: 1 },
        ..Config::ephemeral()
    };
    let server = TestServer::start(config);
    let mut observer = server.join();
    let mut sender = server.join();
    let mut writer = sender.stream().try_clone().unwrap();
    // The slow user asks for a tiny receive buffer and never reads.
    let slow = common::connect_with_recv_buffer(server.addr, 4096);
    let slow_name = slow.local_addr().unwrap().to_string();
    observer.skip_until(&format!("{} has arrived", sender.name));
    observer.skip_until(&format!("{slow_name} has arrived"));

    const LINES: usize = 6000;
    const WINDOW: usize = 50;
    let observed = Arc::new(AtomicUsize::new(0));
    let payload = "x".repeat(1000);
    let observe = std::thread::spawn({
        let observed = Arc::clone(&observed);
        move || {
            let mut cut_off = false;
            while observed.load(Ordering::SeqCst) < LINES || !cut_off {
                let line = observer.line();
                if line == format!("{slow_name} has left (too slow)") {
                    cut_off = true;
                } else if let Some((_, text)) = line.split_once(": ") {
                    let seq: usize = text.split(' ').next().unwrap().parse().unwrap();
                    assert_eq!(seq, observed.load(Ordering::SeqCst), "in order, none lost");
                    observed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    });
    // The sender reads its own echoes, and keeps at most WINDOW lines ahead
    // of the observer, so that only the user who never reads falls behind.
    let sender_name = sender.name.clone();
    let echo = std::thread::spawn(move || {
        let mut echoed = 0;
        while echoed < LINES {
            if sender.line().starts_with(&format!("{sender_name}: ")) {
                echoed += 1;
            }
        }
    });
    for seq in 0..LINES {
        while seq >= observed.load(Ordering::SeqCst) + WINDOW {
            std::thread::yield_now();
        }
        writer
            .write_all(format!("{seq} {payload}\n").as_bytes())
            .unwrap();
    }
    echo.join().unwrap();
    observe.join().unwrap();
    drop(slow);
}

#[test]
fn a_legal_burst_from_everyone_cuts_off_no_reader() {
    // 20 users each send a full default burst (40 lines of 500 bytes) at
    // once: 400 KB for every recipient, more than --max-outbound, queued in
    // one loop turn. Users who read must not be taken for slow ones.
    const USERS: usize = 20;
    const BURST: usize = 40;
    let server = TestServer::default_config();
    let mut clients: Vec<Client> = (0..USERS).map(|_| server.join()).collect();
    sync(&mut clients);
    let text = "z".repeat(490);
    let burst: String = (0..BURST).map(|i| format!("{i:03} {text}\n")).collect();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let burst = burst.clone();
            std::thread::spawn(move || {
                client.send_raw(burst.as_bytes());
                for _ in 0..USERS * BURST {
                    let line = client.line();
                    assert!(!line.contains("too slow"), "{line}");
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
}

#[test]
fn shutdown_tells_everyone() {
    let (server, mut c) = room(Config::ephemeral(), 3);
    server.stop();
    for client in c.iter_mut() {
        client.expect("Server is shutting down");
        client.expect_eof();
    }
}

// ---- "Commands" ----

#[test]
fn who_lists_oldest_first_and_marks_you() {
    let (_server, mut c) = room(Config::ephemeral(), 3);
    let n = names(&c);
    let old = c[1].name.clone();
    c[1].send("/nick Zed");
    for client in c.iter_mut() {
        client.expect(&format!("{old} is now known as Zed"));
    }
    c[2].send("who");
    c[2].expect("3 users in #lobby:");
    c[2].expect(&format!("  {}", n[0]));
    c[2].expect("  Zed");
    c[2].expect(&format!("  {} (you)", n[2]));
    c[0].send("/WHO");
    c[0].expect("3 users in #lobby:");
    c[0].expect(&format!("  {} (you)", n[0]));
}

#[test]
fn who_with_one_user_is_singular() {
    let server = TestServer::default_config();
    let mut c = server.join();
    c.send("who");
    c.expect("1 user in #lobby:");
    c.expect(&format!("  {} (you)", c.name));
}

/// v2: letters of any one script (UTS #39 single-script rule); a name that
/// mixes scripts, such as Latin with Han, is invalid.
#[test]
fn names_may_use_unicode_letters() {
    let (_server, mut c) = room(Config::ephemeral(), 2);
    let n = names(&c);
    let old = c[0].name.clone();
    c[0].send("/nick Zoë_Ærø-1.x");
    c[0].expect(&format!("{old} is now known as Zoë_Ærø-1.x"));
    c[1].expect(&format!("{old} is now known as Zoë_Ærø-1.x"));
    c[1].send("/msg zoË_æRØ-1.X hi");
    c[0].expect(&format!("[private] {}: hi", n[1]));
    c[1].expect("[to Zoë_Ærø-1.x] hi");
    c[1].send("/nick 日本語かな_1");
    c[1].expect(&format!("{} is now known as 日本語かな_1", n[1]));
    c[0].skip_until(&format!("{} is now known as 日本語かな_1", n[1]));
    c[0].send("/nick Zoë_日本");
    c[0].expect("Invalid name: Zoë_日本 (1-32 letters, digits, _ - .)");
}

#[test]
fn names_are_unique_without_case_but_case_changes_are_allowed() {
    let (_server, mut c) = room(Config::ephemeral(), 2);
    let old = c[0].name.clone();
    c[0].send("/nick bob");
    c[0].expect(&format!("{old} is now known as bob"));
    c[1].skip_until(&format!("{old} is now known as bob"));
    c[1].send("/nick BOB");
    c[1].expect("Name BOB is taken");
    c[0].send("/nick bob");
    c[0].expect("You are already bob");
    c[0].send("/nick Bob");
    c[0].expect("bob is now known as Bob");
    c[1].expect("bob is now known as Bob");
}

#[test]
fn invalid_names_are_refused() {
    let server = TestServer::default_config();
    let mut c = server.join();
    let too_long = "a".repeat(33);
    for bad in ["a b", "x:1", "127.0.0.1:9", "bob!", too_long.as_str()] {
        c.send(&format!("/nick {bad}"));
        c.expect(&format!(
            "Invalid name: {bad} (1-32 letters, digits, _ - .)"
        ));
    }
    c.send("rename|no way");
    c.expect("Invalid name: no way (1-32 letters, digits, _ - .)");
    c.send(&format!("/nick {}", "é".repeat(32)));
    c.expect(&format!("{} is now known as {}", c.name, "é".repeat(32)));
}

#[test]
fn usage_lines_for_missing_arguments() {
    let server = TestServer::default_config();
    let mut c = server.join();
    for (line, usage) in [
        ("/nick", "Usage: /nick NAME"),
        ("/nick   ", "Usage: /nick NAME"),
        ("/name", "Usage: /nick NAME"),
        ("/msg", "Usage: /msg NAME TEXT"),
        ("/msg someone", "Usage: /msg NAME TEXT"),
        ("/me", "Usage: /me TEXT"),
        ("rename|", "Usage: rename|NAME"),
    ] {
        c.send(line);
        c.expect(usage);
    }
}

#[test]
fn private_messages() {
    let (_server, mut c) = room(Config::ephemeral(), 3);
    let n = names(&c);
    let old = c[1].name.clone();
    c[1].send("/nick Bob");
    for client in c.iter_mut() {
        client.expect(&format!("{old} is now known as Bob"));
    }
    c[0].send("/msg BOB   psst,  secret");
    c[1].expect(&format!("[private] {}: psst,  secret", n[0]));
    c[0].expect("[to Bob] psst,  secret");
    c[0].send("/msg nobody hello");
    c[0].expect("No such user: nobody");
    c[2].send("after");
    c[2].expect(&format!("{}: after", n[2]));
}

#[test]
fn help_ends_with_end_of_help() {
    let server = TestServer::default_config();
    let mut c = server.join();
    c.send("/help");
    let lines = c.skip_until("End of help");
    assert!(lines.len() >= 6, "one line per command: {lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("/msg")));
}

#[test]
fn unknown_commands_and_slash_escapes() {
    let (_server, mut c) = room(Config::ephemeral(), 2);
    let n = names(&c);
    c[0].send("/dance now");
    c[0].expect("Unknown command: /dance (try /help)");
    c[0].send("//who");
    c[0].expect(&format!("{}: /who", n[0]));
    c[1].expect(&format!("{}: /who", n[0]));
    c[0].send(" /who");
    c[0].expect(&format!("{}:  /who", n[0]));
    c[0].send("Who");
    c[0].expect(&format!("{}: Who", n[0]));
}

// ---- "Transport and lines" ----

#[test]
fn crlf_and_one_trailing_cr_are_removed() {
    let server = TestServer::default_config();
    let mut c = server.join();
    c.send_raw(b"telnet user\r\n");
    c.expect(&format!("{}: telnet user", c.name));
}

#[test]
fn invalid_utf8_control_chars_and_escapes_are_cleaned() {
    let server = TestServer::default_config();
    let mut c = server.join();
    c.send_raw(b"bad \xff\xfe byte\n");
    c.expect(&format!("{}: bad \u{fffd}\u{fffd} byte", c.name));
    c.send_raw(b"\x1b[31mred\x1b[0m \x07bell\x00nul\ttab   \t\n");
    c.expect(&format!("{}: [31mred[0m bellnul\ttab", c.name));
    c.send_raw("c1\u{9b}2J done\n".as_bytes());
    c.expect(&format!("{}: c12J done", c.name));
}

#[test]
fn empty_lines_are_not_broadcast() {
    let (_server, mut c) = room(Config::ephemeral(), 2);
    let n = names(&c);
    c[0].send_raw(b"\n   \n\x01\x02\nreal\n");
    c[1].expect(&format!("{}: real", n[0]));
}

#[test]
fn a_line_split_over_many_reads_is_one_line() {
    let server = TestServer::default_config();
    let mut c = server.join();
    c.stream().set_nodelay(true).unwrap();
    for byte in b"pieces of a line" {
        c.send_raw(&[*byte]);
        std::thread::sleep(Duration::from_millis(2));
    }
    c.send_raw(b"\n");
    c.expect(&format!("{}: pieces of a line", c.name));
}

#[test]
fn several_lines_in_one_read() {
    let server = TestServer::default_config();
    let mut c = server.join();
    c.send_raw(b"one\ntwo\r\nthree\n");
    for word in ["one", "two", "three"] {
        c.expect(&format!("{}: {word}", c.name));
    }
}

#[test]
fn final_line_without_newline_is_processed_before_eof() {
    let (_server, mut c) = room(Config::ephemeral(), 2);
    c[0].send_raw(b"last words");
    c[0].shutdown_write();
    let name = c[0].name.clone();
    c[0].expect(&format!("{name}: last words"));
    c[0].expect_eof();
    c[1].expect(&format!("{name}: last words"));
    c[1].expect(&format!("{name} has left"));
}

#[test]
fn too_long_line_arriving_in_pieces_is_refused_once_and_user_stays() {
    let config = Config {
        max_line: 100,
        ..Config::ephemeral()
    };
    let server = TestServer::start(config);
    let mut c = server.join();
    c.send_raw(&[b'a'; 60]);
    c.send_raw(&[b'b'; 60]);
    c.expect("Line too long (max 100 bytes), discarded");
    c.send_raw(&[b'c'; 500]);
    c.send_raw(b"\nok\n");
    c.expect(&format!("{}: ok", c.name));
    let exact = "d".repeat(100);
    c.send(&format!("{exact}\r"));
    c.expect(&format!("{}: {exact}", c.name));
}

#[test]
fn default_line_limit_message_names_4096() {
    let server = TestServer::default_config();
    let mut c = server.join();
    c.send(&"x".repeat(4097));
    c.expect("Line too long (max 4096 bytes), discarded");
    c.send(&"y".repeat(4096));
    c.expect(&format!("{}: {}", c.name, "y".repeat(4096)));
}

// ---- "Presence storms" ----

#[test]
fn more_than_three_arrivals_in_a_batch_become_one_line() {
    let server = TestServer::default_config();
    let mut first = server.join();
    // First's own arrival is announced (to nobody) before the others come.
    first.send("ready");
    first.expect(&format!("{}: ready", first.name));
    let mut others: Vec<Client> = (0..6).map(|_| Client::connect(server.addr)).collect();
    // Everyone connected within a few ms: at least one batch holds more than three.
    let mut seen = 0;
    while seen < 6 {
        let line = first.line();
        if let Some(n) = line.strip_suffix(" users have arrived") {
            let n: usize = n.parse().unwrap();
            assert!(n > 3, "{line}");
            seen += n;
        } else {
            assert!(line.ends_with(" has arrived"), "{line}");
            seen += 1;
        }
    }
    assert_eq!(seen, 6);
    for other in others.iter_mut() {
        let greeting = format!("You are {}", other.name);
        other.expect(&greeting);
    }
}

#[test]
fn many_departures_become_one_line() {
    let (_server, mut c) = room(Config::ephemeral(), 6);
    let mut stay = c.remove(0);
    // Five users reset at once: one `5 users have left` (or smaller batches).
    drop(c);
    let mut gone = 0;
    while gone < 5 {
        let line = stay.line();
        if let Some(n) = line.strip_suffix(" users have left") {
            gone += n.parse::<usize>().unwrap();
        } else {
            assert!(line.ends_with(" has left"), "{line}");
            gone += 1;
        }
    }
    assert_eq!(stay.who().len(), 1);
}

// ---- Flood control ----

#[test]
fn flood_is_paced_not_dropped() {
    let config = Config {
        flood: FloodLimit { rate: 10, burst: 5 },
        ..Config::ephemeral()
    };
    let server = TestServer::start(config);
    let mut c = server.join();
    let burst: String = (0..30).map(|i| format!("line {i}\n")).collect();
    let start = Instant::now();
    c.send_raw(burst.as_bytes());
    for i in 0..30 {
        c.expect(&format!("{}: line {i}", c.name));
    }
    let took = start.elapsed();
    // 5 at once, then 25 at 10/s: the last cannot come before 2.5 s.
    assert!(took >= Duration::from_millis(2400), "too fast: {took:?}");
    assert!(took < Duration::from_secs(8), "too slow: {took:?}");
}
