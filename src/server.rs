//! The event loop: one thread, one `mio::Poll`, every connection.
//!
//! Each iteration of [`Server::run`] does the same steps, in an order
//! chosen so that a line leaves in the iteration that queued it (or, while
//! the room is busy with large fan-outs, at most `flush_window` later):
//!
//! ```text
//!            +-------------------------------------------------------+
//!            v                                                       |
//!   poll(until: next tick, wake-up, held flush, accept pause)        |
//!            |                                                       |
//!   1. events: accept until WouldBlock; read + run lines (chat);     |
//!              writable -> flush that outbox                         |
//!   2. wake-ups: last iteration's turn-overs, due flood tokens,      |
//!              input held back by the gate once it opens             |
//!   3. tick (every 100 ms): deadlines (idle), presence batches,      |
//!      buffers, stuck queues while over the total, memory back to    |
//!      the system, cluster heartbeat; accept pause over? accept      |
//!   3b. redis link (--cluster): its events into the chat (replies,   |
//!      the other servers' events), the chat's commands out to Redis  |
//!   4. flush every outbox touched this iteration (one write each),   |
//!      then look again at the input gate                             |
//!   5. reap connections that left (last write, deregister, close) ---+
//! ```
//!
//! All sockets are registered edge-triggered, so every accept and read loop
//! runs until `WouldBlock` — except when reading stops early: a client out
//! of flood tokens, one that had its 64 lines this turn, or everyone while
//! the input gate is closed. Then the connection is *parked* on one of
//! three wake-up lists and resumed when due, which is what turns flood
//! control (and a room that cannot keep up) into TCP backpressure on the
//! sender.
//!
//! The input gate is checked before every line taken from anyone (see
//! [`crate::conns`]): once a reading user falls behind, or all queues
//! together pass `--max-outbound-total`, the very next line waits.

use crate::chat::cluster::{Call, Cluster, Pending, Reply};
use crate::chat::{Chat, Effect, Leave, Now, Outbound, Security, Settings};
use crate::clean::clean_line;
use crate::cluster::{Link, LinkEvent, NotSent};
use crate::config::{Config, HISTORY_MAX_BYTES, HISTORY_PER_ROOM};
use crate::conn::{Conn, ReadResult};
use crate::conns::{Conns, QueueLimits};
use crate::endpoint::Endpoint;
use crate::fdlimit;
use crate::flush::FlushPolicy;
use crate::framing::Frame;
use crate::http::REQUEST_TIMEOUT;
use crate::id::{ConnId, HTTP_GENERATION, SERVER_GENERATION, server_token};
use crate::iplimit::IpLimits;
use crate::metrics::{self, Counters, Gauges, ProcessStats, RefusalReason};
use crate::oper::OperGate;
use crate::protocol;
use crate::store::Store;
use crate::stream::{Stream, tls_failure};
use crate::timer_wheel::{Tick, TimerWheel};
use crate::tls::{Reloadable, TlsFiles};
use crate::tuning::{
    ACCEPT_PAUSE, FD_RESERVE, GATE_RECHECK, HANDSHAKE_TIMEOUT, HANDSHAKES_PER_TURN, LINES_PER_TURN,
    LISTEN_BACKLOG, MAX_TLS_REFUSALS, READ_CHUNK, SEND_BUFFER, SHUTDOWN_DRAIN, TICK, TOTAL_STALL,
    TRIM_AFTER_FREED, WHEEL_SLOTS,
};
use crate::wakeups::Wakeups;
use log::{error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The signal pipe's token.
const SIGNAL_TOKEN: usize = 0;
/// The shutdown waker's token.
const WAKER_TOKEN: usize = 1;
/// The metrics listener's token.
const METRICS_TOKEN: usize = 2;
/// The Redis command connection's token (`--cluster`).
const REDIS_COMMAND_TOKEN: usize = 3;
/// The Redis subscriber connection's token (`--cluster`).
const REDIS_SUBSCRIBER_TOKEN: usize = 4;
/// Listener `i` has token `FIRST_LISTENER + i`.
const FIRST_LISTENER: usize = 16;

/// Stops a running server from another thread (tests, embedding); the
/// binary uses SIGINT/SIGTERM instead.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// Asks the loop to shut down gracefully, as SIGTERM would.
    pub fn shutdown(&self) {
        self.requested.store(true, Ordering::SeqCst);
        if let Err(error) = self.waker.wake() {
            warn!("could not wake the server for shutdown: {error}");
        }
    }
}

/// One chat listener.
#[derive(Debug)]
struct Listener {
    /// The listening socket.
    socket: TcpListener,
    /// Connections on it speak TLS.
    tls: bool,
}

/// A deadline on the timer wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// The connection may have been idle for `--idle-timeout`.
    Idle(ConnId),
    /// The TLS connection's handshake must be done by now.
    Handshake(ConnId),
    /// The metrics request in this slot of the endpoint is out of time.
    Scrape(usize),
}

/// A bound, not yet running chat server.
pub struct Server {
    poll: Poll,
    /// Chat listeners, plain ones first (`--listen`, then `--tls-listen`).
    listeners: Vec<Listener>,
    /// Their bound addresses, in the same order, then the metrics one.
    local_addrs: Vec<SocketAddr>,
    /// The TLS certificate and key, reloaded on SIGHUP.
    tls: Option<Reloadable>,
    /// Every connection: sockets, buffers, the input gate.
    conns: Conns,
    /// Users, names, rooms, presence, history, bans.
    chat: Chat,
    /// Connections open and connects per minute, per address.
    ip_limits: IpLimits,
    /// Deadlines, checked once per tick.
    timers: TimerWheel<Deadline>,
    /// Parked connections.
    wakeups: Wakeups,
    /// The flush window's state.
    flush: FlushPolicy,
    /// The `--metrics` listener and its requests.
    endpoint: Option<Endpoint>,
    /// With `--cluster`: the link to Redis, and so to the other servers.
    link: Option<Link<Pending>>,
    /// The counters PROTOCOL.md's metrics table lists, bumped in place.
    counters: Counters,
    config: Config,
    max_clients: usize,
    started: Instant,
    /// The last tick whose work was done.
    tick: Tick,
    /// Set while accepting is paused for lack of descriptors.
    accept_paused_until: Option<Instant>,
    /// True from the first EMFILE of an episode until an accept succeeds,
    /// so the warning is logged once per episode.
    out_of_fds: bool,
    /// Output buffer bytes freed since memory was last returned to the system.
    freed: usize,
    /// TLS connections refused at connect, waiting for their handshake to
    /// get their line (at most [`MAX_TLS_REFUSALS`]).
    refusing: usize,
    /// Handshake steps run in this loop iteration (at most
    /// [`HANDSHAKES_PER_TURN`]).
    handshakes_this_turn: usize,
    /// The longest one iteration worked (poll return to next poll).
    busy_max: Duration,
    /// The longest one tick's history write to `--db` took.
    db_write_max: Duration,
    signals: Option<Signals>,
    shutdown_requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
    /// One read's worth of bytes.
    scratch: Box<[u8]>,
    /// Reused lists, so a loop iteration does not allocate.
    ids: Vec<ConnId>,
    departures: Vec<(ConnId, Leave)>,
    effects: Vec<Effect>,
    calls: Vec<Call>,
}

impl Server {
    /// Raises the descriptor limit (if configured), binds every listener and
    /// installs the signal handlers; logs `listening on ADDR` per listener.
    pub fn bind(config: Config) -> io::Result<Server> {
        config
            .validate()
            .map_err(|msg| io::Error::new(io::ErrorKind::InvalidInput, msg))?;
        let limit = if config.raise_fd_limit {
            fdlimit::raise_to_hard()?
        } else {
            fdlimit::current()?
        };
        let max_clients = config
            .max_clients
            .unwrap_or_else(|| fdlimit::max_clients(limit, FD_RESERVE));
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) if !config.tls_listen.is_empty() => {
                let files = TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                };
                let tls = Reloadable::load(files)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                Some(tls)
            }
            _ => None,
        };
        // Before any `listening on` line: a file that is not a chatd
        // database stops the server before a script could think it started.
        let store = match &config.db {
            Some(path) => {
                let store = Store::open(path).map_err(|error| {
                    io::Error::new(io::ErrorKind::InvalidData, error.to_string())
                })?;
                info!("history and bans kept in {}", path.display());
                Some(store)
            }
            None => None,
        };
        let poll = Poll::new()?;
        // Before any `listening on` line: a script that reads it may signal
        // the server at once, and must find the handlers in place.
        let signals = if config.handle_signals {
            Some(install_signals(&poll)?)
        } else {
            None
        };
        let mut listeners = Vec::new();
        let mut local_addrs = Vec::new();
        let all = config.listen.iter().map(|a| (*a, false));
        let all = all.chain(config.tls_listen.iter().map(|a| (*a, true)));
        for (i, (addr, is_tls)) in all.enumerate() {
            let mut listener = listen(addr, config.reuse_port)?;
            let bound = listener.local_addr()?;
            poll.registry().register(
                &mut listener,
                server_token(FIRST_LISTENER + i),
                Interest::READABLE,
            )?;
            if is_tls {
                info!("tls listening on {bound}");
            } else {
                info!("listening on {bound}");
            }
            listeners.push(Listener {
                socket: listener,
                tls: is_tls,
            });
            local_addrs.push(bound);
        }
        let endpoint = match config.metrics {
            Some(addr) => {
                let mut endpoint = Endpoint::new(listen(addr, false)?);
                let bound = endpoint.listener_mut().local_addr()?;
                poll.registry().register(
                    endpoint.listener_mut(),
                    server_token(METRICS_TOKEN),
                    Interest::READABLE,
                )?;
                info!("metrics listening on {bound}");
                local_addrs.push(bound);
                Some(endpoint)
            }
            None => None,
        };
        let waker = Arc::new(Waker::new(poll.registry(), server_token(WAKER_TOKEN))?);
        info!(
            "max clients {max_clients}, idle timeout {}, max line {} bytes, max outbound {} bytes (total {}), flood {}/s burst {}",
            config
                .idle_timeout
                .map_or("off".to_string(), |t| format!("{} s", t.as_secs())),
            config.max_line,
            config.max_outbound,
            config.max_outbound_total,
            config.flood.rate,
            config.flood.burst
        );
        let oper = match &config.oper_password_file {
            Some(path) => OperGate::from_file(path)
                .map_err(|msg| io::Error::new(io::ErrorKind::InvalidInput, msg))?,
            None => OperGate::disabled(),
        };
        let security = Security {
            oper,
            exempt: config.exempt.clone(),
        };
        let chat = Chat::new(
            Settings {
                history_replay: config.history,
                max_rooms: config.max_rooms,
                history_per_room: HISTORY_PER_ROOM,
                history_max_bytes: HISTORY_MAX_BYTES,
            },
            store,
            security,
        );
        let mut chat = chat;
        let link = match &config.cluster {
            Some(url) => {
                let cluster = Cluster::new(&config.cluster_name, &url.to_string());
                let mut link = Link::new(
                    url.clone(),
                    poll.registry(),
                    server_token(REDIS_COMMAND_TOKEN),
                    server_token(REDIS_SUBSCRIBER_TOKEN),
                    Instant::now(),
                )?;
                for channel in cluster.channels() {
                    link.subscribe(channel.as_bytes(), Instant::now());
                }
                info!(
                    "cluster: server {} of cluster {:?}, linking through {url}",
                    cluster.id(),
                    config.cluster_name
                );
                chat.set_cluster(cluster);
                Some(link)
            }
            None => None,
        };
        let ip_limits = IpLimits::new(config.ip_limits, config.exempt.clone(), Instant::now());
        Ok(Server {
            poll,
            listeners,
            local_addrs,
            tls,
            conns: Conns::new(QueueLimits {
                max_outbound: config.max_outbound,
                max_total: config.max_outbound_total,
                max_line: config.max_line,
            }),
            chat,
            ip_limits,
            timers: TimerWheel::new(WHEEL_SLOTS),
            wakeups: Wakeups::default(),
            flush: FlushPolicy::new(config.flush_window),
            endpoint,
            link,
            counters: Counters::new(),
            max_clients,
            started: Instant::now(),
            tick: 0,
            accept_paused_until: None,
            out_of_fds: false,
            freed: 0,
            refusing: 0,
            handshakes_this_turn: 0,
            busy_max: Duration::ZERO,
            db_write_max: Duration::ZERO,
            signals,
            shutdown_requested: Arc::new(AtomicBool::new(false)),
            waker,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            ids: Vec::new(),
            departures: Vec::new(),
            effects: Vec::new(),
            calls: Vec::new(),
            config,
        })
    }

    /// The plain chat addresses actually bound (port 0 resolved), in
    /// `--listen` order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs[..self.config.listen.len()]
    }

    /// The TLS addresses actually bound, in `--tls-listen` order.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs[self.config.listen.len()..self.listeners.len()]
    }

    /// The metrics address actually bound, with `--metrics`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.endpoint
            .as_ref()
            .and_then(|_| self.local_addrs.last().copied())
    }

    /// The client limit in force (given, or derived from the fd limit).
    pub fn max_clients(&self) -> usize {
        self.max_clients
    }

    /// A handle that shuts this server down from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            requested: Arc::clone(&self.shutdown_requested),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Runs until a shutdown signal or request; then tells every user,
    /// closes every connection and returns.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let now = Now::read();
            self.conns.set_now(now.instant);
            self.wakeups.begin_iteration();
            self.handshakes_this_turn = 0;
            let mut stop = false;
            for event in events.iter() {
                let id = ConnId::from_token(event.token());
                if id.generation() == SERVER_GENERATION {
                    match id.slot() {
                        SIGNAL_TOKEN => stop |= self.signal_received(),
                        WAKER_TOKEN => stop |= self.shutdown_requested.load(Ordering::SeqCst),
                        METRICS_TOKEN => self.accept_scrapes(now),
                        REDIS_COMMAND_TOKEN | REDIS_SUBSCRIBER_TOKEN => {
                            if let Some(link) = self.link.as_mut() {
                                link.on_event(event, now.instant);
                            }
                        }
                        n => self.accept_all(n - FIRST_LISTENER, now),
                    }
                    continue;
                }
                if id.generation() == HTTP_GENERATION {
                    let readable =
                        event.is_readable() || event.is_read_closed() || event.is_error();
                    self.scrape_event(id.slot(), readable, event.is_writable());
                    continue;
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    if let Some(conn) = self.conns.get_mut(id) {
                        conn.read_drained = false;
                    }
                    self.service_input(id, now);
                }
                if event.is_writable() {
                    self.conns.flush(id, now.instant);
                    self.settle(now);
                }
            }
            self.wake(now);
            self.run_ticks(now);
            self.drive_link(now);
            self.resume_accepting(now);
            self.flush_due_outboxes(now);
            self.conns.update_gate(now.instant);
            self.reap();
            self.busy_max = self.busy_max.max(now.instant.elapsed());
            if stop {
                self.shut_down();
                return Ok(());
            }
        }
    }

    /// How long the poll may sleep: until the next tick, flood wake-up,
    /// held flush or end of an accept pause, whichever is first; not at all
    /// while a connection waits for its next turn or the gate is open for
    /// held-back input; a few milliseconds while the gate is closed.
    fn poll_timeout(&self, now: Instant) -> Duration {
        if self.wakeups.turns_pending() {
            return Duration::ZERO;
        }
        let mut wake = self.tick_start(self.tick + 1);
        if let Some(link) = &self.link {
            if link.has_unread_input() {
                return Duration::ZERO;
            }
            if let Some(at) = link.deadline() {
                wake = wake.min(at);
            }
        }
        if self.wakeups.gated() {
            if !self.conns.input_blocked() {
                return Duration::ZERO;
            }
            wake = wake.min(now + GATE_RECHECK);
        }
        if let Some(at) = self.wakeups.next_token() {
            wake = wake.min(at);
        }
        if let Some(until) = self.accept_paused_until {
            wake = wake.min(until);
        }
        if let Some(due) = self.flush.deadline() {
            wake = wake.min(due);
        }
        wake.saturating_duration_since(now)
    }

    /// Accepts until `WouldBlock`, or until descriptors run out.
    fn accept_all(&mut self, index: usize, now: Now) {
        while self.accept_paused_until.is_none() {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            let tls = listener.tls;
            match listener.socket.accept() {
                Ok((socket, peer)) => {
                    if self.out_of_fds {
                        self.out_of_fds = false;
                        info!("descriptors available again; accepting");
                    }
                    self.admit(socket, peer, tls, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_transient_accept_error(&e) => continue,
                Err(e) => {
                    if !self.out_of_fds {
                        self.out_of_fds = true;
                        warn!(
                            "accept failed: {e}; pausing accepts for {} ms ({} users connected)",
                            ACCEPT_PAUSE.as_millis(),
                            self.conns.len()
                        );
                    }
                    self.accept_paused_until = Some(now.instant + ACCEPT_PAUSE);
                }
            }
        }
    }

    /// Welcomes a new connection, or turns it away: banned address, server
    /// full, or over its address's limits (in that order). A TLS
    /// connection is not a user until its handshake completes (and a
    /// refused one gets its line over TLS then).
    fn admit(&mut self, socket: TcpStream, peer: SocketAddr, tls: bool, now: Now) {
        self.counters.connections_accepted += 1;
        let ip = peer.ip();
        let mut counted = false;
        let refusal = if self.chat.is_banned(ip, now.unix) {
            Some((
                protocol::BANNED,
                RefusalReason::Banned,
                "banned".to_string(),
            ))
        } else if self.conns.len() >= self.max_clients {
            let why = format!("server full ({} clients)", self.max_clients);
            Some((protocol::SERVER_FULL, RefusalReason::Full, why))
        } else if let Err(why) = self.ip_limits.admit(ip, now.instant) {
            let line = protocol::TOO_MANY_FROM_ADDRESS;
            Some((line, RefusalReason::IpLimit, why.to_string()))
        } else {
            counted = true;
            None
        };
        if let Some((_, reason, why)) = &refusal {
            self.counters.refused(*reason);
            info!("refused {peer}: {why}");
        }
        let refusal = refusal.map(|(line, _, _)| line);
        if let Err(error) = socket.set_nodelay(true) {
            warn!("{peer}: could not set TCP_NODELAY: {error}");
        }
        let stream = match (tls, &self.tls) {
            (true, Some(config)) => {
                if refusal.is_some() && self.refusing >= MAX_TLS_REFUSALS {
                    return;
                }
                match Stream::tls(socket, config.current()) {
                    Ok(stream) => stream,
                    Err(error) => {
                        warn!("{peer}: could not start TLS: {error}");
                        self.release(ip, counted, now.instant);
                        return;
                    }
                }
            }
            _ => {
                if let Some(line) = refusal {
                    let mut socket = socket;
                    let _best_effort = socket.write(format!("{line}\n").as_bytes());
                    return;
                }
                Stream::plain(socket)
            }
        };
        if let Err(error) =
            socket2::SockRef::from(stream.socket()).set_send_buffer_size(SEND_BUFFER)
        {
            warn!("{peer}: could not set SO_SNDBUF: {error}");
        }
        let id = self.conns.next_id();
        let mut stream = stream;
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(error) = self
            .poll
            .registry()
            .register(&mut stream, id.token(), interest)
        {
            warn!("{peer}: could not register: {error}");
            self.release(ip, counted, now.instant);
            return;
        }
        let handshaking = stream.is_handshaking();
        let mut conn = Conn::new(
            id,
            stream,
            peer,
            self.config.max_line,
            self.config.flood,
            now.instant,
        );
        conn.counted = counted;
        conn.refusal = refusal;
        if refusal.is_some() {
            self.refusing += 1;
        }
        let deadline = self.tick_at_or_after(now.instant + HANDSHAKE_TIMEOUT);
        if handshaking {
            conn.timer = Some(self.timers.insert(deadline, Deadline::Handshake(id)));
        }
        self.conns.insert(conn);
        if !handshaking {
            self.welcome(id, now);
        }
    }

    /// Lets go of a place under the per-address limits taken by `admit`.
    fn release(&mut self, ip: std::net::IpAddr, counted: bool, now: Instant) {
        if counted {
            self.ip_limits.release(ip, now);
        }
    }

    /// Makes connection `id` a user: greeting, lobby, idle deadline. A TLS
    /// connection refused at connect gets its refusal instead, and goes.
    fn welcome(&mut self, id: ConnId, now: Now) {
        let idle = self
            .config
            .idle_timeout
            .map(|timeout| self.tick_at_or_after(now.instant + timeout));
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let timer = conn.timer.take();
        let peer = conn.peer;
        if let Some(timer) = timer {
            self.timers.remove(timer);
        }
        // A ban made while the handshake was going on applies too.
        let refusal = match conn.refusal.take() {
            Some(line) => {
                self.refusing -= 1;
                Some(line)
            }
            None if self.chat.is_banned(peer.ip(), now.unix) => {
                info!("refused {peer}: banned during its TLS handshake");
                Some(protocol::BANNED)
            }
            None => None,
        };
        if let Some(line) = refusal {
            self.conns.line(id, line);
            self.conns.leave(id, Leave::Refused);
            self.settle(now);
            return;
        }
        if let Some(conn) = self.conns.get_mut(id) {
            conn.user = true;
        }
        if let Some(deadline) = idle {
            let timer = self.timers.insert(deadline, Deadline::Idle(id));
            if let Some(conn) = self.conns.get_mut(id) {
                conn.timer = Some(timer);
            }
        }
        self.chat.join(id, peer, now, &mut self.conns);
        info!("{peer} connected ({} online)", self.conns.len());
        self.settle(now);
    }

    /// Drives a TLS handshake on a readable event: true once the connection
    /// is a user (or never needed a handshake), false while it is still
    /// handshaking or has failed.
    fn handshake(&mut self, id: ConnId, now: Now) -> bool {
        let Some(conn) = self.conns.get_mut(id) else {
            return false;
        };
        if conn.user {
            return true;
        }
        if conn.parked {
            return false;
        }
        // A handshake's crypto costs ~140 µs of this one thread: a storm of
        // a thousand would hold everyone's lines for 140 ms in one turn.
        // Past a few per turn the rest wait for the next iteration.
        if self.handshakes_this_turn >= HANDSHAKES_PER_TURN {
            conn.parked = true;
            self.wakeups.until_next_turn(id);
            return false;
        }
        self.handshakes_this_turn += 1;
        while conn.socket.is_handshaking() && !conn.read_drained && !conn.read_eof {
            match conn.read_once(&mut self.scratch) {
                Ok((_, n)) => self.counters.bytes_received += n as u64,
                Err(error) => {
                    if tls_failure(&error).is_some() {
                        info!("{}: {error}", conn.peer);
                        self.counters.tls_handshake_failures += 1;
                    }
                    self.conns.leave(id, Leave::Failed(error.to_string()));
                    self.settle(now);
                    return false;
                }
            }
        }
        if conn.socket.take_handshake_completed() {
            self.welcome(id, now);
            return self.conns.get(id).is_some_and(|c| c.user && c.is_present());
        }
        if conn.read_eof {
            info!("{}: closed during the TLS handshake", conn.peer);
            self.counters.tls_handshake_failures += 1;
            self.conns.leave(id, Leave::Closed);
            self.settle(now);
        }
        false
    }

    /// Takes as many lines from `id` as flood control and the input gate
    /// allow, reading the socket whenever the framer runs dry, and runs
    /// each one.
    ///
    /// At most [`LINES_PER_TURN`] lines are run per call: a client with a
    /// large token allowance (or none, `--flood-rate 0`) then waits for the
    /// next loop iteration, so the others' events and the flush of their
    /// outboxes are never held up behind it.
    fn service_input(&mut self, id: ConnId, now: Now) {
        let Some(before) = self.conns.get(id).map(|c| c.framer.heap_bytes()) else {
            return;
        };
        self.take_input(id, now);
        let after = self.conns.get(id).map_or(before, |c| c.framer.heap_bytes());
        self.conns.framer_changed(before, after);
    }

    /// [`service_input`](Self::service_input)'s work; the framer's memory
    /// is accounted around it.
    fn take_input(&mut self, id: ConnId, now: Now) {
        if !self.handshake(id, now) {
            return;
        }
        let flood = self.config.flood;
        let mut lines = 0;
        loop {
            let blocked = self.conns.input_blocked();
            let Some(conn) = self.conns.get_mut(id) else {
                return;
            };
            if !conn.is_present() || conn.parked {
                return;
            }
            if self.chat.is_waiting(id) {
                conn.parked = true;
                conn.waiting_for_cluster = true;
                return;
            }
            if lines == LINES_PER_TURN {
                conn.parked = true;
                self.wakeups.until_next_turn(id);
                return;
            }
            if blocked {
                conn.parked = true;
                self.wakeups.until_gate_opens(id);
                return;
            }
            if !conn.bucket.try_take(flood, now.instant) {
                if conn.framer.buffered() > 0 || !conn.read_drained || conn.read_eof {
                    conn.parked = true;
                    let at = now.instant + conn.bucket.wait(flood, now.instant);
                    self.wakeups.until_token(id, at);
                    self.counters.flood_delays += 1;
                }
                return;
            }
            let input = match conn.framer.next_frame() {
                Some(frame) => Some(Input::from(frame)),
                None if conn.read_eof => conn.framer.finish().map(Input::from),
                None => None,
            };
            let Some(input) = input else {
                conn.bucket.refund(flood);
                if conn.read_eof {
                    self.conns.leave(id, Leave::Closed);
                    self.settle(now);
                    return;
                }
                if conn.read_drained {
                    return;
                }
                match conn.read_once(&mut self.scratch) {
                    Ok((ReadResult::Data | ReadResult::Eof, n)) => {
                        self.counters.bytes_received += n as u64;
                        continue;
                    }
                    Ok((ReadResult::Drained, _)) => return,
                    Err(error) => {
                        self.conns.leave(id, Leave::Failed(error.to_string()));
                        self.settle(now);
                        return;
                    }
                }
            };
            conn.last_active = now.instant;
            lines += 1;
            self.counters.lines_received += 1;
            match input {
                Input::Line(text) => self.chat.execute_line(id, &text, now, &mut self.conns),
                Input::TooLong => {
                    let line = protocol::line_too_long(self.config.max_line);
                    self.conns.line(id, &line);
                }
            }
            self.settle(now);
        }
    }

    /// Applies what the chat asked for and tells the chat who left, until
    /// neither has anything more.
    fn settle(&mut self, now: Now) {
        loop {
            let mut effects = std::mem::take(&mut self.effects);
            self.chat.take_effects(&mut effects);
            for effect in effects.drain(..) {
                match effect {
                    Effect::Disconnect(id, reason) => self.conns.leave(id, reason),
                    Effect::Charge(id, tokens) => {
                        if let Some(conn) = self.conns.get_mut(id) {
                            conn.bucket.charge(self.config.flood, tokens, now.instant);
                        }
                    }
                    Effect::Resume(id) => {
                        if let Some(conn) = self.conns.get_mut(id)
                            && conn.waiting_for_cluster
                        {
                            conn.waiting_for_cluster = false;
                            self.wakeups.until_next_turn(id);
                        }
                    }
                }
            }
            self.effects = effects;
            let mut departures = std::mem::take(&mut self.departures);
            self.conns.take_departures(&mut departures);
            if departures.is_empty() {
                self.departures = departures;
                return;
            }
            for (id, reason) in departures.drain(..) {
                self.log_departure(id, &reason);
                let user = self.conns.get(id).is_some_and(|c| c.user);
                if user {
                    self.counters.disconnected(reason.metric());
                }
                self.chat.leave(id, &reason, now);
            }
            self.departures = departures;
        }
    }

    /// One log line per departure: a warning for the too slow (containing
    /// `too slow`, as PROTOCOL.md asks), info for the rest.
    fn log_departure(&self, id: ConnId, reason: &Leave) {
        let name = self.chat.user(id).map_or("?", |u| u.name.as_str());
        let peer = self.conns.get(id).map(|c| c.peer);
        let peer = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
        match reason {
            Leave::TooSlow => warn!(
                "{name} ({peer}) too slow: over --max-outbound {} bytes queued; disconnected",
                self.config.max_outbound
            ),
            Leave::Shutdown => {}
            _ => info!("{name} ({peer}) left: {reason}"),
        }
    }

    /// Resumes parked connections whose time has come: last iteration's
    /// turn-overs, the due flood wake-ups, and everyone held back by the
    /// input gate once it is open (see [`Wakeups::take_due`]).
    fn wake(&mut self, now: Now) {
        let mut due = std::mem::take(&mut self.ids);
        let gate_open = !self.conns.input_blocked();
        self.wakeups.take_due(now.instant, gate_open, &mut due);
        for id in due.drain(..) {
            if let Some(conn) = self.conns.get_mut(id) {
                conn.parked = false;
                self.service_input(id, now);
            }
        }
        self.ids = due;
    }

    /// Does the work of every tick that has come since the last call.
    fn run_ticks(&mut self, now: Now) {
        let current = self.tick_of(now.instant);
        if current <= self.tick {
            return;
        }
        self.tick = current;
        self.flush.tick();
        self.check_deadlines(now);
        self.ip_limits.expire(now.instant);
        self.chat.flush_presence(&mut self.conns);
        self.chat.cluster_tick(now);
        self.conns.release_unused_buffers();
        if self.conns.over_total() {
            for id in self.conns.stuck(now.instant, TOTAL_STALL) {
                self.conns.leave(id, Leave::TooSlow);
            }
        }
        self.settle(now);
        let writing = Instant::now();
        self.chat.write_history();
        self.db_write_max = self.db_write_max.max(writing.elapsed());
        self.return_memory();
    }

    /// Drives the Redis link (`--cluster`): reads what it has, applies its
    /// events to the chat (replies, messages from the other servers, up and
    /// down), and sends what the chat asked of Redis — until neither has
    /// anything more.
    fn drive_link(&mut self, now: Now) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        link.continue_reading(now.instant);
        link.on_timer(now.instant);
        loop {
            let mut any = false;
            while let Some(event) = self.link.as_mut().and_then(Link::next_event) {
                any = true;
                match event {
                    LinkEvent::Up => self.chat.link_up(now),
                    LinkEvent::Down { reason, unanswered } => {
                        self.chat
                            .link_down(&reason.to_string(), unanswered, now, &mut self.conns)
                    }
                    LinkEvent::Reply { tag, frame } => {
                        self.chat
                            .on_reply(tag, Reply::from(frame), now, &mut self.conns)
                    }
                    LinkEvent::Message { payload, .. } => {
                        self.chat.on_message(&payload, now, &mut self.conns)
                    }
                }
            }
            self.settle(now);
            let mut calls = std::mem::take(&mut self.calls);
            self.chat.take_calls(&mut calls);
            any |= !calls.is_empty();
            for call in calls.drain(..) {
                let Some(link) = self.link.as_mut() else {
                    break;
                };
                if let Err(NotSent { tag }) = send_call(link, call, now.instant) {
                    self.chat.not_sent(tag, now, &mut self.conns);
                }
            }
            self.calls = calls;
            if let Some(link) = self.link.as_mut() {
                link.flush(now.instant);
            }
            if !any {
                return;
            }
        }
    }

    /// Hands freed memory back to the system once enough was freed, so a
    /// burst that filled the queues does not leave the process large.
    fn return_memory(&mut self) {
        self.freed += self.conns.take_freed();
        if self.freed < TRIM_AFTER_FREED {
            return;
        }
        self.freed = 0;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// Ends an accept pause once its time is up, and accepts what waited.
    fn resume_accepting(&mut self, now: Now) {
        if self
            .accept_paused_until
            .is_some_and(|until| now.instant >= until)
        {
            self.accept_paused_until = None;
            for index in 0..self.listeners.len() {
                self.accept_all(index, now);
            }
        }
    }

    /// Handles the deadlines that came: idle users are disconnected, the
    /// ones active since they were scheduled go back on the wheel.
    fn check_deadlines(&mut self, now: Now) {
        let mut due = Vec::new();
        self.timers.advance(self.tick, &mut due);
        for deadline in due {
            match deadline {
                Deadline::Idle(id) => self.check_idle(id, now),
                Deadline::Handshake(id) => self.handshake_overdue(id, now),
                Deadline::Scrape(key) => {
                    if let Some(endpoint) = self.endpoint.as_mut() {
                        endpoint.expire(self.poll.registry(), key);
                    }
                }
            }
        }
    }

    /// The handshake deadline of `id` came: a connection still handshaking
    /// is closed (it never became a user, so nobody is told).
    fn handshake_overdue(&mut self, id: ConnId, now: Now) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.timer = None;
        if conn.user || !conn.is_present() {
            return;
        }
        info!(
            "{}: TLS handshake not done within {} s; closed",
            conn.peer,
            HANDSHAKE_TIMEOUT.as_secs()
        );
        self.counters.tls_handshake_failures += 1;
        self.conns
            .leave(id, Leave::Failed("handshake timeout".to_string()));
        self.settle(now);
    }

    /// The idle deadline of `id` came: disconnect it, or reschedule.
    fn check_idle(&mut self, id: ConnId, now: Now) {
        let Some(timeout) = self.config.idle_timeout else {
            return;
        };
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.timer = None;
        if !conn.is_present() {
            return;
        }
        let deadline = conn.last_active + timeout;
        if now.instant >= deadline {
            self.conns
                .line(id, &protocol::idle_disconnect(timeout.as_secs()));
            self.conns.leave(id, Leave::Idle);
        } else {
            let tick = self.tick_at_or_after(deadline);
            let timer = self.timers.insert(tick, Deadline::Idle(id));
            if let Some(conn) = self.conns.get_mut(id) {
                conn.timer = Some(timer);
            }
        }
    }

    /// Accepts metrics requests, each with its deadline on the wheel.
    fn accept_scrapes(&mut self, now: Now) {
        let Some(endpoint) = self.endpoint.as_mut() else {
            return;
        };
        let deadline = tick_at_or_after(self.started, now.instant + REQUEST_TIMEOUT);
        let timers = &mut self.timers;
        endpoint.accept_all(self.poll.registry(), |key| {
            timers.insert(deadline, Deadline::Scrape(key))
        });
    }

    /// Drives a metrics request; renders the metrics when it asks for them.
    fn scrape_event(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(endpoint) = self.endpoint.as_mut() else {
            return;
        };
        let (conns, chat, counters) = (&self.conns, &self.chat, &self.counters);
        let (busy_max, db_write_max) = (self.busy_max, self.db_write_max);
        let render = |out: &mut Vec<u8>| {
            let mut counters = counters.clone();
            counters.deliveries = conns.deliveries();
            counters.bytes_sent = conns.bytes_sent();
            counters.history_lines = chat.history_lines();
            let gauges = Gauges {
                connections: conns.len() as u64,
                rooms: chat.occupied_rooms() as u64,
                outbound_queued_bytes: conns.queued_total() as u64,
                loop_busy_max_seconds: busy_max.as_secs_f64(),
                db_write_max_seconds: db_write_max.as_secs_f64(),
            };
            let process = ProcessStats::read_self().ok();
            metrics::render(&counters, &gauges, process.as_ref(), out);
        };
        let registry = self.poll.registry();
        if let Some(timer) =
            endpoint.event(registry, key, readable, writable, &mut self.scratch, render)
        {
            self.timers.remove(timer);
        }
    }

    /// Writes the outboxes touched since the last flush, unless the flush
    /// window holds them (see [`FlushPolicy`]).
    fn flush_due_outboxes(&mut self, now: Now) {
        if !self.flush.due(self.conns.pending_flushes(), now.instant) {
            return;
        }
        let mut ids = std::mem::take(&mut self.ids);
        self.conns.take_flush_list(&mut ids);
        let written = ids.len();
        for id in ids.drain(..) {
            self.conns.flush(id, now.instant);
        }
        self.flush.flushed(written, self.conns.deliveries());
        self.ids = ids;
        self.settle(now);
    }

    /// Closes the connections that left, after a last best-effort write of
    /// what was queued for them.
    fn reap(&mut self) {
        let mut ids = std::mem::take(&mut self.ids);
        self.conns.take_reap_list(&mut ids);
        for id in ids.drain(..) {
            let Some(mut conn) = self.conns.remove(id) else {
                continue;
            };
            if let Some(timer) = conn.timer.take() {
                self.timers.remove(timer);
            }
            if conn.refusal.take().is_some() {
                self.refusing -= 1;
            }
            self.release(conn.peer.ip(), conn.counted, Instant::now());
            if conn.leaving.as_ref().is_some_and(Leave::flush_on_close) {
                let _best_effort = conn.outbox.flush_to(&mut conn.socket);
                conn.socket.send_close_notify();
            } else if conn.leaving == Some(Leave::TooSlow) {
                // Reset rather than close: a normal close leaves the MBs the
                // kernel still holds for a non-reader in an orphaned socket
                // for minutes, and a thousand of those push the whole
                // machine's TCP memory into pressure, stalling everyone.
                let socket = socket2::SockRef::from(conn.socket.socket());
                if let Err(error) = socket.set_linger(Some(Duration::ZERO)) {
                    warn!("{}: could not reset slow connection: {error}", conn.peer);
                }
            }
            if let Err(error) = self.poll.registry().deregister(&mut conn.socket) {
                warn!("{}: deregister failed: {error}", conn.peer);
            }
        }
        self.ids = ids;
    }

    /// Tells everyone the server is going, gives their sockets a moment to
    /// take the line, and closes every connection.
    fn shut_down(&mut self) {
        let ids = self.conns.ids();
        info!("shutting down; {} connections", ids.len());
        for &id in &ids {
            // A TLS connection still in its handshake is no user and cannot
            // be written to: it is simply closed.
            if self.conns.get(id).is_some_and(|c| c.user) {
                self.conns.line(id, protocol::SHUTTING_DOWN);
            }
        }
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        let mut events = Events::with_capacity(1024);
        loop {
            let mut pending = false;
            for &id in &ids {
                if let Some(conn) = self.conns.get_mut(id)
                    && conn.is_present()
                    && !conn.outbox.is_empty()
                {
                    self.conns.flush(id, Instant::now());
                    pending |= self.conns.get(id).is_some_and(|c| !c.outbox.is_empty());
                }
            }
            let now = Instant::now();
            if !pending || now >= deadline {
                break;
            }
            let _ = self.poll.poll(&mut events, Some(deadline - now));
        }
        let now = Now::read();
        self.chat.cluster_quit();
        let mut calls = Vec::new();
        self.chat.take_calls(&mut calls);
        if let Some(link) = self.link.as_mut() {
            for call in calls {
                let _gone_with_the_server = send_call(link, call, now.instant);
            }
            link.flush(now.instant);
        }
        for id in ids {
            self.chat.leave(id, &Leave::Shutdown, now);
            self.counters.disconnected(Leave::Shutdown.metric());
            if let Some(mut conn) = self.conns.remove(id) {
                let _ = self.poll.registry().deregister(&mut conn.socket);
            }
        }
    }

    /// True if SIGINT or SIGTERM arrived; SIGHUP reloads the TLS
    /// certificate and key (the old ones stay if the new files are bad).
    fn signal_received(&mut self) -> bool {
        let Some(signals) = self.signals.as_mut() else {
            return false;
        };
        let mut stop = false;
        for signal in signals.pending() {
            if signal == SIGHUP {
                match self.tls.as_mut() {
                    Some(tls) => match tls.reload() {
                        Ok(()) => info!(
                            "received SIGHUP; reloaded the TLS certificate {} and key {}",
                            tls.files().cert.display(),
                            tls.files().key.display()
                        ),
                        Err(error) => error!("SIGHUP: {error}; keeping the old certificate"),
                    },
                    None => info!("received SIGHUP; nothing to reload"),
                }
                continue;
            }
            info!("received signal {signal}; shutting down");
            stop = true;
        }
        stop
    }

    /// When tick `tick` begins.
    fn tick_start(&self, tick: Tick) -> Instant {
        let nanos = u64::try_from(TICK.as_nanos()).unwrap_or(u64::MAX);
        self.started + Duration::from_nanos(nanos.saturating_mul(tick))
    }

    fn tick_of(&self, at: Instant) -> Tick {
        (at.saturating_duration_since(self.started).as_nanos() / TICK.as_nanos()) as Tick
    }

    /// The first tick that starts at or after `at`, so a deadline checked
    /// then is never early.
    fn tick_at_or_after(&self, at: Instant) -> Tick {
        tick_at_or_after(self.started, at)
    }
}

/// Hands one of the chat's commands for Redis to the link.
fn send_call(link: &mut Link<Pending>, call: Call, now: Instant) -> Result<(), NotSent<Pending>> {
    let args: Vec<&[u8]> = call.args.iter().map(Vec::as_slice).collect();
    link.command(call.tag, &args, now)
}

/// The first tick (of a clock started at `started`) that starts at or
/// after `at`.
fn tick_at_or_after(started: Instant, at: Instant) -> Tick {
    let nanos = at.saturating_duration_since(started).as_nanos();
    nanos.div_ceil(TICK.as_nanos()) as Tick
}

/// One unit of input, owned, so the connection can be let go while it runs.
enum Input {
    Line(String),
    TooLong,
}

impl From<Frame<'_>> for Input {
    fn from(frame: Frame<'_>) -> Self {
        match frame {
            Frame::Line(bytes) => Input::Line(clean_line(bytes)),
            Frame::TooLong => Input::TooLong,
        }
    }
}

/// Errors after which the next accept may well succeed at once: the peer
/// gave up while queued, or a signal interrupted the call.
fn is_transient_accept_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Binds a non-blocking listener with a backlog large enough for a connect
/// storm; IPv6 listeners are v6-only so `0.0.0.0` and `[::]` can share a port.
/// With `reuse_port` (`--reuse-port`), several processes may bind the same
/// address and the kernel spreads new connections among them.
fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// SIGINT and SIGTERM wake the loop through `signal-hook-mio`; a second one
/// while the first is being handled exits the process at once with status 1.
/// SIGHUP wakes it too, so it no longer kills the process.
fn install_signals(poll: &Poll) -> io::Result<Signals> {
    let seen = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&seen))?;
        signal_hook::flag::register(signal, Arc::clone(&seen))?;
    }
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    poll.registry()
        .register(&mut signals, server_token(SIGNAL_TOKEN), Interest::READABLE)?;
    Ok(signals)
}
