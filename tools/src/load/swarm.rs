//! The one mio loop that drives every simulated client.
//!
//! A [`Swarm`] is a table of clients indexed by their mio token, and three
//! phases that reuse the same loop: [`connect`](Swarm::connect) (bounded
//! connects in flight), [`register`](Swarm::register) (wait until a token
//! line from client 0 has reached everyone, which is how we know the server
//! has really admitted every connection, not just the kernel), and
//! [`run_step`](Swarm::run_step) (senders paced by the poll timeout, every
//! client reading everything). Every phase has a deadline, so the tool
//! always stops by itself.
//!
//! With [`SwarmConfig::tls`] every client speaks TLS (see
//! [`Conn`](super::client::Conn)); the phases are the same, and a connect
//! counts as done once its TLS handshake is, so `connect`'s bound on
//! connects in flight bounds handshakes in flight. Every socket gets
//! `TCP_NODELAY`: with Nagle, a TLS 1.3 client's Finished and its first line
//! wait for the ACK of the flight before, which the server's delayed ACK
//! holds back 40 ms or more.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::client::{Client, Conn, ReadOutcome, State};
use super::marker::{self, Marker};
use super::tally::{StepResult, Tally};
use crate::procstat;
use crate::tls::TlsClient;

/// Size of the one read buffer all clients share (single thread, so one is
/// enough; it is also the most a single `read` can return).
const READ_BUF: usize = 64 * 1024;
/// How often client 0 repeats the registration token.
const TOKEN_EVERY: Duration = Duration::from_millis(250);
/// How often the live progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Most lines sent in one loop turn when behind schedule, so catching up
/// never starves reading.
const MAX_BURST: u64 = 2048;

/// CPU seconds this process has used so far (0 if /proc is unreadable).
fn own_cpu_s() -> f64 {
    procstat::sample(std::process::id() as i32).map_or(0.0, |s| s.cpu_s)
}

/// How the swarm talks to the server.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// The server.
    pub addr: SocketAddr,
    /// Each client sends `load<i>` as its first line.
    pub name_first: bool,
    /// The server does not echo a chat line to its sender.
    pub no_self_echo: bool,
    /// Track per (receiver, sender) sequence numbers to catch loss,
    /// duplicates and reordering (costs receivers × senders words).
    pub check_order: bool,
    /// Print a progress line on stderr every second.
    pub progress: bool,
    /// Speak TLS to `addr`, with this client configuration.
    pub tls: Option<TlsClient>,
    /// Once connected, each client sends `/join ROOM` (after its name, with
    /// `name_first`), so it leaves the lobby to whoever else is there.
    pub join_room: Option<String>,
}

/// Outcome of the connect phase.
#[derive(Debug, Clone, Default)]
pub struct ConnectReport {
    /// Connects started (readers and slow clients).
    pub attempted: usize,
    /// Connects that completed.
    pub connected: usize,
    /// Connects that failed or timed out.
    pub failed: usize,
    /// Seconds the phase took.
    pub elapsed_s: f64,
    /// Connections completed per second.
    pub rate: f64,
    /// The first connect error, as an example.
    pub first_error: Option<String>,
    /// The client loop's CPU use during the phase, in % of one core (near
    /// 100: the rate is the tool's, not the server's).
    pub tool_cpu_pct: f64,
}

/// One rate held for a while.
#[derive(Debug, Clone)]
pub struct StepPlan {
    /// Step number, carried in every marker.
    pub step: u32,
    /// Total lines per second.
    pub rate: f64,
    /// How long the senders send.
    pub duration: Duration,
    /// Clients 0..senders send, round robin.
    pub senders: usize,
    /// Chat text bytes per line.
    pub payload: usize,
    /// How long to wait for late lines after the last send.
    pub grace: Duration,
}

/// All the clients and the loop that drives them.
pub struct Swarm {
    cfg: SwarmConfig,
    poll: Poll,
    events: Events,
    /// Events copied out of `events`, so handling them can borrow `self`.
    ready: Vec<(usize, bool, bool)>,
    clients: Vec<Client>,
    scratch: Vec<u8>,
    /// Common time origin: every marker's timestamp is relative to it.
    origin: Instant,
    /// The registration token being looked for, if registering.
    token: Option<Vec<u8>>,
    tally: Tally,
    line: Vec<u8>,
    connecting: usize,
    connect_failed: usize,
    first_error: Option<String>,
    /// Open connections that were closed (by the server or an error).
    lost: u64,
}

impl Swarm {
    /// An empty swarm aimed at `cfg.addr`.
    pub fn new(cfg: SwarmConfig) -> io::Result<Self> {
        Ok(Swarm {
            cfg,
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            ready: Vec::with_capacity(1024),
            clients: Vec::new(),
            scratch: vec![0; READ_BUF],
            origin: Instant::now(),
            token: None,
            tally: Tally::new(u32::MAX),
            line: Vec::with_capacity(1024),
            connecting: 0,
            connect_failed: 0,
            first_error: None,
            lost: 0,
        })
    }

    /// Connected clients that read.
    pub fn open_readers(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| c.reads && c.state == State::Open)
            .count()
    }

    /// Opens `readers` reading clients then `slow` never-reading ones, at
    /// most `concurrency` handshakes at a time, giving up after `timeout`.
    pub fn connect(
        &mut self,
        readers: usize,
        slow: usize,
        concurrency: usize,
        timeout: Duration,
    ) -> ConnectReport {
        let total = readers + slow;
        let own_cpu = procstat::thread_cpu_ns();
        let start = Instant::now();
        let deadline = start + timeout;
        let failed_before = self.connect_failed;
        let mut next = 0;
        let mut next_progress = start + PROGRESS_EVERY;
        loop {
            while self.connecting < concurrency.max(1) && next < total {
                self.open(next < readers);
                next += 1;
            }
            if next == total && self.connecting == 0 {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                self.abandon_connects();
                break;
            }
            if now >= next_progress {
                next_progress += PROGRESS_EVERY;
                if self.cfg.progress {
                    eprintln!(
                        "chatload: connect {:.0}s: {} open, {} in flight, {} failed",
                        (now - start).as_secs_f64(),
                        self.clients
                            .iter()
                            .filter(|c| c.state == State::Open)
                            .count(),
                        self.connecting,
                        self.connect_failed - failed_before
                    );
                }
            }
            self.poll_once(deadline.min(next_progress) - now);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let failed = self.connect_failed - failed_before;
        let connected = total - failed;
        ConnectReport {
            attempted: total,
            connected,
            failed,
            elapsed_s: elapsed,
            rate: if elapsed > 0.0 {
                connected as f64 / elapsed
            } else {
                0.0
            },
            first_error: self.first_error.clone(),
            tool_cpu_pct: own_cpu
                .zip(procstat::thread_cpu_ns())
                .map_or(f64::NAN, |(b, a)| {
                    100.0 * (a.saturating_sub(b)) as f64 / 1e9 / elapsed.max(1e-9)
                }),
        }
    }

    /// Starts one non-blocking connect.
    fn open(&mut self, reads: bool) {
        let idx = self.clients.len();
        // A TLS client reads during its handshake even if it never reads
        // afterwards.
        let interest = if reads || self.cfg.tls.is_some() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::WRITABLE
        };
        let result = TcpStream::connect(self.cfg.addr).and_then(|stream| {
            stream.set_nodelay(true)?;
            let mut conn = Conn::new(stream, self.cfg.tls.as_ref())?;
            self.poll
                .registry()
                .register(&mut conn, Token(idx), interest)?;
            Ok(conn)
        });
        match result {
            Ok(conn) => {
                self.clients.push(Client::new(conn, reads));
                self.connecting += 1;
            }
            Err(e) => self.note_connect_failure(e),
        }
    }

    fn note_connect_failure(&mut self, e: io::Error) {
        self.connect_failed += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    /// Connects still pending at the deadline count as failures.
    fn abandon_connects(&mut self) {
        for idx in 0..self.clients.len() {
            if self.clients[idx].state == State::Connecting {
                self.close(idx);
                self.note_connect_failure(io::ErrorKind::TimedOut.into());
            }
        }
        self.connecting = 0;
    }

    /// Waits until a token line sent by the first open reader has reached
    /// every open reader (the sender too, unless `no_self_echo`). Returns the
    /// time it took, or how many readers never saw it.
    pub fn register(&mut self, timeout: Duration) -> Result<f64, usize> {
        let start = Instant::now();
        let deadline = start + timeout;
        let Some(sender) = self
            .clients
            .iter()
            .position(|c| c.reads && c.state == State::Open)
        else {
            return Err(self.clients.len());
        };
        let token = format!("LR:{}:{}", std::process::id(), self.now_ns());
        self.token = Some(token.clone().into_bytes());
        let line = format!("{token}\n").into_bytes();
        let mut next_send = start;
        let mut next_progress = start + PROGRESS_EVERY;
        let result = loop {
            let missing = self
                .clients
                .iter()
                .enumerate()
                .filter(|(i, c)| {
                    c.reads
                        && c.state == State::Open
                        && !c.registered
                        && !(self.cfg.no_self_echo && *i == sender)
                })
                .count();
            if missing == 0 {
                break Ok(start.elapsed().as_secs_f64());
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(missing);
            }
            if self.clients[sender].state != State::Open {
                break Err(missing);
            }
            if now >= next_send {
                next_send += TOKEN_EVERY;
                self.send_from(sender, &line);
            }
            if now >= next_progress {
                next_progress += PROGRESS_EVERY;
                if self.cfg.progress {
                    eprintln!(
                        "chatload: registering: {missing} clients have not seen the token yet"
                    );
                }
            }
            self.poll_once(next_send.min(deadline).min(next_progress) - now);
        };
        self.token = None;
        result
    }

    /// Keeps reading (and answering writability) for `how_long`, e.g. to
    /// let the server's batched notices drain before sampling its memory.
    pub fn idle(&mut self, how_long: Duration) {
        let end = Instant::now() + how_long;
        loop {
            let now = Instant::now();
            if now >= end {
                return;
            }
            self.poll_once(end - now);
        }
    }

    /// Keeps reading until `stop` is set (checked every 50 ms), holding the
    /// connections open meanwhile.
    pub fn idle_until(&mut self, stop: &std::sync::atomic::AtomicBool) {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            self.poll_once(Duration::from_millis(50));
        }
    }

    /// Sends `line` from client `idx`; closes the client on a socket error.
    /// Returns whether the line was queued.
    fn send_from(&mut self, idx: usize, line: &[u8]) -> bool {
        match self.clients[idx].send(line) {
            Ok(queued) => queued,
            Err(_) => {
                self.close(idx);
                false
            }
        }
    }

    /// Runs one fan-out step: `plan.rate` lines/s from `plan.senders`
    /// senders for `plan.duration`, then up to `plan.grace` for the rest to
    /// arrive. Every open reader reads everything throughout.
    pub fn run_step(&mut self, plan: &StepPlan) -> StepResult {
        let senders = plan.senders.min(self.clients.len()).max(1);
        for c in &mut self.clients {
            c.received = 0;
            c.sent = 0;
            c.next_seq.clear();
            if self.cfg.check_order && c.reads {
                c.next_seq.resize(senders, 0);
            }
        }
        let receivers: Vec<usize> = (0..self.clients.len())
            .filter(|&i| self.clients[i].reads && self.clients[i].state == State::Open)
            .collect();
        let per_line = (receivers.len() as u64).saturating_sub(u64::from(self.cfg.no_self_echo));
        self.tally = Tally::new(plan.step);
        let lost_before = self.lost;

        let own_cpu = own_cpu_s();
        let start = Instant::now();
        let start_ns = self.now_ns();
        let send_end = start + plan.duration;
        let grace_end = send_end + plan.grace;
        let interval = Duration::from_secs_f64(1.0 / plan.rate);
        let total_lines = (plan.duration.as_secs_f64() * plan.rate).round() as u64;
        let mut k: u64 = 0;
        let mut next_progress = start + PROGRESS_EVERY;
        let mut last_progress_received = 0;
        let mut drained_at: Option<Instant> = None;
        let mut last_send: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let mut burst = 0;
            while k < total_lines && burst < MAX_BURST && start + interval.mul_f64(k as f64) <= now
            {
                self.send_marked(k, senders, plan.step, plan.payload, per_line);
                k += 1;
                burst += 1;
                if k == total_lines {
                    last_send = Some(now);
                }
            }
            let all_sent = k >= total_lines;
            if all_sent && self.tally.counts.received >= self.tally.counts.expected {
                drained_at = Some(now);
                break;
            }
            if now >= grace_end {
                break;
            }
            if now >= next_progress {
                next_progress += PROGRESS_EVERY;
                if self.cfg.progress {
                    let t = &self.tally;
                    eprintln!(
                        "chatload: step {} ({:.0} lines/s) {:.0}s: sent {} recv {}/{} ({:.2}%) {:.0} deliv/s p99 {:.2} ms lost {}",
                        plan.step,
                        plan.rate,
                        (now - start).as_secs_f64(),
                        t.counts.sent,
                        t.counts.received,
                        t.counts.expected,
                        100.0 * t.counts.received as f64 / t.counts.expected.max(1) as f64,
                        (t.counts.received - last_progress_received) as f64,
                        t.hist.value_at_quantile(0.99) as f64 / 1000.0,
                        self.lost - lost_before
                    );
                    last_progress_received = t.counts.received;
                }
            }
            let wake = if all_sent {
                grace_end
            } else if burst == MAX_BURST {
                now
            } else {
                start + interval.mul_f64(k as f64)
            };
            self.poll_once(wake.min(next_progress).saturating_duration_since(now));
        }

        let end = drained_at.unwrap_or_else(Instant::now);
        let last_rx_s = (self.tally.last_rx_ns.saturating_sub(start_ns)) as f64 / 1e9;
        let window = last_rx_s.max(plan.duration.as_secs_f64());
        let mut result = StepResult::from_tally(&self.tally, plan.rate, window);
        result.drain_s = end.saturating_duration_since(send_end).as_secs_f64();
        result.elapsed_s = (end - start).as_secs_f64();
        result.tool_cpu_pct = 100.0 * (own_cpu_s() - own_cpu) / result.elapsed_s.max(1e-9);
        result.lost_clients = self.lost - lost_before;
        // Lines are stamped when actually sent, so a sender that fell behind
        // schedule does not show as latency; it shows here instead.
        let send_span = last_send.map_or(end - start, |t| t - start + interval);
        result.achieved_rate = k as f64
            / send_span
                .as_secs_f64()
                .max(plan.duration.as_secs_f64())
                .max(1e-9);
        let sent_total = self.tally.counts.sent;
        result.bad_receivers = receivers
            .iter()
            .filter(|&&i| {
                let c = &self.clients[i];
                let own = if self.cfg.no_self_echo { c.sent } else { 0 };
                c.received != sent_total - own
            })
            .count() as u64;
        result
    }

    /// Sends the `k`th line of a step from its round-robin sender.
    fn send_marked(&mut self, k: u64, senders: usize, step: u32, payload: usize, per_line: u64) {
        let idx = (k % senders as u64) as usize;
        if self.clients[idx].state != State::Open {
            self.tally.counts.send_dropped += 1;
            return;
        }
        let m = Marker {
            step,
            sender: idx as u32,
            seq: self.clients[idx].sent,
            sent_ns: self.now_ns(),
        };
        let mut line = std::mem::take(&mut self.line);
        marker::encode(&m, payload, &mut line);
        if self.send_from(idx, &line) {
            self.clients[idx].sent += 1;
            self.tally.counts.sent += 1;
            self.tally.counts.expected += per_line;
        } else {
            self.tally.counts.send_dropped += 1;
        }
        self.line = line;
    }

    /// Nanoseconds since the swarm's origin.
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Waits up to `timeout` for socket events and handles them.
    fn poll_once(&mut self, timeout: Duration) {
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                eprintln!("chatload: poll failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            return;
        }
        self.ready.clear();
        for ev in self.events.iter() {
            self.ready.push((
                ev.token().0,
                ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                ev.is_writable() || ev.is_write_closed() || ev.is_error(),
            ));
        }
        for i in 0..self.ready.len() {
            let (idx, readable, writable) = self.ready[i];
            self.handle(idx, readable, writable);
        }
    }

    fn handle(&mut self, idx: usize, readable: bool, writable: bool) {
        let Some(client) = self.clients.get_mut(idx) else {
            return;
        };
        if client.state == State::Connecting {
            match client.conn.progress_connect(&mut self.scratch) {
                Ok(true) => {
                    let tls = client.conn.is_tls();
                    self.on_connected(idx);
                    // Over TLS, what came with the handshake's last flight
                    // is read now: no new edge would announce it.
                    if tls {
                        if self.clients[idx].reads && self.clients[idx].state == State::Open {
                            self.read_all(idx);
                        }
                        return;
                    }
                }
                Ok(false) => return,
                Err(e) => {
                    self.connecting -= 1;
                    self.close(idx);
                    self.note_connect_failure(e);
                    return;
                }
            }
        }
        let client = &mut self.clients[idx];
        if client.state != State::Open {
            return;
        }
        if writable && client.wants_write() && client.flush().is_err() {
            self.close(idx);
            return;
        }
        if readable && self.clients[idx].reads {
            self.read_all(idx);
        }
    }

    fn on_connected(&mut self, idx: usize) {
        self.connecting -= 1;
        let client = &mut self.clients[idx];
        client.state = State::Open;
        if !client.reads {
            // A slow client never reads: forget it so its events cost nothing.
            let _ = self.poll.registry().deregister(&mut client.conn);
            return;
        }
        if self.cfg.name_first {
            let name = format!("load{idx}\n");
            self.send_from(idx, name.as_bytes());
        }
        if let Some(room) = &self.cfg.join_room {
            let join = format!("/join {room}\n");
            self.send_from(idx, join.as_bytes());
        }
    }

    /// Reads until the socket would block (mio is edge-triggered), feeding
    /// every complete line to the counters.
    fn read_all(&mut self, idx: usize) {
        let Swarm {
            clients,
            scratch,
            token,
            tally,
            origin,
            ..
        } = self;
        let Client {
            conn,
            input,
            history,
            registered,
            received,
            next_seq,
            ..
        } = &mut clients[idx];
        let closed = loop {
            let outcome = conn.read_some(scratch, |data| {
                let rx_ns = origin.elapsed().as_nanos() as u64;
                input.feed(data, |line| {
                    if history.in_block(line) {
                        return;
                    }
                    if let Some(tok) = token.as_deref()
                        && !*registered
                        && marker::find_bytes(line, tok).is_some()
                    {
                        *registered = true;
                    }
                    let Some(m) = marker::find(line) else {
                        // Headers are looked for only in unmarked lines,
                        // which are rare, so the hot path pays nothing.
                        history.opens_block(line);
                        return;
                    };
                    if m.step != tally.step {
                        tally.counts.stale += 1;
                        return;
                    }
                    tally.counts.received += 1;
                    *received += 1;
                    tally.last_rx_ns = rx_ns;
                    tally.record_latency(rx_ns.saturating_sub(m.sent_ns));
                    if let Some(next) = next_seq.get_mut(m.sender as usize) {
                        if *next != m.seq {
                            tally.counts.misordered += 1;
                        }
                        *next = m.seq + 1;
                    }
                });
            });
            match outcome {
                // A short read emptied the socket: on Linux any later
                // arrival raises a new edge, so the extra read that would
                // only return WouldBlock is skipped (half the syscalls when
                // every wakeup carries one line).
                Ok(ReadOutcome::Data { more: true }) => {}
                Ok(ReadOutcome::Data { more: false }) | Ok(ReadOutcome::WouldBlock) => break false,
                Ok(ReadOutcome::Closed) | Err(_) => break true,
            }
        };
        if closed {
            self.close(idx);
        }
    }

    /// Marks a client closed and stops watching it. The socket itself stays
    /// in the table (indices are tokens) and is shut down now.
    fn close(&mut self, idx: usize) {
        let client = &mut self.clients[idx];
        if client.state == State::Open {
            self.lost += 1;
        }
        client.state = State::Closed;
        let _ = self.poll.registry().deregister(&mut client.conn);
        client.conn.shutdown();
    }
}

#[cfg(test)]
mod tests {
    //! The TLS client path end to end, against a small rustls echo server
    //! in this process (chatd itself is exercised by `chatload smoke --tls`
    //! and the suite, which need its binary).

    use super::*;
    use crate::tls::{TEST_NAME, TestCert, TestChain, TlsClient};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ServerConfig, ServerConnection, StreamOwned};
    use std::io::{BufRead, BufReader, Write};
    use std::path::Path;
    use std::sync::Arc;

    /// A TLS echo server on a free loopback port: every line a client sends
    /// comes back to it. Threads end with their connections.
    fn echo_server(cert: &Path, key: &Path) -> SocketAddr {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("cert file")
            .map(|c| c.expect("cert"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).expect("key");
        let config = Arc::new(
            ServerConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server config"),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                let config = Arc::clone(&config);
                std::thread::spawn(move || {
                    let conn = ServerConnection::new(config).expect("server conn");
                    let mut tls = BufReader::new(StreamOwned::new(conn, socket));
                    let mut line = Vec::new();
                    while matches!(tls.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                        if tls.get_mut().write_all(&line).is_err() {
                            break;
                        }
                        line.clear();
                    }
                });
            }
        });
        addr
    }

    fn swarm(addr: SocketAddr, tls: TlsClient) -> Swarm {
        Swarm::new(SwarmConfig {
            addr,
            name_first: false,
            no_self_echo: false,
            check_order: true,
            progress: false,
            tls: Some(tls),
            join_room: None,
        })
        .expect("poll")
    }

    #[test]
    fn tls_clients_connect_register_and_get_every_line() {
        let cert = TestCert::generate().expect("cert");
        let addr = echo_server(&cert.cert, &cert.key);
        for ca in [None, Some(cert.cert.as_path())] {
            let mut s = swarm(addr, TlsClient::new(ca, TEST_NAME).expect("client"));
            // One reader (the echo server only answers its sender) and a
            // client that never reads after its handshake.
            let c = s.connect(1, 1, 8, Duration::from_secs(10));
            assert_eq!((c.connected, c.failed), (2, 0), "{:?}", c.first_error);
            assert!(s.register(Duration::from_secs(10)).is_ok());
            let r = s.run_step(&StepPlan {
                step: 1,
                rate: 200.0,
                duration: Duration::from_millis(300),
                senders: 1,
                // Lines bigger than a TLS record cross record boundaries.
                payload: 20_000,
                grace: Duration::from_secs(5),
            });
            assert!(r.counts.sent > 0);
            assert_eq!(r.counts.received, r.counts.sent, "{r:?}");
            assert_eq!((r.counts.misordered, r.lost_clients), (0, 0));
        }
    }

    /// Connects one client with `--ca ca` (or none) and `name`: connected?
    fn connects(addr: SocketAddr, ca: Option<&Path>, name: &str) -> Result<(), String> {
        let tls = TlsClient::new(ca, name).expect("client");
        let c = swarm(addr, tls).connect(1, 0, 1, Duration::from_secs(10));
        match c.connected {
            1 => Ok(()),
            _ => Err(c.first_error.unwrap_or_default()),
        }
    }

    #[test]
    fn ca_file_pins_a_self_signed_certificate_and_verifies_a_chain() {
        // Self-signed: trusted as the very certificate given (any name),
        // refused when --ca holds another.
        let cert = TestCert::generate().expect("cert");
        let other = TestCert::generate().expect("cert");
        let addr = echo_server(&cert.cert, &cert.key);
        assert_eq!(connects(addr, Some(&cert.cert), TEST_NAME), Ok(()));
        assert!(connects(addr, Some(&other.cert), TEST_NAME).is_err());
        // Without --ca anything goes (test-only verifier).
        assert_eq!(connects(addr, None, "not-the-name.example"), Ok(()));

        // Signed by a CA: the chain and the name are checked.
        let chain = TestChain::generate();
        let addr = echo_server(&chain.cert, &chain.key);
        assert_eq!(connects(addr, Some(&chain.ca), TEST_NAME), Ok(()));
        let wrong = connects(addr, Some(&chain.ca), "not-the-name.example");
        assert!(
            wrong
                .as_ref()
                .is_err_and(|e| e.contains("not valid for name")),
            "{wrong:?}"
        );
        assert!(connects(addr, Some(&cert.cert), TEST_NAME).is_err());
    }
}
