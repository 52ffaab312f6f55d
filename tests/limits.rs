//! Limits and failure behaviour (README.md): running out of descriptors
//! (section 1) and clients that end abruptly (section 5).
//!
//! Every test waits for lines, never for time, except the descriptor test's
//! CPU measurement, which is the point of that test.

mod common;

use chatd::Config;
use chatd::flood::FloodLimit;
use common::{
    CHATD, Client, READ_TIMEOUT, RealServer, TestServer, connect_with_recv_buffer, wait_for,
};
use socket2::SockRef;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A config with flood control off, so a sender can push as fast as it likes.
fn unthrottled() -> Config {
    Config {
        flood: FloodLimit { rate: 0, burst: 40 },
        ..Config::ephemeral()
    }
}

/// A connection that never reads, with a tiny receive buffer so that what
/// the server sends it piles up in the server's outbox, not in the kernel.
fn non_reader(addr: SocketAddr) -> TcpStream {
    connect_with_recv_buffer(addr, 4096)
}

/// A [`non_reader`] and its name, once `watcher` has seen it arrive.
fn non_reader_seen_by(watcher: &mut Client, addr: SocketAddr) -> (TcpStream, String) {
    let stream = non_reader(addr);
    let name = stream.local_addr().unwrap().to_string();
    watcher.skip_until(&format!("{name} has arrived"));
    (stream, name)
}

/// A client with an 8 MB receive buffer, for senders that must not be cut
/// off as too slow while a test thread is busy elsewhere.
fn big_reader(addr: SocketAddr) -> Client {
    let mut client = Client::from_stream(connect_with_recv_buffer(addr, 8 << 20));
    client.expect_greeting();
    client
}

/// Closes with SO_LINGER 0: the peer gets a reset, not a FIN.
fn reset(stream: &TcpStream) {
    SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER");
}

/// True if the server has sent `client` something not yet read.
fn has_input(client: &Client) -> bool {
    let stream = client.stream();
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let ready = matches!(stream.peek(&mut byte), Ok(n) if n > 0);
    stream.set_nonblocking(false).unwrap();
    ready
}

/// How many users a departure line accounts for, and whose name if one.
fn departures(line: &str) -> Option<(usize, Option<String>)> {
    if let Some(count) = line.strip_suffix(" users have left")
        && let Ok(n) = count.parse()
    {
        return Some((n, None));
    }
    let name = match line.find(" has left") {
        Some(at) if line[at..] == *" has left" || line[at..].starts_with(" has left (") => {
            &line[..at]
        }
        _ => return None,
    };
    if name.contains(": ") {
        return None; // a chat line that happens to say "has left"
    }
    Some((1, Some(name.to_string())))
}

/// How many users an arrival line accounts for.
fn arrivals(line: &str) -> usize {
    if let Some(count) = line.strip_suffix(" users have arrived")
        && let Ok(n) = count.parse()
    {
        return n;
    }
    usize::from(line.ends_with(" has arrived") && !line.contains(": "))
}

/// Sends a chat line from `client` and returns every line it got before the
/// echo. A broadcast flushes the pending presence batch first, so every
/// arrival or departure that happened before the send is in the result.
fn sync(client: &mut Client, tag: &str) -> Vec<String> {
    client.send(tag);
    let echo = format!("{}: {tag}", client.name);
    client.skip_until(&echo)
}

/// Reads lines until the departures among them add up to `count`; returns
/// them all.
fn read_departures(client: &mut Client, count: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut gone = 0;
    while gone < count {
        let line = client.line();
        gone += departures(&line).map_or(0, |(n, _)| n);
        seen.push(line);
    }
    seen
}

/// `lines` without the chat lines that `name` sent.
fn without_chat_from(lines: Vec<String>, name: &str) -> Vec<String> {
    let own = format!("{name}: ");
    lines.into_iter().filter(|l| !l.starts_with(&own)).collect()
}

/// Checks that `client` is the only user online.
#[track_caller]
fn assert_alone(client: &mut Client) {
    assert_eq!(client.who(), vec![format!("{} (you)", client.name)]);
}

/// Sends batches of 8 lines of `text` from `sender`, each batch echoed
/// before the next, which keeps the sender's own queue small while a
/// non-reader's grows by 8 KB a batch, until a batch brings the line `cut`.
/// The kernel buffers a megabyte or two for a non-reader before the
/// server's queue starts to fill; 1000 batches (8 MB) are plenty. Returns
/// every line read but the batches' last echoes.
fn send_until_cut(sender: &mut Client, text: &str, cut: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for batch in 0..1000 {
        let lines: String = (0..8).map(|i| format!("{batch}.{i} {text}\n")).collect();
        sender.send_raw(lines.as_bytes());
        let got = sender.skip_until(&format!("{}: {batch}.7 {text}", sender.name));
        let was_cut = got.iter().any(|line| line == cut);
        seen.extend(got);
        if was_cut {
            break;
        }
    }
    seen
}

/// An unthrottled server that cuts off whoever has 16 KB waiting, and a
/// sender in it. The sender reads its own echoes through a large receive
/// buffer, so that only a non-reader can fall behind.
fn small_outbox_with_sender() -> (TestServer, Client) {
    let server = TestServer::start(Config {
        max_outbound: 16 * 1024,
        ..unthrottled()
    });
    let mut sender = big_reader(server.addr);
    sync(&mut sender, "first");
    (server, sender)
}

/// The first of `clients` says `text`, and the last of them hears it.
fn first_reaches_last(clients: &mut [Client], text: &str) {
    let (first, rest) = clients.split_first_mut().unwrap();
    first.send(text);
    let last = rest.last_mut().unwrap();
    last.skip_until(&format!("{}: {text}", first.name));
}

/// Checks that `lines` (everything an observer saw) announce each of `gone`
/// at most once, and account for exactly `gone.len()` departures.
fn assert_departed_once(lines: &[String], gone: &HashSet<String>) {
    let mut named = HashSet::new();
    let mut total = 0;
    for line in lines {
        if let Some((n, name)) = departures(line) {
            total += n;
            if let Some(name) = name {
                assert!(gone.contains(&name), "departure of a stranger: {line:?}");
                assert!(named.insert(name), "departure announced twice: {line:?}");
            }
        }
    }
    assert_eq!(
        total,
        gone.len(),
        "departures announced (one by one or counted) vs users gone; lines: {lines:?}"
    );
}

// ---------------------------------------------------------------------------
// Point 1: out of file descriptors
// ---------------------------------------------------------------------------

/// The real binary under a `nofile` descriptor limit (through `prlimit`,
/// or setrlimit between fork and exec where util-linux is missing).
fn limited_chatd(nofile: u64, args: &[&str]) -> RealServer {
    let limit = format!("--nofile={nofile}:{nofile}");
    let mut command = if Command::new("prlimit").arg("--version").output().is_ok() {
        let mut c = Command::new("prlimit");
        c.arg(&limit).arg(CHATD);
        c
    } else {
        let mut c = Command::new(CHATD);
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
        unsafe {
            c.pre_exec(move || {
                let rl = libc::rlimit {
                    rlim_cur: nofile as libc::rlim_t,
                    rlim_max: nofile as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    };
    command.args(args).args(["--log-level", "info"]);
    RealServer::spawn(command)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line, 12 and 13 after `) `.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Stops the server with SIGTERM and checks it exits 0.
fn terminate(mut server: RealServer) {
    server.terminate();
    let status = server.wait();
    assert!(status.success(), "chatd exit status {status}");
}

#[test]
fn out_of_descriptors_pauses_accepting_without_spinning() {
    let server = limited_chatd(64, &["--max-clients", "1000"]);
    assert_eq!(
        server.log_count("open-file limit: soft 64 = hard 64"),
        1,
        "both limits logged:\n{}",
        server.log_text()
    );
    // Connect 120 clients: they get in until accept() fails with EMFILE
    // (which the server logs); the rest wait in the listen backlog.
    let mut admitted = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..120 {
        let mut client = Client::connect(server.addr);
        if waiting.is_empty() {
            let greeted = wait_for(READ_TIMEOUT, || {
                has_input(&client) || server.log_count("accept failed") > 0
            });
            assert!(greeted, "neither a greeting nor an EMFILE warning");
        }
        if waiting.is_empty() && has_input(&client) {
            client.expect_greeting();
            admitted.push(client);
        } else {
            waiting.push(client);
        }
    }
    assert!(
        (10..64).contains(&admitted.len()),
        "{} admitted under a 64-descriptor limit",
        admitted.len()
    );
    assert!(
        server.log_count("accept failed") > 0,
        "an EMFILE warning is logged:\n{}",
        server.log_text()
    );

    // The loop must sleep, not spin, while descriptors are short.
    let before = cpu_seconds(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(server.pid()) - before;
    println!("chatd CPU over 2 s while out of descriptors: {used:.2} s");
    assert!(
        used < 0.5,
        "chatd used {used:.2} s of CPU in 2 s while out of fds"
    );
    assert_eq!(
        server.log_count("accept failed"),
        1,
        "one warning per episode:\n{}",
        server.log_text()
    );

    // Connected users still chat.
    first_reaches_last(&mut admitted, "still here");

    // When they go, the waiting users get in on their own, oldest first.
    let freed = admitted.len();
    drop(admitted);
    let mut newcomers: Vec<Client> = waiting.drain(..freed.min(waiting.len())).collect();
    for client in &mut newcomers {
        let greeting = format!("You are {}", client.name);
        client.skip_until(&greeting);
    }
    assert!(
        wait_for(READ_TIMEOUT, || server
            .log_count("descriptors available again")
            > 0),
        "recovery is logged:\n{}",
        server.log_text()
    );
    first_reaches_last(&mut newcomers, "we got in");
    drop(newcomers);
    drop(waiting);
    terminate(server);
}

#[test]
fn default_max_clients_keeps_a_reserve_below_the_fd_limit() {
    let server = limited_chatd(64, &[]);
    assert!(
        wait_for(READ_TIMEOUT, || server.log_count("max clients 32,") == 1),
        "64 descriptors less the reserve of 32:\n{}",
        server.log_text()
    );
    terminate(server);
}

// ---------------------------------------------------------------------------
// Point 5: abrupt ends
// ---------------------------------------------------------------------------

#[test]
fn reset_mid_line_is_one_departure_and_frees_the_name() {
    let server = TestServer::default_config();
    let mut watcher = server.join();
    let mut victim = server.join_seen_by(&mut watcher);
    victim.send("/nick ghost");
    watcher.skip_until(&format!("{} is now known as ghost", victim.name));
    victim.send_raw(b"half a li");
    reset(victim.stream());
    drop(victim);

    let mut seen = watcher.skip_until("ghost has left");
    seen.extend(sync(&mut watcher, "after the reset"));
    seen.push("ghost has left".into());
    assert_departed_once(&seen, &HashSet::from(["ghost".to_string()]));
    assert_alone(&mut watcher);

    // The name is free again.
    let mut next = server.join();
    next.send("/nick ghost");
    next.skip_until(&format!("{} is now known as ghost", next.name));
}

#[test]
fn half_close_flushes_pending_replies_then_leaves_once() {
    let server = TestServer::default_config();
    let mut watcher = server.join();
    let mut victim = server.join_seen_by(&mut watcher);
    // 30 `/help`s queue 240 reply lines; the victim reads none of them
    // before closing its sending side.
    let mut burst = Vec::new();
    for _ in 0..30 {
        burst.extend_from_slice(b"/help\n");
    }
    burst.extend_from_slice(b"last words");
    victim.send_raw(&burst);
    victim.shutdown_write();

    let rest = victim.read_to_end();
    assert_eq!(rest.matches("End of help\n").count(), 30, "{rest}");
    assert!(
        rest.ends_with(&format!("{}: last words\n", victim.name)),
        "the final unterminated line is processed and echoed: {rest}"
    );
    let mut seen = vec![watcher.skip_until(&format!("{}: last words", victim.name))];
    let mut lines = watcher.skip_until(&format!("{} has left", victim.name));
    lines.push(format!("{} has left", victim.name));
    lines.extend(sync(&mut watcher, "sync"));
    seen.push(lines);
    let gone = HashSet::from([victim.name.clone()]);
    assert_departed_once(&seen.concat(), &gone);
    assert_alone(&mut watcher);
}

#[test]
fn half_close_with_more_output_than_the_socket_takes() {
    let server = TestServer::start(unthrottled());
    let mut watcher = server.join();
    let (mut victim, victim_name) = non_reader_seen_by(&mut watcher, server.addr);
    // 500 `/help`s: about 165 KB of replies (under --max-outbound) for a
    // 4 KB receive buffer.
    let burst = b"/help\n".repeat(500);
    victim.write_all(&burst).unwrap();
    victim.shutdown(std::net::Shutdown::Write).unwrap();

    let mut seen: Vec<String> = Vec::new();
    while seen.iter().filter_map(|l| departures(l)).count() == 0 {
        seen.push(watcher.line());
    }
    seen.extend(sync(&mut watcher, "sync"));
    assert_departed_once(&seen, &HashSet::from([victim_name.clone()]));
    assert_alone(&mut watcher);

    // What the victim got is whole help blocks, in order, then EOF.
    victim.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let _ = victim.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    let expected_block: String = chatd::protocol::HELP
        .iter()
        .map(|line| format!("{line}\n"))
        .collect();
    let body = got
        .strip_prefix(&format!("You are {victim_name}\n"))
        .unwrap();
    let whole = body.len() / expected_block.len() * expected_block.len();
    assert_eq!(
        body[..whole],
        expected_block.repeat(whole / expected_block.len())
    );
    assert!(
        expected_block.starts_with(&body[whole..]),
        "a prefix of a block"
    );
}

#[test]
fn disconnect_while_outbound_queue_is_full() {
    let server = TestServer::start(Config {
        max_outbound: 64 << 20,
        ..unthrottled()
    });
    let mut sender = server.join();
    sync(&mut sender, "first");
    let victims: Vec<TcpStream> = (0..3).map(|_| non_reader(server.addr)).collect();
    let names: HashSet<String> = victims
        .iter()
        .map(|v| v.local_addr().unwrap().to_string())
        .collect();
    let mut seen = Vec::new();
    let mut arrived = 0;
    while arrived < names.len() {
        let line = sender.line();
        arrived += arrivals(&line);
        seen.push(line);
    }

    // 12 MB of chat: more than the kernel holds for a non-reader (4 MB
    // send buffer at most, 4 KB receive buffer), so each victim's outbox
    // holds megabytes when it goes. A writer thread keeps sending while
    // this thread reads the echoes.
    let mut writer = sender.stream().try_clone().unwrap();
    let line = "x".repeat(1000);
    let lines = 12_000;
    let text = line.clone();
    let feeder = std::thread::spawn(move || {
        let mut batch = String::new();
        for i in 0..lines {
            batch.push_str(&format!("{i} {text}\n"));
            if batch.len() > 64 * 1024 {
                writer.write_all(batch.as_bytes()).unwrap();
                batch.clear();
            }
        }
        writer.write_all(batch.as_bytes()).unwrap();
    });
    let last = format!("{}: {} {line}", sender.name, lines - 1);
    seen.extend(
        sender
            .skip_until(&last)
            .into_iter()
            .filter(|l| !l.starts_with(&sender.name)),
    );
    feeder.join().unwrap();

    // One resets, one closes (which resets too, with unread data), one
    // half-closes and never reads.
    let mut victims = victims.into_iter();
    let v = victims.next().unwrap();
    reset(&v);
    drop(v);
    drop(victims.next().unwrap());
    let v = victims.next().unwrap();
    v.shutdown(std::net::Shutdown::Write).unwrap();

    seen.extend(read_departures(&mut sender, names.len()));
    seen.extend(sync(&mut sender, "sync"));
    assert_departed_once(&seen, &names);
    assert_alone(&mut sender);
    drop(v);
}

#[test]
fn too_slow_then_gone_is_announced_once() {
    let (server, mut sender) = small_outbox_with_sender();
    let (victim, victim_name) = non_reader_seen_by(&mut sender, server.addr);
    let text = "y".repeat(1000);
    let cut = format!("{victim_name} has left (too slow)");
    let mut seen = send_until_cut(&mut sender, &text, &cut);
    assert!(seen.contains(&cut), "the non-reader was cut");
    reset(&victim);
    drop(victim);
    seen.extend(sync(&mut sender, "sync"));
    let seen = without_chat_from(seen, &sender.name);
    assert_departed_once(&seen, &HashSet::from([victim_name]));
    sender.send("/who");
    sender.skip_until("1 user in #lobby:");
    assert_eq!(sender.line(), format!("  {} (you)", sender.name));
}

#[test]
fn vanishing_during_broadcasts_leaves_no_trace_and_frees_slots() {
    const VICTIMS: usize = 30;
    const MAX: usize = 40;
    let server = TestServer::start(Config {
        max_clients: Some(MAX),
        ..unthrottled()
    });
    let mut watcher = server.join();
    sync(&mut watcher, "first");
    let sender = server.join();
    let mut victims: Vec<Client> = (0..VICTIMS).map(|_| server.join()).collect();
    let names: HashSet<String> = victims.iter().map(|v| v.name.clone()).collect();
    let before = sync(&mut watcher, "all here");
    assert_eq!(
        before.iter().map(|l| arrivals(l)).sum::<usize>(),
        VICTIMS + 1
    );

    // The sender broadcasts while the victims vanish in assorted ways.
    let mut writer = sender.stream().try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 0..3000 {
            writer.write_all(format!("b{i}\n").as_bytes()).unwrap();
        }
    });
    for (i, mut victim) in victims.drain(..).enumerate() {
        match i % 5 {
            0 => reset(victim.stream()),
            1 => victim.send_raw(b"unterminated"),
            2 => {
                victim.line();
            }
            3 => victim.shutdown_write(),
            _ => {
                victim.send_raw(b"partial");
                reset(victim.stream());
            }
        }
        drop(victim);
        if i % 10 == 9 {
            std::thread::yield_now();
        }
    }
    feeder.join().unwrap();

    // The watcher got every broadcast, in order, exactly once.
    let mut seen = Vec::new();
    let mut next = 0;
    let prefix = format!("{}: b", sender.name);
    while next < 3000 {
        let line = watcher.line();
        if let Some(n) = line.strip_prefix(&prefix) {
            assert_eq!(n, next.to_string(), "broadcasts in order, none lost");
            next += 1;
        } else {
            seen.push(line);
        }
    }
    // Wait until every victim is accounted for, then flush the batch.
    let gone: usize = seen.iter().filter_map(|l| departures(l)).map(|d| d.0).sum();
    seen.extend(read_departures(&mut watcher, VICTIMS.saturating_sub(gone)));
    seen.extend(sync(&mut watcher, "after"));
    let seen = without_chat_from(seen, &sender.name);
    assert_departed_once(&seen, &names);
    let mut who = watcher.who();
    who.sort();
    let mut want = vec![format!("{} (you)", watcher.name), sender.name.clone()];
    want.sort();
    assert_eq!(who, want, "no name left behind");

    // Every slot came back: the room fills to exactly --max-clients again.
    let refill: Vec<Client> = (2..MAX).map(|_| server.join()).collect();
    let mut extra = Client::connect(server.addr);
    extra.expect("Server is full, try again later");
    extra.expect_eof();
    drop(refill);
}

/// Unread bytes in a client's socket are its own business: a client that
/// resets while the server is in the middle of writing to it must not take
/// the server down (no SIGPIPE, no panic), however often it happens.
#[test]
fn many_resets_in_a_row_keep_the_server_serving() {
    let server = TestServer::start(Config {
        max_clients: Some(16),
        ..unthrottled()
    });
    let mut watcher = server.join();
    for round in 0..200 {
        let mut victim = Client::connect(server.addr);
        let mut greeting = String::new();
        let mut byte = [0u8; 1];
        // Read the greeting byte by byte so nothing else is consumed.
        while !greeting.ends_with('\n') {
            assert_eq!(victim.stream().read(&mut byte).unwrap(), 1);
            greeting.push(byte[0] as char);
        }
        assert!(
            greeting.starts_with("You are "),
            "round {round}: {greeting}"
        );
        victim.send_raw(b"/who\n/help\nmid-li");
        reset(victim.stream());
    }
    let mut seen = read_departures(&mut watcher, 200);
    seen.extend(sync(&mut watcher, "still alive"));
    let total: usize = seen.iter().filter_map(|l| departures(l)).map(|d| d.0).sum();
    assert_eq!(total, 200, "{seen:?}");
    assert_alone(&mut watcher);
}

/// Regression (found by this suite, fixed in 56bebe7): with
/// `--flood-rate 0`, one readiness event used to run a client's lines until
/// its socket was drained, and outboxes were flushed only afterwards, so a
/// paste of more than `--max-outbound` bytes got every user cut off as
/// "too slow" by its echoes, although all of them read as fast as they
/// can. A reader with a large receive buffer must get every line.
#[test]
fn unthrottled_paste_larger_than_max_outbound_reaches_fast_readers() {
    let server = TestServer::start(unthrottled());
    let mut watcher = big_reader(server.addr);
    sync(&mut watcher, "first");
    let mut sender = big_reader(server.addr);
    watcher.skip_until(&format!("{} has arrived", sender.name));
    // 1 MB of lines in one write: four times --max-outbound (256 KiB).
    let text = "z".repeat(1000);
    let paste: String = (0..1000).map(|i| format!("{i} {text}\n")).collect();
    let mut writer = sender.stream().try_clone().unwrap();
    let feeder = std::thread::spawn(move || writer.write_all(paste.as_bytes()));
    let last = format!("{}: 999 {text}", sender.name);
    for i in 0..1000 {
        let line = watcher.line();
        assert_eq!(
            line,
            format!("{}: {i} {text}", sender.name),
            "watcher, line {i}: a reader that keeps up is cut off"
        );
    }
    sender.skip_until(&last);
    let _ = feeder.join();
}

/// A client cut off for not reading is reset (SO_LINGER 0), not closed: a
/// normal close would leave what the kernel still holds for it (megabytes
/// of send buffer that the client will never read) in an orphaned socket
/// for minutes. Found by `chatstress slow`: with a normal close the
/// thousand of those pushed the host's TCP memory past
/// its pressure threshold (`/proc/net/sockstat`: `orphan 1000 ... mem
/// 387422` pages, threshold 383868) and the sender, a fast reader, was cut
/// in turn. Resetting the connection frees those buffers at once; the
/// client then sees ECONNRESET instead of a clean EOF.
#[test]
fn too_slow_client_is_reset_not_left_in_kernel_buffers() {
    let (server, mut sender) = small_outbox_with_sender();
    let (mut victim, victim_name) = non_reader_seen_by(&mut sender, server.addr);
    let text = "v".repeat(1000);
    let cut = format!("{victim_name} has left (too slow)");
    let seen = send_until_cut(&mut sender, &text, &cut);
    assert!(seen.contains(&cut), "the non-reader was cut");
    // Now read what the kernel had for the victim: a reset ends it, not
    // an orderly EOF after megabytes that only waited for this read.
    victim.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut sink = vec![0u8; 1 << 16];
    let mut total = 0;
    let ending = loop {
        match victim.read(&mut sink) {
            Ok(0) => break "EOF",
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("victim read: {e}"),
        }
    };
    assert_eq!(
        ending, "reset",
        "a client cut as too slow got {total} more bytes and an orderly close"
    );
}
