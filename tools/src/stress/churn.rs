//! `chatstress churn`: connections that come and go as fast as they can
//! must not grow the server's memory. For `--secs` (default 20) the tool
//! keeps `--in-flight` connections on the way: each connects, reads its
//! greeting, and closes, and another takes its place. chatd runs with
//! `--idle-timeout 3600` (`--idle-timeout` to change it), so anything the
//! server keeps per connection until its idle deadline (the idle wheel's
//! entry, README.md "What a connection costs") would pile up for an hour:
//! an older chatd grew by ~27 bytes per connection that way.
//!
//! Printed every 2 s: connections so far, connects per second, server RSS.
//! The check: RSS at the end is at most 4 MiB above RSS after a 1 s
//! warm-up (which brings the slab, the allocator and the log buffers to
//! their working size), the server is alive, no panic.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::{Checks, Outcome, start_chatd};
use crate::procstat;
use crate::report::{mib, si};

/// Allowed RSS growth over the run.
const GROWTH_BOUND: u64 = 4 << 20;
/// Warm-up before the baseline.
const WARMUP: Duration = Duration::from_secs(1);
/// How often figures are printed.
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// A connection not greeted within this counts as failed.
const GREETING_TIMEOUT: Duration = Duration::from_secs(5);

/// `chatstress churn`'s numbers.
#[derive(Debug)]
pub struct Options {
    /// How long connections churn after the warm-up.
    pub secs: u64,
    /// chatd's `--idle-timeout`.
    pub idle_timeout: u64,
    /// Connections on the way at once.
    pub in_flight: usize,
}

/// One connection on the way.
struct Slot {
    stream: TcpStream,
    since: Instant,
    /// Saw the end of the greeting line.
    greeted: bool,
}

/// The loop and its counters.
struct Churner {
    addr: SocketAddr,
    poll: Poll,
    slots: Vec<Option<Slot>>,
    /// Connections greeted and closed.
    done: u64,
    /// Connects refused, reset or not greeted in time.
    failed: u64,
    first_error: Option<String>,
}

/// Runs the scenario against a fresh chatd at `chatd`.
pub fn run(chatd: &Path, opts: Options) -> Outcome {
    procstat::raise_nofile_limit();
    println!(
        "churn: connect, read the greeting, close, {} at a time, for {} s; chatd --idle-timeout {}",
        opts.in_flight, opts.secs, opts.idle_timeout
    );
    let idle = opts.idle_timeout.to_string();
    let mut server = start_chatd(chatd, &["--idle-timeout", &idle])?;
    let start = server.sample();
    let mut churner = Churner::new(server.addr, opts.in_flight).map_err(|e| e.to_string())?;

    churner.churn(Instant::now() + WARMUP, |_| {});
    let warm = churner.done;
    churner.finish();
    std::thread::sleep(Duration::from_millis(200));
    let base = server.sample();
    println!(
        "  warm-up: {warm} connections in {:.0} s; server RSS {} at start, {} after the warm-up",
        WARMUP.as_secs_f64(),
        mib(start.rss),
        mib(base.rss)
    );

    let began = Instant::now();
    let done_before = churner.done;
    let mut last = (began, churner.done);
    let mut peak = base.rss;
    let pid = server.pid;
    let mut report = |c: &Churner| {
        let now = Instant::now();
        if now.duration_since(last.0) < REPORT_EVERY {
            return;
        }
        let rate = (c.done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        let rss = procstat::sample(pid).map_or(0, |s| s.rss);
        peak = peak.max(rss);
        println!(
            "  t={:>3.0}s {:>9} connections, {:>7} connects/s, server RSS {}",
            now.duration_since(began).as_secs_f64(),
            c.done - done_before,
            si(rate),
            mib(rss)
        );
        last = (now, c.done);
    };
    churner.churn(began + Duration::from_secs(opts.secs), &mut report);
    let churned = churner.done - done_before;
    let took = began.elapsed().as_secs_f64();
    churner.finish();
    std::thread::sleep(Duration::from_millis(300));
    let end = server.sample();
    let growth = end.rss.saturating_sub(base.rss);
    println!(
        "  {churned} connections in {took:.1} s = {} connects/s; {} failed{}",
        si(churned as f64 / took.max(1e-9)),
        churner.failed,
        churner
            .first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!(
        "  server RSS: {} after the warm-up, {} at the end (peak sampled {}, VmHWM {}): \
         +{:.1} KiB, {:.2} bytes per connection; CPU {:.1} s",
        mib(base.rss),
        mib(end.rss),
        mib(peak.max(end.rss)),
        mib(end.hwm),
        growth as f64 / 1024.0,
        growth as f64 / churned.max(1) as f64,
        end.cpu_s
    );

    let mut checks = Checks::default();
    checks.check(churned > 0, format!("{churned} connections churned"));
    checks.check(
        growth <= GROWTH_BOUND,
        format!(
            "RSS growth {:.2} MiB <= 4 MiB over {churned} connections",
            growth as f64 / 1048576.0
        ),
    );
    checks.server_healthy(&mut server);
    checks.stop_server(server)
}

impl Churner {
    fn new(addr: SocketAddr, in_flight: usize) -> io::Result<Churner> {
        Ok(Churner {
            addr,
            poll: Poll::new()?,
            slots: (0..in_flight.max(1)).map(|_| None).collect(),
            done: 0,
            failed: 0,
            first_error: None,
        })
    }

    /// Keeps every slot busy until `until`, calling `tick` each turn.
    fn churn(&mut self, until: Instant, mut tick: impl FnMut(&Churner)) {
        let mut events = Events::with_capacity(1024);
        while Instant::now() < until {
            let mut refused = false;
            for i in 0..self.slots.len() {
                if self.slots[i].is_none() && !self.open(i) {
                    refused = true;
                }
            }
            self.turn(&mut events);
            tick(self);
            if refused {
                // Out of ports or descriptors for a moment: do not spin.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Lets the connections on the way finish (bounded), opening no more.
    fn finish(&mut self) {
        let mut events = Events::with_capacity(1024);
        let deadline = Instant::now() + GREETING_TIMEOUT;
        while self.slots.iter().any(Option::is_some) && Instant::now() < deadline {
            self.turn(&mut events);
        }
        for i in 0..self.slots.len() {
            if self.slots[i].is_some() {
                self.fail(i, "not greeted in time".into());
            }
        }
    }

    /// One poll and what it reported; expired slots fail.
    fn turn(&mut self, events: &mut Events) {
        if let Err(e) = self.poll.poll(events, Some(Duration::from_millis(10))) {
            if e.kind() != io::ErrorKind::Interrupted {
                self.note(format!("poll: {e}"));
            }
            return;
        }
        let ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
        for i in ready {
            self.on_readable(i);
        }
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if self.slots[i]
                .as_ref()
                .is_some_and(|s| now.duration_since(s.since) > GREETING_TIMEOUT)
            {
                self.fail(i, "not greeted in time".into());
            }
        }
    }

    /// Starts a connect in slot `i`; false if it was refused at once.
    fn open(&mut self, i: usize) -> bool {
        let result = TcpStream::connect(self.addr).and_then(|mut stream| {
            self.poll
                .registry()
                .register(&mut stream, Token(i), Interest::READABLE)?;
            Ok(stream)
        });
        match result {
            Ok(stream) => {
                self.slots[i] = Some(Slot {
                    stream,
                    since: Instant::now(),
                    greeted: false,
                });
                true
            }
            Err(e) => {
                self.failed += 1;
                self.note(format!("connect: {e}"));
                false
            }
        }
    }

    /// Reads the greeting (PROTOCOL.md: "connect | the newcomer | `You are
    /// NAME`"); once its newline is in, the connection is closed.
    fn on_readable(&mut self, i: usize) {
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let mut chunk = [0u8; 1024];
        let mut error = None;
        loop {
            match slot.stream.read(&mut chunk) {
                Ok(0) => {
                    if !slot.greeted {
                        error = Some("closed before the greeting".to_string());
                    }
                    break;
                }
                Ok(n) => slot.greeted |= chunk[..n].contains(&b'\n'),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(format!("read: {e}"));
                    break;
                }
            }
        }
        if let Some(e) = error {
            self.fail(i, e);
        } else if slot.greeted {
            if let Some(mut slot) = self.slots[i].take() {
                let _ = self.poll.registry().deregister(&mut slot.stream);
            }
            self.done += 1;
        }
    }

    fn fail(&mut self, i: usize, why: String) {
        if let Some(mut slot) = self.slots[i].take() {
            let _ = self.poll.registry().deregister(&mut slot.stream);
        }
        self.failed += 1;
        self.note(why);
    }

    fn note(&mut self, what: String) {
        self.first_error.get_or_insert(what);
    }
}
