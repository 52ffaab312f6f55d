//! PROTOCOL.md v2's security rows over real TCP: per-address limits,
//! operators (`/oper`, `/kick`, `/ban`, `/unban`, `/bans`, `/wall`), bans
//! kept in `--db`, look-alike names and Trojan Source lines.
//!
//! Operators, victims and bystanders must be told apart by address, and
//! all of them run on one machine: each client binds its socket to its own
//! loopback source address (127.0.0.2, 127.0.0.3, … — Linux routes all of
//! 127.0.0.0/8 to `lo`) before connecting, so a ban of the victim's address
//! leaves the operator connected, and each address gets its own `/oper`
//! allowance of one try per 10 s.
//!
//! Where the limits must apply to loopback the server runs with
//! `Exempt::none()` (`--ip-exempt none`).
//!
//! Two tests wait on the clock because the rule they check is a duration
//! with no line to await: `third_wrong_password_closes_the_connection`
//! (three tries 10 s apart on one connection: about 20 s, the least the
//! rule allows) and `brute_force_gets_one_try_per_ten_seconds` (12 s of
//! hammering, to see a second real try come 10 s after the first). They
//! run in parallel with the rest, so the whole file takes about 23 s.

mod common;

use chatd::Config;
use chatd::iplimit::{Exempt, IpLimitConfig};
use common::calendar::{unix_now, utc_minute};
use common::tempdir::TempDir;
use common::{Client, RealServer, TestServer, expect_refused, join_from, stream_from, wait_for};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// The operator password: the first line of the password file.
const PASSWORD: &str = "correct horse battery";

/// The password file: the password, then a line that must not work.
const PASSWORD_FILE: &str = "correct horse battery\nsecond line is not the password\n";

const TOO_MANY: &str = "Too many connections from your address, try again later";
const BANNED: &str = "You are banned from this server";
const NOW_OPERATOR: &str = "You are now an operator";
const WRONG: &str = "Wrong password";
const TOO_SOON: &str = "Too many attempts, try again later";
const DENIED: &str = "Permission denied: operators only";
const DISABLED: &str = "Operators are not enabled on this server";

// ---- helpers ----

impl TempDir {
    /// Writes the password file and returns its path.
    fn password_file(&self) -> PathBuf {
        let path = self.path("oper-password");
        std::fs::write(&path, PASSWORD_FILE).expect("password file");
        path
    }
}

/// Operators enabled (the password file in `dir`), with these exemptions.
fn oper_config(dir: &TempDir, exempt: Exempt) -> Config {
    Config {
        oper_password_file: Some(dir.password_file()),
        exempt,
        ..Config::ephemeral()
    }
}

/// Per-address limits on, loopback not exempt.
fn limited(max_connections: u32, connect_rate: u32) -> Config {
    Config {
        ip_limits: IpLimitConfig {
            max_connections,
            connect_rate,
        },
        exempt: Exempt::none(),
        ..Config::ephemeral()
    }
}

/// Sends `/oper PASSWORD` and expects to be made an operator (the caller
/// makes sure nothing else is pending for `client`).
fn make_operator(client: &mut Client) {
    client.send(&format!("/oper {PASSWORD}"));
    client.expect(NOW_OPERATOR);
}

/// The last client says something; everyone (all in one room) reads up to
/// it, so nobody has presence notices pending afterwards (a broadcast
/// flushes the room's batch first).
fn sync(clients: &mut [&mut Client], tag: &str) {
    let last = clients.len() - 1;
    clients[last].send(tag);
    let line = format!("{}: {tag}", clients[last].name);
    for client in clients.iter_mut() {
        client.skip_until(&line);
    }
}

/// Reads `n` lines and returns them as a set (for departures whose order
/// PROTOCOL.md leaves open).
fn lines_as_set(client: &mut Client, n: usize) -> HashSet<String> {
    (0..n).map(|_| client.line()).collect()
}

/// An arrival or departure notice, one by one or counted.
fn is_presence(line: &str) -> bool {
    line.ends_with(" has arrived")
        || line.ends_with(" have arrived")
        || line.contains(" has left")
        || line.ends_with(" have left")
}

/// Checks a `/bans` line `  ADDRESS until YYYY-MM-DD HH:MM UTC` for a ban
/// of `minutes` made between the unix times `before` and `after`.
fn expect_ban_line(client: &mut Client, address: &str, minutes: i64, before: i64, after: i64) {
    let got = client.line();
    let allowed: Vec<String> = [before, after]
        .iter()
        .map(|t| format!("  {address} until {} UTC", utc_minute(t + minutes * 60)))
        .collect();
    assert!(
        allowed.contains(&got),
        "expected one of {allowed:?}, got {got:?}"
    );
}

#[test]
fn utc_minute_matches_known_dates() {
    assert_eq!(utc_minute(0), "1970-01-01 00:00");
    assert_eq!(utc_minute(951_782_400), "2000-02-29 00:00");
    assert_eq!(utc_minute(1_709_251_199), "2024-02-29 23:59");
    assert_eq!(utc_minute(1_735_689_599), "2024-12-31 23:59");
}

/// Whether this machine can listen on the IPv6 loopback; if not, says so
/// loudly (the test then checks nothing).
fn have_ipv6_loopback(test: &str) -> bool {
    match std::net::TcpListener::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("\n!!! {test} DID NOT RUN: no IPv6 loopback ([::1]: {e}) !!!\n");
            false
        }
    }
}

// ---- "Per-address limits (v2)" ----

/// `--ip-max-connections 2`: the third connection from one address is
/// refused with the line, then closed; refused ones hold no place; a
/// closed one frees its place; other addresses are counted apart.
#[test]
fn ip_max_connections_refuses_the_third_and_refusals_hold_no_place() {
    let server = TestServer::start(limited(2, 0));
    let a = join_from("127.0.0.1", server.addr);
    let mut b = join_from("127.0.0.1", server.addr);
    for _ in 0..3 {
        expect_refused("127.0.0.1", server.addr, TOO_MANY);
    }
    // Another address has places of its own.
    let mut other = join_from("127.0.0.2", server.addr);
    let mut other2 = join_from("127.0.0.2", server.addr);
    expect_refused("127.0.0.2", server.addr, TOO_MANY);
    let a_name = a.name.clone();
    drop(a);
    // Once b has heard a leave, a's place is free: exactly one place,
    // since the three refused connections took none.
    b.skip_until(&format!("{a_name} has left"));
    let mut c = join_from("127.0.0.1", server.addr);
    expect_refused("127.0.0.1", server.addr, TOO_MANY);
    sync(&mut [&mut b, &mut other, &mut other2, &mut c], "still here");
}

/// `--ip-connect-rate 3`: the fourth new connection within the minute is
/// refused, whether or not the first three are still open.
#[test]
fn ip_connect_rate_refuses_the_fourth_within_a_minute() {
    let server = TestServer::start(limited(0, 3));
    let first = join_from("127.0.0.1", server.addr);
    let mut kept: Vec<Client> = (0..2)
        .map(|_| join_from("127.0.0.1", server.addr))
        .collect();
    expect_refused("127.0.0.1", server.addr, TOO_MANY);
    // Closing a connection gives no token back.
    let first_name = first.name.clone();
    drop(first);
    kept[0].skip_until(&format!("{first_name} has left"));
    expect_refused("127.0.0.1", server.addr, TOO_MANY);
    // Another address has a bucket of its own.
    let mut other = join_from("127.0.0.2", server.addr);
    let [x, y] = &mut kept[..] else {
        unreachable!()
    };
    sync(&mut [x, y, &mut other], "still here");
}

/// "A connection over either limit … counts toward neither": refusals for
/// too many open connections take no rate token, and refusals for the rate
/// hold no place.
#[test]
fn refused_connections_count_toward_neither_limit() {
    // 2 open at once, 3 new per minute.
    let server = TestServer::start(limited(2, 3));
    let a = join_from("127.0.0.1", server.addr);
    let mut b = join_from("127.0.0.1", server.addr);
    // Refused for the open limit: if these took tokens, the bucket (3)
    // would be empty now.
    for _ in 0..3 {
        expect_refused("127.0.0.1", server.addr, TOO_MANY);
    }
    let a_name = a.name.clone();
    drop(a);
    b.skip_until(&format!("{a_name} has left"));
    // The third token.
    let c = join_from("127.0.0.1", server.addr);
    let c_name = c.name.clone();
    drop(c);
    b.skip_until(&format!("{c_name} has left"));
    // One connection open, a place free, but no token: refused for the rate.
    for _ in 0..3 {
        expect_refused("127.0.0.1", server.addr, TOO_MANY);
    }
    b.send("/who");
    b.expect("1 user in #lobby:");
    b.expect(&format!("  {} (you)", b.name));
}

/// Without `--ip-exempt`, loopback is exempt: limits of 1 and 1 stop no
/// one from 127.0.0.0/8.
#[test]
fn default_exempt_keeps_loopback_unlimited() {
    let server = TestServer::start(Config {
        ip_limits: IpLimitConfig {
            max_connections: 1,
            connect_rate: 1,
        },
        ..Config::ephemeral()
    });
    let mut clients: Vec<Client> = (0..6)
        .map(|i| {
            join_from(
                if i % 2 == 0 { "127.0.0.1" } else { "127.0.0.9" },
                server.addr,
            )
        })
        .collect();
    let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
    sync(&mut refs, "all in");
}

/// `--ip-exempt CIDR` replaces the default: the listed block is unlimited,
/// the rest of loopback is not.
#[test]
fn ip_exempt_list_replaces_the_default() {
    let server = TestServer::start(Config {
        exempt: Exempt::from_flags(["127.0.0.2/32"]).expect("valid block"),
        ..limited(1, 0)
    });
    let mut exempt: Vec<Client> = (0..3)
        .map(|_| join_from("127.0.0.2", server.addr))
        .collect();
    let mut limited_one = join_from("127.0.0.1", server.addr);
    expect_refused("127.0.0.1", server.addr, TOO_MANY);
    let mut refs: Vec<&mut Client> = exempt.iter_mut().collect();
    refs.push(&mut limited_one);
    sync(&mut refs, "done");
}

/// IPv6 addresses are counted by /64: two connections from ::1 with
/// `--ip-max-connections 1` are one too many.
#[test]
fn ipv6_connections_are_counted_per_64() {
    if !have_ipv6_loopback("ipv6_connections_are_counted_per_64") {
        return;
    }
    let server = TestServer::start_as_configured(Config {
        listen: vec!["[::1]:0".parse().unwrap()],
        ..limited(1, 0)
    });
    let addr = server.addrs[0];
    let mut first = join_from("::1", addr);
    assert!(first.name.starts_with("[::1]:"), "{}", first.name);
    expect_refused("::1", addr, TOO_MANY);
    first.send("alive");
    first.expect(&format!("{}: alive", first.name));
}

/// `--ip-connect-rate N` is "a token bucket holding N, refilled at N per
/// minute": with N = 120, about 120 connections in a row get in, then one
/// more every half second.
#[test]
fn ip_connect_rate_bucket_holds_n_and_refills_at_n_per_minute() {
    const RATE: u32 = 120;
    let interval = Duration::from_secs(60) / RATE;
    let server = TestServer::start(limited(0, RATE));
    let start = Instant::now();
    let mut admitted = 0u32;
    loop {
        let mut client = Client::from_stream(stream_from("127.0.0.1", server.addr));
        let line = client.line();
        if line == TOO_MANY {
            client.expect_eof();
            break;
        }
        assert_eq!(line, format!("You are {}", client.name));
        admitted += 1;
        assert!(admitted <= 10 * RATE, "never refused");
    }
    let burst_time = start.elapsed();
    // The bucket, plus what refilled while the burst lasted.
    let refilled = (burst_time.as_secs_f64() / interval.as_secs_f64()).ceil() as u32;
    assert!(
        (RATE..=RATE + refilled + 1).contains(&admitted),
        "{admitted} admitted in {burst_time:?} (bucket {RATE}, {refilled} refilled)"
    );
    // The next token comes within one interval (0.5 s).
    let refused_at = Instant::now();
    let waited = loop {
        let mut client = Client::from_stream(stream_from("127.0.0.1", server.addr));
        let line = client.line();
        if line != TOO_MANY {
            assert_eq!(line, format!("You are {}", client.name));
            break refused_at.elapsed();
        }
        client.expect_eof();
        assert!(
            refused_at.elapsed() < interval * 6,
            "no token {:?} after the bucket ran dry",
            refused_at.elapsed()
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    eprintln!(
        "connect rate {RATE}/min: {admitted} admitted in {burst_time:?}, next token after {waited:?}"
    );
}

/// Connections refused because the server is full, or because their
/// address is banned, count toward neither per-address limit (PROTOCOL.md,
/// TLS: "A client that is refused (server full, limits, ban …) … is not
/// counted toward the per-address limits").
#[test]
fn refusals_for_full_or_ban_take_no_rate_token() {
    let dir = TempDir::new("fullban");
    let server = TestServer::start(Config {
        max_clients: Some(2),
        ip_limits: IpLimitConfig {
            max_connections: 0,
            connect_rate: 3,
        },
        ..oper_config(&dir, Exempt::none())
    });
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    // Token 1 of 127.0.0.1.
    let a = join_from("127.0.0.1", server.addr);
    op.expect(&format!("{} has arrived", a.name));
    for _ in 0..4 {
        expect_refused("127.0.0.1", server.addr, "Server is full, try again later");
    }
    let a_name = a.name.clone();
    drop(a);
    op.expect(&format!("{a_name} has left"));
    op.send("/ban 127.0.0.1");
    op.expect("Banned 127.0.0.1 for 60 min");
    for _ in 0..4 {
        expect_refused("127.0.0.1", server.addr, BANNED);
    }
    op.send("/unban 127.0.0.1");
    op.expect("Unbanned 127.0.0.1");
    // Tokens 2 and 3 are still there.
    let b = join_from("127.0.0.1", server.addr);
    op.expect(&format!("{} has arrived", b.name));
    let b_name = b.name.clone();
    drop(b);
    op.expect(&format!("{b_name} has left"));
    join_from("127.0.0.1", server.addr);
}

/// A kicked connection gives its place back: with
/// `--ip-max-connections 1`, the kicked user can come back at once.
#[test]
fn a_kicked_connection_frees_its_place() {
    let dir = TempDir::new("kickplace");
    let server = TestServer::start(Config {
        ip_limits: IpLimitConfig {
            max_connections: 1,
            connect_rate: 0,
        },
        ..oper_config(&dir, Exempt::none())
    });
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    let mut victim = join_from("127.0.0.1", server.addr);
    op.expect(&format!("{} has arrived", victim.name));
    expect_refused("127.0.0.1", server.addr, TOO_MANY);
    let oper = op.name.clone();
    op.send(&format!("/kick {}", victim.name));
    op.expect(&format!("Kicked {}", victim.name));
    op.expect(&format!("{} has left (kicked by {oper})", victim.name));
    victim.expect(&format!("You were kicked by {oper}"));
    victim.expect_eof();
    let back = join_from("127.0.0.1", server.addr);
    op.expect(&format!("{} has arrived", back.name));
}

// ---- "Operators (v2)" ----

/// Without `--oper-password-file`: `/oper` says operators are not enabled,
/// and every operator command is denied.
#[test]
fn without_password_file_oper_is_disabled_and_commands_denied() {
    let server = TestServer::default_config();
    let mut c = server.join();
    c.send("/oper anything");
    c.expect(DISABLED);
    c.send(&format!("/oper {PASSWORD}"));
    c.expect(DISABLED);
    for command in [
        "/kick someone",
        "/kick someone because",
        "/ban someone",
        "/ban 10.0.0.1 5",
        "/unban 10.0.0.1",
        "/bans",
        "/wall hello",
        "/WALL hello",
    ] {
        c.send(command);
        c.expect(DENIED);
    }
    c.send("/oper");
    c.expect("Usage: /oper PASSWORD");
}

/// With operators enabled: commands are denied until `/oper` succeeds;
/// a wrong password is `Wrong password`; any address (loopback is exempt
/// here, which changes nothing) may try once per 10 s, right or wrong, and
/// a refused try is not looked at; the password is the file's first line.
#[test]
fn oper_right_wrong_and_one_try_per_address_per_ten_seconds() {
    let dir = TempDir::new("oper");
    let server = TestServer::start(oper_config(&dir, Exempt::default()));

    let mut a = join_from("127.0.0.2", server.addr);
    a.send("/bans");
    a.expect(DENIED);
    a.send("/oper guess");
    a.expect(WRONG);
    // Within 10 s, even the right password is not looked at.
    a.send(&format!("/oper {PASSWORD}"));
    a.expect(TOO_SOON);
    a.send("/bans");
    a.expect(DENIED);
    // The limit is per address, not per connection.
    let mut a2 = join_from("127.0.0.2", server.addr);
    a.expect(&format!("{} has arrived", a2.name));
    a2.send(&format!("/oper {PASSWORD}"));
    a2.expect(TOO_SOON);

    // Another address: the right password works, case-insensitive command
    // word and extra spaces included.
    let mut b = join_from("127.0.0.3", server.addr);
    b.send(&format!("/OPER   {PASSWORD}"));
    b.expect(NOW_OPERATOR);
    b.send("/bans");
    b.expect("0 bans:");
    // A success starts the 10 s too.
    let mut b2 = join_from("127.0.0.3", server.addr);
    b2.send(&format!("/oper {PASSWORD}"));
    b2.expect(TOO_SOON);
    b2.send("/bans");
    b2.expect(DENIED);

    // Only the first line of the file is the password.
    let mut c = join_from("127.0.0.4", server.addr);
    c.send("/oper second line is not the password");
    c.expect(WRONG);
}

/// "The third wrong password on one connection gets `Wrong password` and
/// the connection is closed (its room hears `NAME has left`)", and a try
/// refused as too soon does not count.
///
/// Three real tries from one connection need two 10 s waits (the rule is
/// per address, and a connection has one address), so this test takes
/// about 20 s; the waits are sleeps because there is no line to await.
#[test]
fn third_wrong_password_closes_the_connection() {
    let dir = TempDir::new("third");
    let server = TestServer::start(oper_config(&dir, Exempt::none()));
    let mut guesser = join_from("127.0.0.2", server.addr);
    let mut watcher = join_from("127.0.0.3", server.addr);
    guesser.expect(&format!("{} has arrived", watcher.name));

    // One real try: `Wrong password`, then the address must wait 10 s.
    let real_try = |client: &mut Client, first: bool| {
        client.send("/oper not-it");
        if first {
            client.expect(WRONG);
        } else {
            // The server timed the last try before we read its reply, so
            // 10 s after that reply are 10 s after the try; a busy machine
            // may still answer TOO_SOON, which does not count: retry.
            let end = Instant::now() + Duration::from_secs(5);
            loop {
                let reply = client.line();
                if reply == WRONG {
                    break;
                }
                assert_eq!(reply, TOO_SOON);
                assert!(Instant::now() < end, "no real try within 15 s");
                std::thread::sleep(Duration::from_millis(200));
                client.send("/oper not-it");
            }
        }
        // Too soon: not a wrong password, the connection stays.
        client.send("/oper not-it-either");
        client.expect(TOO_SOON);
    };
    real_try(&mut guesser, true);
    std::thread::sleep(Duration::from_millis(10_050));
    real_try(&mut guesser, false);
    // Still connected after 2 wrong and 2 too-soon tries.
    guesser.send("still here");
    guesser.expect(&format!("{}: still here", guesser.name));
    watcher.expect(&format!("{}: still here", guesser.name));
    std::thread::sleep(Duration::from_millis(10_050));
    guesser.send("/oper third-wrong");
    loop {
        let reply = guesser.line();
        if reply == WRONG {
            break;
        }
        assert_eq!(reply, TOO_SOON);
        std::thread::sleep(Duration::from_millis(200));
        guesser.send("/oper third-wrong");
    }
    guesser.expect_eof();
    watcher.expect(&format!("{} has left", guesser.name));
}

/// A password brute force from one address over many connections: how
/// many passwords the server actually checks. PROTOCOL.md allows one try
/// per address per 10 s, so 6 a minute, however many connections. Runs
/// 12 s so that a second real try can show up, 10 s after the first.
#[test]
fn brute_force_gets_one_try_per_ten_seconds() {
    const CONNECTIONS: usize = 20;
    const ATTACK: Duration = Duration::from_secs(12);
    let dir = TempDir::new("brute");
    // Loopback exempt (the default): the oper limit applies anyway.
    let server = TestServer::start(oper_config(&dir, Exempt::default()));
    let barrier = Arc::new(Barrier::new(CONNECTIONS + 1));
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let mut client = join_from("127.0.0.1", server.addr);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut real: Vec<Instant> = Vec::new();
                let mut sent = 0u64;
                let mut refused = 0u64;
                let mut closed = false;
                barrier.wait();
                let end = Instant::now() + ATTACK;
                'attack: while Instant::now() < end {
                    client.send(&format!("/oper guess-{i}-{sent}"));
                    sent += 1;
                    loop {
                        let Some(reply) = client.try_line() else {
                            // Closed at its third wrong password.
                            closed = true;
                            break 'attack;
                        };
                        match reply.as_str() {
                            WRONG => real.push(Instant::now()),
                            TOO_SOON => refused += 1,
                            NOW_OPERATOR => panic!("guessed the password?"),
                            other if is_presence(other) => continue,
                            other => panic!("unexpected reply {other:?}"),
                        }
                        break;
                    }
                }
                (sent - u64::from(closed), refused, real)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut sent = 0;
    let mut refused = 0;
    let mut real: Vec<Instant> = Vec::new();
    for thread in threads {
        let (s, r, tries) = thread.join().expect("attacker thread");
        sent += s;
        refused += r;
        real.extend(tries);
    }
    let elapsed = start.elapsed().as_secs_f64();
    real.sort();
    let gaps: Vec<f64> = real
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    eprintln!(
        "brute force: {CONNECTIONS} connections from 127.0.0.1 sent {sent} /oper attempts in \
         {elapsed:.1} s ({:.0} a minute); {} were checked (Wrong password), {refused} refused \
         (Too many attempts); gaps between checked tries {gaps:?} s; \
         that is {:.1} checked passwords a minute over this run, 6 a minute at most in the long run",
        sent as f64 * 60.0 / elapsed,
        real.len(),
        real.len() as f64 * 60.0 / elapsed,
    );
    assert_eq!(sent, refused + real.len() as u64, "every attempt answered");
    assert!(!real.is_empty(), "the first try is checked");
    let allowed = 1 + (elapsed / 10.0).floor() as usize;
    assert!(
        real.len() <= allowed,
        "{} passwords checked in {elapsed:.1} s (at most {allowed})",
        real.len()
    );
    for gap in gaps {
        // Reply times seen by the client; the server's own are >= 10 s.
        assert!(gap >= 9.5, "two checked tries {gap:.2} s apart");
    }
    assert!(sent > 100, "the attack ran ({sent} attempts)");
}

// ---- `/kick` ----

/// `/kick NAME`: the victim is told, then closed; the room hears it; the
/// operator gets `Kicked NAME` (the owner's spelling) before the notice.
#[test]
fn kick_without_reason() {
    let dir = TempDir::new("kick");
    let server = TestServer::start(oper_config(&dir, Exempt::default()));
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    let mut victim = join_from("127.0.0.3", server.addr);
    let mut watcher = join_from("127.0.0.4", server.addr);
    let renamed = format!("{} is now known as Bob", victim.name);
    victim.send("/nick Bob");
    for c in [&mut op, &mut victim, &mut watcher] {
        c.skip_until(&renamed);
    }
    let oper = op.name.clone();
    op.send("/kick bOB");
    op.expect("Kicked Bob");
    op.expect(&format!("Bob has left (kicked by {oper})"));
    victim.expect(&format!("You were kicked by {oper}"));
    victim.expect_eof();
    watcher.expect(&format!("Bob has left (kicked by {oper})"));
    // The name is free again, and kicking it now finds no one.
    op.send("/kick Bob");
    op.expect("No such user: Bob");
    op.send("/kick nobody at all");
    op.expect("No such user: nobody");
    watcher.rename("bob", &mut []);
}

/// Two `/kick`s of one user in one packet: the second finds no one (the
/// first has taken the user out of the chat), and the victim is told and
/// announced once.
#[test]
fn kick_twice_in_one_packet_kicks_once() {
    let dir = TempDir::new("kick2");
    let server = TestServer::start(oper_config(&dir, Exempt::default()));
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    let mut victim = join_from("127.0.0.3", server.addr);
    let renamed = format!("{} is now known as Bob", victim.name);
    victim.send("/nick Bob");
    op.skip_until(&renamed);
    victim.skip_until(&renamed);
    let oper = op.name.clone();
    op.send_raw(b"/kick bob\n/kick bob\n");
    op.expect("Kicked Bob");
    let rest = lines_as_set(&mut op, 2);
    let want: HashSet<String> = [
        "No such user: bob".to_string(),
        format!("Bob has left (kicked by {oper})"),
    ]
    .into();
    assert_eq!(rest, want);
    victim.expect(&format!("You were kicked by {oper}"));
    victim.expect_eof();
    op.send("after");
    op.expect(&format!("{oper}: after"));
}

/// `/kick NAME REASON` of a user in another room: that room hears it with
/// the reason; the operator's room hears nothing.
#[test]
fn kick_with_reason_in_another_room() {
    let dir = TempDir::new("kickreason");
    let server = TestServer::start(oper_config(&dir, Exempt::default()));
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    let mut carol = join_from("127.0.0.3", server.addr);
    carol.rename("carol", &mut []);
    carol.send("/join den");
    carol.expect("You are now in #den");
    let mut dave = join_from("127.0.0.4", server.addr);
    dave.send("/join #DEN");
    dave.expect("You are now in #den");
    sync(&mut [&mut carol, &mut dave], "in the den");
    sync(&mut [&mut op], "op here");

    let oper = op.name.clone();
    op.send("/kick carol being   rude");
    op.expect("Kicked carol");
    carol.expect(&format!("You were kicked by {oper} (being   rude)"));
    carol.expect_eof();
    dave.expect(&format!("carol has left (kicked by {oper}: being   rude)"));
    // Nothing about it in the lobby.
    op.send("after");
    op.expect(&format!("{oper}: after"));
}

/// The operator commands' usage lines (PROTOCOL.md's list), for an
/// operator.
#[test]
fn operator_usage_lines() {
    let dir = TempDir::new("usage");
    let server = TestServer::start(oper_config(&dir, Exempt::default()));
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    for (line, usage) in [
        ("/kick", "Usage: /kick NAME [REASON]"),
        ("/kick   ", "Usage: /kick NAME [REASON]"),
        ("/ban", "Usage: /ban NAME|ADDRESS [MINUTES]"),
        ("/unban", "Usage: /unban ADDRESS"),
        ("/wall", "Usage: /wall TEXT"),
        ("/oper", "Usage: /oper PASSWORD"),
        // Not in PROTOCOL.md's list: a MINUTES that is not a number.
        ("/ban 10.0.0.1 soon", "Usage: /ban NAME|ADDRESS [MINUTES]"),
    ] {
        op.send(line);
        op.expect(usage);
    }
}

// ---- `/ban`, `/unban`, `/bans` ----

/// `/ban NAME`: every connection from NAME's address is kicked with the
/// reason `banned` (in every room), the operator is told `Banned ADDRESS
/// for 60 min`, and new connections from it are refused.
#[test]
fn ban_by_name_kicks_every_connection_of_the_address_and_refuses_new_ones() {
    let dir = TempDir::new("ban");
    let server = TestServer::start(oper_config(&dir, Exempt::none()));
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    let oper = op.name.clone();

    let mut mallory = join_from("127.0.0.1", server.addr);
    let mut twin = join_from("127.0.0.1", server.addr);
    let mut watcher = join_from("127.0.0.3", server.addr);
    let renamed = format!("{} is now known as mallory", mallory.name);
    mallory.send("/nick mallory");
    for c in [&mut op, &mut mallory, &mut twin, &mut watcher] {
        c.skip_until(&renamed);
    }
    // A third connection from the banned address, in another room with a
    // bystander.
    let mut hidden = join_from("127.0.0.1", server.addr);
    hidden.send("/join side");
    hidden.expect("You are now in #side");
    let mut bystander = join_from("127.0.0.4", server.addr);
    bystander.send("/join side");
    bystander.expect("You are now in #side");
    sync(&mut [&mut hidden, &mut bystander], "side");
    sync(
        &mut [&mut op, &mut mallory, &mut twin, &mut watcher],
        "lobby",
    );

    op.send("/ban MALLORY");
    op.expect("Banned 127.0.0.1 for 60 min");
    let lobby_departures: HashSet<String> = [
        format!("mallory has left (kicked by {oper}: banned)"),
        format!("{} has left (kicked by {oper}: banned)", twin.name),
    ]
    .into();
    assert_eq!(lines_as_set(&mut op, 2), lobby_departures);
    assert_eq!(lines_as_set(&mut watcher, 2), lobby_departures);
    for victim in [&mut mallory, &mut twin, &mut hidden] {
        victim.expect(&format!("You were kicked by {oper} (banned)"));
        victim.expect_eof();
    }
    bystander.expect(&format!(
        "{} has left (kicked by {oper}: banned)",
        hidden.name
    ));

    expect_refused("127.0.0.1", server.addr, BANNED);
    expect_refused("127.0.0.1", server.addr, BANNED);
    // Other addresses are not concerned.
    let mut newcomer = join_from("127.0.0.5", server.addr);
    sync(&mut [&mut op, &mut watcher, &mut newcomer], "after the ban");
}

/// `/ban ADDRESS [MINUTES]`, `/bans` (soonest first, unlimited last, with
/// UTC times truncated to the minute), `/unban`, and the singular and
/// empty heads.
#[test]
fn ban_by_address_bans_list_and_unban() {
    let dir = TempDir::new("bans");
    let server = TestServer::start(oper_config(&dir, Exempt::none()));
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);

    op.send("/bans");
    op.expect("0 bans:");
    let before = unix_now();
    op.send("/ban 127.0.0.9 5");
    op.expect("Banned 127.0.0.9 for 5 min");
    op.send("/ban 127.0.0.8 0");
    op.expect("Banned 127.0.0.8 until unbanned");
    op.send("/ban 127.0.0.7");
    op.expect("Banned 127.0.0.7 for 60 min");
    op.send("/ban 127.0.0.6 1");
    op.expect("Banned 127.0.0.6 for 1 min");
    op.send("/ban 127.0.0.5 1440");
    op.expect("Banned 127.0.0.5 for 1440 min");
    let after = unix_now();
    op.send("/bans");
    op.expect("5 bans:");
    expect_ban_line(&mut op, "127.0.0.6", 1, before, after);
    expect_ban_line(&mut op, "127.0.0.9", 5, before, after);
    expect_ban_line(&mut op, "127.0.0.7", 60, before, after);
    expect_ban_line(&mut op, "127.0.0.5", 1440, before, after);
    op.expect("  127.0.0.8 until unbanned");

    for address in ["127.0.0.9", "127.0.0.8", "127.0.0.6", "127.0.0.5"] {
        expect_refused(address, server.addr, BANNED);
    }
    op.send("/unban 127.0.0.9");
    op.expect("Unbanned 127.0.0.9");
    op.send("/unban 127.0.0.9");
    op.expect("127.0.0.9 is not banned");
    op.send("/unban 10.1.2.3");
    op.expect("10.1.2.3 is not banned");
    let mut back = join_from("127.0.0.9", server.addr);
    op.expect(&format!("{} has arrived", back.name));
    for address in ["127.0.0.8", "127.0.0.7", "127.0.0.6"] {
        op.send(&format!("/unban {address}"));
        op.expect(&format!("Unbanned {address}"));
    }
    op.send("/bans");
    op.expect("1 ban:");
    expect_ban_line(&mut op, "127.0.0.5", 1440, before, after);
    op.send("/unban 127.0.0.5");
    op.expect("Unbanned 127.0.0.5");
    op.send("/bans");
    op.expect("0 bans:");
    sync(&mut [&mut op, &mut back], "done");
}

/// A ban replaces an earlier one of the same address (one line in
/// `/bans`).
#[test]
fn banning_again_replaces_the_ban() {
    let dir = TempDir::new("reban");
    let server = TestServer::start(oper_config(&dir, Exempt::none()));
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    op.send("/ban 127.0.0.9 5");
    op.expect("Banned 127.0.0.9 for 5 min");
    op.send("/ban 127.0.0.9 0");
    op.expect("Banned 127.0.0.9 until unbanned");
    op.send("/bans");
    op.expect("1 ban:");
    op.expect("  127.0.0.9 until unbanned");
}

/// `ADDRESS is exempt from bans` for an `--ip-exempt` address, by address
/// or by name, with the default list (loopback); nobody is kicked.
#[test]
fn exempt_addresses_cannot_be_banned() {
    let dir = TempDir::new("exempt");
    let server = TestServer::start(oper_config(&dir, Exempt::default()));
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    let mut user = join_from("127.0.0.5", server.addr);
    let renamed = format!("{} is now known as eve", user.name);
    user.send("/nick eve");
    op.skip_until(&renamed);
    user.skip_until(&renamed);
    op.send("/ban 127.0.0.1");
    op.expect("127.0.0.1 is exempt from bans");
    op.send("/ban eve 0");
    op.expect("127.0.0.5 is exempt from bans");
    op.send("/ban ::1");
    op.expect("::1 is exempt from bans");
    op.send("/bans");
    op.expect("0 bans:");
    // Nobody was kicked.
    user.send("still here");
    op.expect("eve: still here");
    user.expect("eve: still here");
    join_from("127.0.0.5", server.addr);
}

/// An IPv6 ban covers the /64 and is written as that prefix; a new
/// connection from ::1 is refused. The operator connects over IPv4 (a
/// second listener) so that it is not in the banned /64.
#[test]
fn ipv6_ban_covers_the_64_and_is_written_as_the_prefix() {
    if !have_ipv6_loopback("ipv6_ban_covers_the_64_and_is_written_as_the_prefix") {
        return;
    }
    let dir = TempDir::new("ban6");
    let server = TestServer::start_as_configured(Config {
        listen: vec!["[::1]:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap()],
        ..oper_config(&dir, Exempt::none())
    });
    let (v6, v4) = (server.addrs[0], server.addrs[1]);
    let mut op = join_from("127.0.0.2", v4);
    make_operator(&mut op);
    let oper = op.name.clone();
    let mut victim = join_from("::1", v6);
    op.expect(&format!("{} has arrived", victim.name));

    op.send("/ban ::1");
    op.expect("Banned ::/64 for 60 min");
    op.expect(&format!(
        "{} has left (kicked by {oper}: banned)",
        victim.name
    ));
    victim.expect(&format!("You were kicked by {oper} (banned)"));
    victim.expect_eof();
    expect_refused("::1", v6, BANNED);
    op.send("/bans");
    op.expect("1 ban:");
    let line = op.line();
    assert!(
        line.starts_with("  ::/64 until ") && line.ends_with(" UTC"),
        "{line:?}"
    );
    op.send("/unban ::1");
    op.expect("Unbanned ::/64");

    // Another address of the same /64 bans ::1 too; `/unban` takes the
    // prefix form as `/bans` writes it.
    let mut victim = join_from("::1", v6);
    op.expect(&format!("{} has arrived", victim.name));
    op.send("/ban ::ab:cd 0");
    op.expect("Banned ::/64 until unbanned");
    victim.expect(&format!("You were kicked by {oper} (banned)"));
    victim.expect_eof();
    op.expect(&format!(
        "{} has left (kicked by {oper}: banned)",
        victim.name
    ));
    expect_refused("::1", v6, BANNED);
    op.send("/bans");
    op.expect("1 ban:");
    op.expect("  ::/64 until unbanned");
    op.send("/unban ::/64");
    op.expect("Unbanned ::/64");

    // By name: a default IPv6 name.
    let mut victim = join_from("::1", v6);
    op.expect(&format!("{} has arrived", victim.name));
    op.send(&format!("/ban {} 5", victim.name));
    op.expect("Banned ::/64 for 5 min");
    victim.expect(&format!("You were kicked by {oper} (banned)"));
    victim.expect_eof();
    op.expect(&format!(
        "{} has left (kicked by {oper}: banned)",
        victim.name
    ));

    // PROTOCOL.md's example.
    op.send("/ban 2001:db8:0:1::7 0");
    op.expect("Banned 2001:db8:0:1::/64 until unbanned");
    op.send("/unban 2001:db8:0:1:ffff::1");
    op.expect("Unbanned 2001:db8:0:1::/64");
}

/// Bans are kept in `--db`: after a restart with the same file they still
/// refuse, and an unban made after the restart survives the next one.
#[test]
fn bans_survive_a_restart_with_db() {
    let dir = TempDir::new("db");
    let config = Config {
        db: Some(dir.path("chat.db")),
        ..oper_config(&dir, Exempt::none())
    };

    let server = TestServer::start(config.clone());
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    let before = unix_now();
    op.send("/ban 127.0.0.1 0");
    op.expect("Banned 127.0.0.1 until unbanned");
    op.send("/ban 127.0.0.4");
    op.expect("Banned 127.0.0.4 for 60 min");
    let after = unix_now();
    drop(op);
    server.stop();

    let server = TestServer::start(config.clone());
    expect_refused("127.0.0.1", server.addr, BANNED);
    expect_refused("127.0.0.4", server.addr, BANNED);
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    op.send("/bans");
    op.expect("2 bans:");
    expect_ban_line(&mut op, "127.0.0.4", 60, before, after);
    op.expect("  127.0.0.1 until unbanned");
    op.send("/unban 127.0.0.1");
    op.expect("Unbanned 127.0.0.1");
    drop(op);
    server.stop();

    let server = TestServer::start(config);
    join_from("127.0.0.1", server.addr);
    expect_refused("127.0.0.4", server.addr, BANNED);
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    op.send("/bans");
    op.expect("1 ban:");
    expect_ban_line(&mut op, "127.0.0.4", 60, before, after);
}

/// More than three users kicked by one ban in one room are one counted
/// departure (PROTOCOL.md, "Presence storms").
#[test]
fn a_ban_of_four_users_in_one_room_is_one_counted_departure() {
    let dir = TempDir::new("ban4");
    let server = TestServer::start(oper_config(&dir, Exempt::none()));
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    let mut victims: Vec<Client> = (0..4)
        .map(|_| join_from("127.0.0.1", server.addr))
        .collect();
    let mut watcher = join_from("127.0.0.3", server.addr);
    {
        let mut room: Vec<&mut Client> = vec![&mut op];
        room.extend(victims.iter_mut());
        room.push(&mut watcher);
        sync(&mut room, "ready");
    }
    let oper = op.name.clone();
    op.send("/ban 127.0.0.1 0");
    op.expect("Banned 127.0.0.1 until unbanned");
    op.expect("4 users have left");
    watcher.expect("4 users have left");
    for victim in victims.iter_mut() {
        victim.expect(&format!("You were kicked by {oper} (banned)"));
        victim.expect_eof();
    }
}

// ---- `/wall` ----

/// `[announcement] OPER: TEXT` reaches everyone in every room, the
/// operator included.
#[test]
fn wall_reaches_everyone_in_every_room() {
    let dir = TempDir::new("wall");
    let server = TestServer::start(oper_config(&dir, Exempt::default()));
    let mut op = join_from("127.0.0.2", server.addr);
    make_operator(&mut op);
    let mut lobby = join_from("127.0.0.3", server.addr);
    let mut rust = join_from("127.0.0.4", server.addr);
    rust.send("/join rust");
    rust.expect("You are now in #rust");
    let mut go = join_from("127.0.0.5", server.addr);
    go.send("/join go");
    go.expect("You are now in #go");
    sync(&mut [&mut op, &mut lobby], "lobby ready");

    let oper = op.name.clone();
    op.send("/wall Server restarts at  noon");
    let line = format!("[announcement] {oper}: Server restarts at  noon");
    op.expect(&line);
    lobby.expect(&line);
    rust.expect(&line);
    go.expect(&line);
    // Nothing else came with it.
    sync(&mut [&mut rust], "rust after");
    sync(&mut [&mut op, &mut lobby], "lobby after");

    // An operator stays one "for the rest of the connection": after a
    // rename and a move, and the announcement carries the current name.
    op.rename("Admin", &mut [&mut lobby]);
    op.send("/join rust");
    op.expect("You are now in #rust");
    op.send("/wall second");
    for client in [&mut op, &mut lobby, &mut rust, &mut go] {
        client.skip_until("[announcement] Admin: second");
    }
}

// ---- "Names" (v2, look-alikes) ----

/// Mixed scripts are invalid, and that check comes first; a look-alike of
/// a connected user's name (Cyrillic `расе` for `pace`, `bob1` for `bobl`)
/// is taken; `/msg` does not reach a look-alike.
#[test]
fn cyrillic_and_digit_look_alikes() {
    let server = TestServer::default_config();
    let mut owner = server.join();
    let mut poser = server.join_seen_by(&mut owner);
    owner.rename("pace", &mut [&mut poser]);

    // Cyrillic а (U+0430) among Latin letters.
    poser.send("/nick pаypal");
    poser.expect("Invalid name: pаypal (1-32 letters, digits, _ - .)");
    // Mixed and a look-alike of pace: invalid, not taken (checked first).
    poser.send("/nick pаce");
    poser.expect("Invalid name: pаce (1-32 letters, digits, _ - .)");
    // All Cyrillic р а с е.
    poser.send("/nick расе");
    poser.expect("Name расе is taken");
    poser.send("/nick РАСЕ");
    poser.expect("Name РАСЕ is taken");
    poser.send("/msg расе hi");
    poser.expect("No such user: расе");

    owner.send("/nick bobl");
    owner.expect("pace is now known as bobl");
    poser.expect("pace is now known as bobl");
    poser.send("/nick bob1");
    poser.expect("Name bob1 is taken");
    poser.send("/nick BOB1");
    poser.expect("Name BOB1 is taken");
    poser.send("/msg bob1 hi");
    poser.expect("No such user: bob1");
    // `pace` is free again, and so is an all-Cyrillic name of its own.
    poser.rename("расе", &mut [&mut owner]);
    // The other direction: with bob1 connected, bobl is taken.
    owner.send("/nick Москва");
    owner.expect("bobl is now known as Москва");
    poser.expect("bobl is now known as Москва");
    poser.send("/nick bob1");
    poser.expect("расе is now known as bob1");
    owner.expect("расе is now known as bob1");
    owner.send("/nick bobl");
    owner.expect("Name bobl is taken");
    owner.send("/nick pace");
    owner.expect("Москва is now known as pace");
    poser.expect("Москва is now known as pace");
}

/// Greek: a Latin name posed in Greek letters is taken; Latin with one
/// Greek letter is invalid; a Greek name of its own is fine.
#[test]
fn greek_look_alikes() {
    let server = TestServer::default_config();
    let mut owner = server.join();
    let mut poser = server.join_seen_by(&mut owner);
    owner.rename("opa", &mut [&mut poser]);
    // ο ρ α: Greek omicron, rho, alpha.
    poser.send("/nick ορα");
    poser.expect("Name ορα is taken");
    // Latin with a Greek omicron.
    poser.send("/nick pοst");
    poser.expect("Invalid name: pοst (1-32 letters, digits, _ - .)");
    poser.send("/nick opaο");
    poser.expect("Invalid name: opaο (1-32 letters, digits, _ - .)");
    poser.rename("Ελένη", &mut [&mut owner]);
    // And Greek names are protected the same way: νονα (Greek) is there,
    // vova (Latin) is taken.
    poser.send("/nick νονα");
    poser.expect("Ελένη is now known as νονα");
    owner.expect("Ελένη is now known as νονα");
    owner.send("/nick vova");
    owner.expect("Name vova is taken");
}

/// Full-width Latin is Latin: `ｐａｙｐａｌ` (and half full-width) is taken
/// while `paypal` is connected; full-width mixed with Cyrillic is invalid.
#[test]
fn full_width_latin_look_alikes() {
    let server = TestServer::default_config();
    let mut owner = server.join();
    let mut poser = server.join_seen_by(&mut owner);
    owner.rename("paypal", &mut [&mut poser]);
    poser.send("/nick ｐａｙｐａｌ");
    poser.expect("Name ｐａｙｐａｌ is taken");
    poser.send("/nick ｐaypal");
    poser.expect("Name ｐaypal is taken");
    poser.send("/nick ＰＡＹＰＡＬ");
    poser.expect("Name ＰＡＹＰＡＬ is taken");
    poser.send("/nick ｐａｙｐаl");
    poser.expect("Invalid name: ｐａｙｐаl (1-32 letters, digits, _ - .)");
    // Full-width first, then the ASCII one is taken.
    poser.rename("Ａｌｉｃｅ", &mut [&mut owner]);
    owner.send("/nick alice");
    owner.expect("Name alice is taken");
}

/// A change of case of one's own name is allowed (the look-alike rule does
/// not count one's own name), even for a non-Latin name.
#[test]
fn case_only_change_of_own_name_is_allowed() {
    let server = TestServer::default_config();
    let mut a = server.join();
    let mut b = server.join_seen_by(&mut a);
    a.rename("bob", &mut [&mut b]);
    a.send("/nick Bob");
    a.expect("bob is now known as Bob");
    b.expect("bob is now known as Bob");
    a.send("/nick Bob");
    a.expect("You are already Bob");
    a.send("/nick ВОВ");
    a.expect("Bob is now known as ВОВ");
    b.expect("Bob is now known as ВОВ");
    a.send("/nick вов");
    a.expect("ВОВ is now known as вов");
    b.expect("ВОВ is now known as вов");
}

/// Room names: single-script, but no look-alike rule.
#[test]
fn room_names_single_script_but_look_alikes_allowed() {
    let server = TestServer::default_config();
    let mut a = server.join();
    a.send("/join pаypal");
    a.expect("Invalid room name: pаypal (1-32 letters, digits, _ - .)");
    a.send("/join pace");
    a.expect("You are now in #pace");
    a.send("/join #расе");
    a.expect("You are now in #расе");
}

// ---- "Transport and lines" (v2, bidi) ----

/// A Trojan Source line: the embedding, override and isolate characters
/// (U+202A–U+202E, U+2066–U+2069) are removed before anyone sees it, in
/// chat, `/me`, `/msg`, names, quit reasons; a line of nothing else is
/// empty and not broadcast.
#[test]
fn trojan_source_lines_arrive_clean() {
    let server = TestServer::default_config();
    let mut alice = server.join();
    let mut bob = server.join_seen_by(&mut alice);
    let bidi = [
        '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
        '\u{2068}', '\u{2069}',
    ];

    alice.send("/nick al\u{202E}ice\u{2066}");
    let renamed = format!("{} is now known as alice", alice.name);
    alice.expect(&renamed);
    bob.expect(&renamed);

    // The classic: an RLO and isolates hide what the code does.
    alice.send("if (isAdmin) {\u{202E} } \u{2066}if (isAdmin)\u{2069} \u{2066} begin admins only");
    let line = "alice: if (isAdmin) { } if (isAdmin)  begin admins only";
    alice.expect(line);
    bob.expect(line);

    let every: String = bidi.iter().collect();
    alice.send(&format!("a{every}b"));
    alice.expect("alice: ab");
    bob.expect("alice: ab");

    // Only bidi characters and blanks: empty, not broadcast; trailing
    // blanks left behind by the removal are trimmed.
    alice.send(&every);
    alice.send(&format!("x \u{202E} \t{every}"));
    alice.expect("alice: x");
    bob.expect("alice: x");

    alice.send("/me \u{202E}waves\u{202C}");
    alice.expect("* alice waves");
    bob.expect("* alice waves");
    let bob_name = bob.name.clone();
    alice.send(&format!("/msg {bob_name} \u{2067}secret\u{2069}"));
    bob.expect("[private] alice: secret");
    alice.expect(&format!("[to {bob_name}] secret"));

    alice.send("/quit \u{202E}tuoemit");
    alice.expect("Bye");
    alice.expect_eof();
    bob.expect("alice has left (tuoemit)");
}

// ---- the real binary: flags and operator logs ----

/// The flags reach the server: `--ip-exempt` is repeatable and replaces
/// the default, `--ip-max-connections` applies, `--oper-password-file`
/// enables operators; each success and each operator action is logged at
/// warn (with the operator's name and address for the success).
#[test]
fn binary_flags_and_operator_actions_are_logged_at_warn() {
    let dir = TempDir::new("binary");
    let password_file = dir.password_file();
    let server = RealServer::start(&[
        "--ip-exempt",
        "127.0.0.2",
        "--ip-exempt",
        "127.0.0.3/32",
        "--ip-max-connections",
        "1",
        "--oper-password-file",
        password_file.to_str().expect("UTF-8 temp path"),
        "--log-level",
        "info",
    ]);
    let mut victim = join_from("127.0.0.1", server.addr);
    expect_refused("127.0.0.1", server.addr, TOO_MANY);
    let mut op = join_from("127.0.0.2", server.addr);
    let _op_twin = join_from("127.0.0.2", server.addr);
    let _other = join_from("127.0.0.3", server.addr);
    let mut other_twin = join_from("127.0.0.3", server.addr);
    sync(&mut [&mut victim, &mut op, &mut other_twin], "all in");
    let oper = op.name.clone();

    let warns = |needle: &str| {
        let needle = needle.to_string();
        wait_for(Duration::from_secs(5), || {
            server
                .log_text()
                .lines()
                .any(|line| line.contains("WARN") && line.contains(&needle))
        })
    };
    make_operator(&mut op);
    assert!(
        warns(&oper),
        "the success is logged at warn with name and address:\n{}",
        server.log_text()
    );

    let before = server.log_count("WARN");
    op.send("/wall hello");
    op.expect(&format!("[announcement] {oper}: hello"));
    victim.expect(&format!("[announcement] {oper}: hello"));
    assert!(wait_for(Duration::from_secs(5), || server
        .log_count("WARN")
        > before));

    let before = server.log_count("WARN");
    op.send(&format!("/kick {}", victim.name));
    op.expect(&format!("Kicked {}", victim.name));
    op.expect(&format!("{} has left (kicked by {oper})", victim.name));
    victim.expect(&format!("You were kicked by {oper}"));
    victim.expect_eof();
    assert!(wait_for(Duration::from_secs(5), || server
        .log_count("WARN")
        > before));

    let before = server.log_count("WARN");
    op.send("/ban 127.0.0.1 0");
    op.expect("Banned 127.0.0.1 until unbanned");
    expect_refused("127.0.0.1", server.addr, BANNED);
    assert!(wait_for(Duration::from_secs(5), || server
        .log_count("WARN")
        > before));

    let before = server.log_count("WARN");
    op.send("/unban 127.0.0.1");
    op.expect("Unbanned 127.0.0.1");
    assert!(wait_for(Duration::from_secs(5), || server
        .log_count("WARN")
        > before));
    join_from("127.0.0.1", server.addr);
    // The address of the success is in its log line.
    let log = server.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&oper) && l.contains("operator")),
        "{log}"
    );
}
