//! The cluster link against a real `redis-server`: framing, reply
//! matching and pub/sub on a live connection, and the faults the link
//! exists to survive — Redis killed and restarted, Redis stopped
//! (SIGSTOP) while the link is busy or idle — with the CPU the link costs
//! while Redis is away measured.
//!
//! Each test starts its own `redis-server` (a free TCP port on 127.0.0.1,
//! or a Unix socket in a temporary directory; no persistence: the harness
//! in `common::redis`, shared with `tests/cluster.rs`) and kills it at the
//! end, and drives the link from a small mio loop on the test's own
//! thread, as the server's loop does. Without `redis-server` the tests
//! print a loud `DID NOT RUN` and pass, except under `CI`, where they fail.

mod common;

use chatd::cluster::tuning::{KEEPALIVE, OUTPUT_LIMIT, REPLY_TIMEOUT, RETRY_MAX};
use chatd::cluster::{ClusterUrl, Link, LinkDown, LinkEvent, OwnedFrame};
use common::redis::{Redis, redis_available};
use mio::{Events, Poll, Token};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long any single wait in these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// A request's tag: the tests name them.
type Tag = &'static str;

/// The link's URL for a test's Redis.
fn url_of(redis: &Redis) -> ClusterUrl {
    ClusterUrl::parse(&redis.url()).expect("a valid URL")
}

/// A mio loop with only the link in it, as the server drives it.
struct Driver {
    poll: Poll,
    events: Events,
    link: Link<Tag>,
    /// Events reported and not yet waited for.
    backlog: VecDeque<LinkEvent<Tag>>,
}

impl Driver {
    fn new(url: ClusterUrl, channels: &[&[u8]]) -> Driver {
        let poll = Poll::new().expect("a poll");
        let mut link =
            Link::new(url, poll.registry(), Token(7), Token(8), Instant::now()).expect("a link");
        for channel in channels {
            link.subscribe(channel, Instant::now());
        }
        Driver {
            poll,
            events: Events::with_capacity(64),
            link,
            backlog: VecDeque::new(),
        }
    }

    /// One loop iteration, sleeping at most `longest`; returns the events
    /// the link reported. Commands the test queued since the last turn are
    /// written first, as the server's loop writes before it sleeps.
    fn turn(&mut self, longest: Duration) -> Vec<LinkEvent<Tag>> {
        let now = Instant::now();
        self.link.flush(now);
        let timeout = if self.link.has_unread_input() {
            Duration::ZERO
        } else {
            self.link
                .deadline()
                .map_or(longest, |at| at.saturating_duration_since(now))
                .min(longest)
        };
        if let Err(error) = self.poll.poll(&mut self.events, Some(timeout)) {
            assert_eq!(error.kind(), std::io::ErrorKind::Interrupted, "{error}");
        }
        let now = Instant::now();
        for event in self.events.iter() {
            assert!(self.link.owns(event.token()));
            self.link.on_event(event, now);
        }
        self.link.continue_reading(now);
        if self.link.deadline().is_some_and(|at| now >= at) {
            self.link.on_timer(now);
        }
        self.link.flush(now);
        std::iter::from_fn(|| self.link.next_event()).collect()
    }

    /// Turns the loop until an event satisfies `wanted` and takes it out
    /// of the backlog; the others stay there, in order. Fails after `limit`.
    fn wait_for(
        &mut self,
        limit: Duration,
        what: &str,
        mut wanted: impl FnMut(&LinkEvent<Tag>) -> bool,
    ) -> LinkEvent<Tag> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(event) = self
                .backlog
                .iter()
                .position(&mut wanted)
                .and_then(|found| self.backlog.remove(found))
            {
                return event;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "no {what} within {limit:?}; saw {}",
                summary(&self.backlog)
            );
            let events = self.turn(deadline - now);
            self.backlog.extend(events);
        }
    }

    /// Turns the loop for `span`, checking that the link reports nothing;
    /// returns the number of loop turns (each one a wake-up).
    fn quiet_for(&mut self, span: Duration) -> usize {
        assert!(self.backlog.is_empty(), "{}", summary(&self.backlog));
        let end = Instant::now() + span;
        let mut turns = 0;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let events = self.turn(left);
            assert!(events.is_empty(), "{}", summary(&events));
            turns += 1;
        }
        turns
    }

    fn wait_up(&mut self, limit: Duration) {
        self.wait_for(limit, "Up", |event| matches!(event, LinkEvent::Up));
        assert!(self.link.is_up());
    }

    fn wait_down(&mut self, limit: Duration) -> (LinkDown, Vec<Tag>) {
        let event = self.wait_for(limit, "Down", |event| {
            matches!(event, LinkEvent::Down { .. })
        });
        assert!(!self.link.is_up());
        match event {
            LinkEvent::Down { reason, unanswered } => (reason, unanswered),
            _ => unreachable!(),
        }
    }

    /// Sends a command (the link must be up).
    fn send(&mut self, tag: Tag, args: &[&[u8]]) {
        self.link
            .command(tag, args, Instant::now())
            .expect("the link is up");
    }

    /// The reply to `tag`, which must be the next reply.
    fn reply(&mut self, tag: Tag) -> OwnedFrame {
        let event = self.wait_for(PATIENCE, tag, |event| {
            matches!(event, LinkEvent::Reply { .. })
        });
        match event {
            LinkEvent::Reply { tag: got, frame } => {
                assert_eq!(got, tag, "replies out of order");
                frame
            }
            _ => unreachable!(),
        }
    }

    /// Publishes until Redis says someone heard it (a subscription sent
    /// on the other connection may not have reached Redis yet), then waits
    /// for that message and returns the channel it came on.
    fn publish_until_heard(&mut self, channel: &[u8], payload: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "nobody heard {channel:?}");
            self.send("publish", &[b"PUBLISH", channel, payload]);
            if self.reply("publish") == OwnedFrame::Integer(1) {
                break;
            }
        }
        let event = self.wait_for(
            PATIENCE,
            "the message",
            |event| matches!(event, LinkEvent::Message { payload: got, .. } if got == payload),
        );
        match event {
            LinkEvent::Message { channel, .. } => channel,
            _ => unreachable!(),
        }
    }
}

/// Events, briefly (payloads can be megabytes).
fn summary<'a>(events: impl IntoIterator<Item = &'a LinkEvent<Tag>>) -> String {
    let brief: Vec<String> = events
        .into_iter()
        .map(|event| match event {
            LinkEvent::Up => "Up".to_owned(),
            LinkEvent::Down { reason, unanswered } => {
                format!("Down({reason}, {} unanswered)", unanswered.len())
            }
            LinkEvent::Reply { tag, frame } => {
                let text: String = format!("{frame:?}").chars().take(80).collect();
                format!("Reply({tag}, {text})")
            }
            LinkEvent::Message { channel, payload } => format!(
                "Message({}, {} bytes)",
                String::from_utf8_lossy(channel),
                payload.len()
            ),
        })
        .collect();
    format!("[{}]", brief.join(", "))
}

fn bulk(text: &str) -> OwnedFrame {
    OwnedFrame::BulkString(text.as_bytes().to_vec())
}

/// CPU time (user + system) this thread has used.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass; all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer to a rusage.
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
        0
    );
    let micros = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// This process's resident memory, from /proc.
fn rss_bytes() -> usize {
    common::proc::rss_bytes(std::process::id()) as usize
}

#[test]
fn publish_reaches_the_subscriber_and_replies_match_requests_in_order() {
    if !redis_available("publish_reaches_the_subscriber_and_replies_match_requests_in_order") {
        return;
    }
    let redis = Redis::on_free_port();
    let mut driver = Driver::new(url_of(&redis), &[b"room:lobby"]);
    driver.wait_up(PATIENCE);

    // Up means subscribed: the very first PUBLISH is heard.
    driver.send("publish", &[b"PUBLISH", b"room:lobby", b"hello\r\nworld"]);
    driver.send("set", &[b"SET", b"k", b"v"]);
    driver.send("get", &[b"GET", b"k"]);
    driver.send("incr1", &[b"INCR", b"n"]);
    driver.send("incr2", &[b"INCR", b"n"]);
    driver.send("missing", &[b"GET", b"nothing-here"]);
    driver.send("not-a-number", &[b"INCR", b"k"]);
    driver.send("xadd", &[b"XADD", b"history", b"*", b"line", b"hi"]);
    driver.send(
        "xrevrange",
        &[b"XREVRANGE", b"history", b"+", b"-", b"COUNT", b"1"],
    );

    let mut replies = Vec::new();
    let mut messages = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while replies.len() < 9 || messages.is_empty() {
        assert!(Instant::now() < deadline, "{replies:?} {messages:?}");
        for event in driver.turn(Duration::from_millis(100)) {
            match event {
                LinkEvent::Reply { tag, frame } => replies.push((tag, frame)),
                LinkEvent::Message { channel, payload } => messages.push((channel, payload)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let tags: Vec<Tag> = replies.iter().map(|(tag, _)| *tag).collect();
    assert_eq!(
        tags,
        [
            "publish",
            "set",
            "get",
            "incr1",
            "incr2",
            "missing",
            "not-a-number",
            "xadd",
            "xrevrange"
        ]
    );
    assert_eq!(replies[0].1, OwnedFrame::Integer(1));
    assert_eq!(replies[1].1, OwnedFrame::SimpleString(b"OK".to_vec()));
    assert_eq!(replies[2].1, bulk("v"));
    assert_eq!(replies[3].1, OwnedFrame::Integer(1));
    assert_eq!(replies[4].1, OwnedFrame::Integer(2));
    assert_eq!(replies[5].1, OwnedFrame::Null);
    assert!(
        matches!(&replies[6].1, OwnedFrame::Error(e) if e.starts_with("ERR")),
        "{:?}",
        replies[6].1
    );
    let OwnedFrame::BulkString(id) = &replies[7].1 else {
        panic!("XADD gave {:?}", replies[7].1);
    };
    let expected = OwnedFrame::Array(vec![OwnedFrame::Array(vec![
        OwnedFrame::BulkString(id.clone()),
        OwnedFrame::Array(vec![bulk("line"), bulk("hi")]),
    ])]);
    assert_eq!(replies[8].1, expected);
    assert_eq!(
        messages,
        vec![(b"room:lobby".to_vec(), b"hello\r\nworld".to_vec())]
    );
    assert!(driver.link.heap_bytes() < 1 << 20);
}

#[test]
fn unix_socket_and_subscriptions_changed_while_up() {
    if !redis_available("unix_socket_and_subscriptions_changed_while_up") {
        return;
    }
    let redis = Redis::on_unix_socket();
    let mut driver = Driver::new(url_of(&redis), &[]);
    driver.wait_up(PATIENCE);

    driver.link.subscribe(b"later", Instant::now());
    assert_eq!(driver.publish_until_heard(b"later", b"one"), b"later");

    driver.link.psubscribe(b"room:*", Instant::now());
    assert_eq!(driver.publish_until_heard(b"room:42", b"two"), b"room:42");

    driver.link.unsubscribe(b"later", Instant::now());
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "still subscribed");
        driver.send("publish", &[b"PUBLISH", b"later", b"three"]);
        if driver.reply("publish") == OwnedFrame::Integer(0) {
            break;
        }
    }
    // A big reply arrives across many reads, and big payloads both ways.
    let big = vec![b'x'; 3 << 20];
    driver.send("set", &[b"SET", b"big", &big]);
    driver.send("get", &[b"GET", b"big"]);
    assert_eq!(
        driver.reply("set"),
        OwnedFrame::SimpleString(b"OK".to_vec())
    );
    assert!(
        driver.reply("get") == OwnedFrame::BulkString(big),
        "GET big"
    );
}

#[test]
fn a_killed_redis_is_down_at_once_costs_no_cpu_and_is_back_soon_after_restart() {
    if !redis_available(
        "a_killed_redis_is_down_at_once_costs_no_cpu_and_is_back_soon_after_restart",
    ) {
        return;
    }
    let mut redis = Redis::on_free_port();
    let mut driver = Driver::new(url_of(&redis), &[b"room:lobby"]);
    driver.wait_up(PATIENCE);

    // A request Redis never answers is handed back with the Down.
    redis.pause();
    driver.send("lost", &[b"SET", b"k", b"v"]);
    driver.turn(Duration::ZERO);
    redis.kill();
    let killed = Instant::now();
    let (reason, unanswered) = driver.wait_down(PATIENCE);
    let noticed = killed.elapsed();
    assert_eq!(unanswered, ["lost"]);
    assert!(
        matches!(reason, LinkDown::Closed | LinkDown::Io(_)),
        "{reason:?}"
    );
    assert!(noticed < Duration::from_millis(500), "{noticed:?}");
    assert!(
        driver
            .link
            .command("refused", &[b"PING"], Instant::now())
            .is_err()
    );

    // Down: the loop sleeps between attempts, and reports no more events.
    let cpu_before = thread_cpu();
    let turns = driver.quiet_for(Duration::from_secs(2));
    let cpu = thread_cpu() - cpu_before;
    eprintln!("while Redis was down: {cpu:?} CPU in 2 s of wall time, {turns} loop turns");
    assert!(cpu < Duration::from_millis(50), "{cpu:?} of CPU in 2 s");
    assert!(turns < 40, "{turns} loop turns in 2 s");

    // Back: up within the retry period (at most RETRY_MAX after Redis
    // answers again), subscriptions restored.
    let restarted = Instant::now();
    redis.restart();
    let answering = Instant::now();
    driver.wait_up(PATIENCE);
    eprintln!(
        "up {:?} after the restart began, {:?} after Redis answered",
        restarted.elapsed(),
        answering.elapsed()
    );
    assert!(
        answering.elapsed() < RETRY_MAX + Duration::from_millis(500),
        "{:?}",
        answering.elapsed()
    );
    driver.send("publish", &[b"PUBLISH", b"room:lobby", b"again"]);
    assert_eq!(driver.reply("publish"), OwnedFrame::Integer(1));
}

#[test]
fn redis_absent_at_start_is_one_down_then_up_when_it_comes() {
    if !redis_available("redis_absent_at_start_is_one_down_then_up_when_it_comes") {
        return;
    }
    let mut redis = Redis::not_started_on_unix_socket();
    let mut driver = Driver::new(url_of(&redis), &[b"a", b"b"]);
    let (reason, unanswered) = driver.wait_down(PATIENCE);
    assert!(matches!(reason, LinkDown::Io(_)), "{reason:?}");
    assert!(unanswered.is_empty());
    driver.quiet_for(Duration::from_millis(1500));
    redis.start();
    let started = Instant::now();
    driver.wait_up(PATIENCE);
    assert!(started.elapsed() < Duration::from_millis(1500));
    driver.send("publish", &[b"PUBLISH", b"b", b"x"]);
    assert_eq!(driver.reply("publish"), OwnedFrame::Integer(1));
    drop(redis);
}

#[test]
fn a_stopped_redis_is_down_at_the_bound_with_memory_bounded_then_back() {
    if !redis_available("a_stopped_redis_is_down_at_the_bound_with_memory_bounded_then_back") {
        return;
    }
    let redis = Redis::on_free_port();
    let mut driver = Driver::new(url_of(&redis), &[b"room:lobby"]);
    driver.wait_up(PATIENCE);
    let rss_before = rss_bytes();

    redis.pause();
    let stopped = Instant::now();
    let payload = vec![b'p'; 256 * 1024];
    let mut published = 0usize;
    let mut peak_queued = 0;
    let mut peak_rss = rss_before;
    let (reason, unanswered) = loop {
        assert!(stopped.elapsed() < PATIENCE, "never down");
        if driver.link.is_up() {
            let sent = driver.link.command(
                "publish",
                &[b"PUBLISH", b"room:lobby", &payload],
                Instant::now(),
            );
            if sent.is_ok() {
                published += payload.len();
            }
        }
        peak_queued = peak_queued.max(driver.link.queued_bytes());
        peak_rss = peak_rss.max(rss_bytes());
        assert!(driver.link.queued_bytes() <= OUTPUT_LIMIT + 1024);
        let down = driver
            .turn(Duration::ZERO)
            .into_iter()
            .find_map(|event| match event {
                LinkEvent::Down { reason, unanswered } => Some((reason, unanswered)),
                _ => None,
            });
        if let Some(down) = down {
            break down;
        }
    };
    let rss_growth = peak_rss - rss_before;
    eprintln!(
        "stopped Redis: down after {:?} and {} MiB published ({} MiB peak queued, peak RSS +{} MiB): {reason}",
        stopped.elapsed(),
        published >> 20,
        peak_queued >> 20,
        rss_growth >> 20
    );
    assert!(matches!(reason, LinkDown::OutputFull), "{reason:?}");
    assert!(!unanswered.is_empty());
    assert!(unanswered.iter().all(|tag| *tag == "publish"));
    assert!(peak_queued <= OUTPUT_LIMIT + 1024, "{peak_queued}");
    // The output bound, plus the payload and what tests running alongside
    // hold; without the bound, 10 s of publishing would be gigabytes.
    assert!(
        rss_growth < 6 * OUTPUT_LIMIT,
        "RSS grew by {rss_growth} bytes"
    );
    assert_eq!(driver.link.queued_bytes(), 0);
    assert_eq!(driver.link.heap_bytes(), 0);

    // Attempts while stopped connect (the kernel's backlog) but are never
    // answered: no Up, no second Down, and no CPU to speak of.
    let cpu_before = thread_cpu();
    let turns = driver.quiet_for(Duration::from_millis(2500));
    let cpu = thread_cpu() - cpu_before;
    eprintln!("while Redis was stopped: {cpu:?} CPU in 2.5 s of wall time, {turns} loop turns");
    assert!(cpu < Duration::from_millis(50), "{cpu:?} of CPU in 2.5 s");

    redis.resume();
    let resumed = Instant::now();
    driver.wait_up(PATIENCE);
    eprintln!("up {:?} after SIGCONT", resumed.elapsed());
    assert!(resumed.elapsed() < Duration::from_secs(4));
    // The publishes Redis had not read when it stopped may still be
    // carried out once it resumes (they are "unanswered", not "undone").
    assert_eq!(
        driver.publish_until_heard(b"room:lobby", b"after"),
        b"room:lobby"
    );
}

#[test]
fn a_redis_stopped_while_the_chat_is_quiet_is_noticed_by_keepalive() {
    if !redis_available("a_redis_stopped_while_the_chat_is_quiet_is_noticed_by_keepalive") {
        return;
    }
    let redis = Redis::on_free_port();
    let mut driver = Driver::new(url_of(&redis), &[b"room:lobby"]);
    driver.wait_up(PATIENCE);
    redis.pause();
    let stopped = Instant::now();
    let (reason, unanswered) = driver.wait_down(PATIENCE);
    let noticed = stopped.elapsed();
    eprintln!("quiet stopped Redis noticed after {noticed:?}");
    assert!(matches!(reason, LinkDown::Timeout), "{reason:?}");
    assert!(unanswered.is_empty());
    assert!(noticed >= REPLY_TIMEOUT, "{noticed:?}");
    assert!(
        noticed < KEEPALIVE + REPLY_TIMEOUT + Duration::from_secs(1),
        "{noticed:?}"
    );
    redis.resume();
    driver.wait_up(PATIENCE);
}
