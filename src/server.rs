//! The event loop: one thread, one `mio::Poll`, every connection.
//!
//! Each iteration of [`Server::run`] does the same five things, in an order
//! chosen so that a line leaves in the iteration that queued it (or, while
//! the room is busy with large fan-outs, at most `flush_window` later):
//!
//! ```text
//!            +-------------------------------------------------------+
//!            v                                                       |
//!   poll(until: next tick, wake-up, held flush, accept pause)        |
//!            |                                                       |
//!   1. events: accept until WouldBlock; read + run lines (session);  |
//!              writable -> flush that outbox                         |
//!   2. wake-ups: resume readers whose token (or turn) is back        |
//!   3. tick (every 100 ms): idle wheel, presence batch, buffers      |
//!      accept pause over? accept what waited                         |
//!   4. flush every outbox touched this iteration (one write each),   |
//!      then note whether a reading user is falling behind            |
//!   5. reap users who left (last flush, deregister, close) ----------+
//! ```
//!
//! All sockets are registered edge-triggered, so every accept and read loop
//! runs until `WouldBlock` — except when reading stops early: a client out
//! of flood tokens, one that had its 64 lines this turn, or everyone while a
//! reading user is falling behind. Then the connection is remembered in a
//! wake-up heap and resumed when due, which is what turns flood control (and
//! a room that cannot keep up) into TCP backpressure on the sender.

use crate::clean::clean_line;
use crate::command;
use crate::config::{
    ACCEPT_PAUSE, BUSY_FANOUTS_PER_TICK, Config, FD_RESERVE, LARGE_FANOUT, LISTEN_BACKLOG, TICK,
};
use crate::conn::{Conn, Leave, ReadResult};
use crate::fdlimit;
use crate::framing::Frame;
use crate::outbox::Flushed;
use crate::presence::Seq;
use crate::room::Room;
use crate::session::{self, After};
use crate::timer_wheel::{Tick, TimerWheel};
use log::{info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Tokens at the top of the range belong to the server itself; connection
/// tokens are slab keys, which start at 0 and never get near them.
const SIGNAL_TOKEN: Token = Token(usize::MAX);
const WAKER_TOKEN: Token = Token(usize::MAX - 1);
const FIRST_LISTENER: usize = usize::MAX - 1024;

/// The bytes read from a socket in one call; lines beyond what flood control
/// lets through wait in the connection's framer.
const READ_CHUNK: usize = 16 * 1024;

/// The kernel send buffer asked for each connection (Linux doubles it).
/// Left to autotuning, a client that never reads makes the kernel hold
/// megabytes for it before its outbox even starts to fill; a thousand such
/// clients push the host's TCP memory into pressure and stall everyone
/// else. Fixed, a connection's kernel cost is known, and 128 KiB is still
/// far more than a chat line burst.
const SEND_BUFFER: usize = 128 * 1024;

/// While readers are behind, paused input is looked at again this often.
const INPUT_GATE_RECHECK: Duration = Duration::from_millis(1);

/// A reader whose output the kernel took within this long counts as
/// reading (see [`Room::readers_behind`]).
const READER_PROGRESS: Duration = Duration::from_millis(50);

/// The longest one reader who stays behind may keep input paused.
const READER_HOLD: Duration = Duration::from_secs(1);

/// Lines run for one connection before the loop moves on to the others.
const LINES_PER_TURN: usize = 64;

/// Wheel width in ticks: a minute and a half of 100 ms ticks, so the default
/// 60 s timeout is checked once per deadline.
const WHEEL_SLOTS: usize = 1024;

/// How long shutdown waits for `Server is shutting down` to reach clients
/// whose socket buffers are full.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

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

/// A bound, not yet running chat server.
pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    local_addrs: Vec<SocketAddr>,
    room: Room,
    idle_wheel: TimerWheel<(usize, Seq)>,
    /// Connections waiting for a flood-control token: (when, key, arrival).
    flood_wakeups: BinaryHeap<Reverse<(Instant, usize, Seq)>>,
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
    /// When the pending outboxes must be written, if a flush is being held
    /// back to coalesce lines.
    flush_due: Option<Instant>,
    /// Some reading user has over half of `--max-outbound` queued: input
    /// waits (recomputed after every flush).
    readers_behind: bool,
    /// Large fan-outs flushed during the current and the previous tick.
    fanouts_this_tick: u32,
    fanouts_last_tick: u32,
    signals: Option<Signals>,
    shutdown_requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
    scratch: Box<[u8]>,
}

impl Server {
    /// Raises the descriptor limit (if configured), binds every listener and
    /// installs the signal handlers; logs `listening on ADDR` per listener.
    pub fn bind(config: Config) -> io::Result<Server> {
        let limit = if config.raise_fd_limit {
            fdlimit::raise_to_hard()?
        } else {
            fdlimit::current()?
        };
        let max_clients = config
            .max_clients
            .unwrap_or_else(|| fdlimit::max_clients(limit, FD_RESERVE));
        let poll = Poll::new()?;
        let mut listeners = Vec::new();
        let mut local_addrs = Vec::new();
        for (i, addr) in config.listen.iter().enumerate() {
            let mut listener = listen(*addr)?;
            let bound = listener.local_addr()?;
            poll.registry().register(
                &mut listener,
                Token(FIRST_LISTENER + i),
                Interest::READABLE,
            )?;
            info!("listening on {bound}");
            listeners.push(listener);
            local_addrs.push(bound);
        }
        let signals = if config.handle_signals {
            Some(install_signals(&poll)?)
        } else {
            None
        };
        let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
        info!(
            "max clients {max_clients}, idle timeout {}, max line {} bytes, max outbound {} bytes, flood {}/s burst {}",
            config
                .idle_timeout
                .map_or("off".to_string(), |t| format!("{} s", t.as_secs())),
            config.max_line,
            config.max_outbound,
            config.flood.rate,
            config.flood.burst
        );
        Ok(Server {
            poll,
            listeners,
            local_addrs,
            room: Room::new(config.max_outbound),
            idle_wheel: TimerWheel::new(WHEEL_SLOTS),
            flood_wakeups: BinaryHeap::new(),
            max_clients,
            started: Instant::now(),
            tick: 0,
            accept_paused_until: None,
            out_of_fds: false,
            flush_due: None,
            readers_behind: false,
            fanouts_this_tick: 0,
            fanouts_last_tick: 0,
            signals,
            shutdown_requested: Arc::new(AtomicBool::new(false)),
            waker,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            config,
        })
    }

    /// The addresses actually bound (port 0 resolved), in `--listen` order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
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
        let mut keys = Vec::new();
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            let now = Instant::now();
            let mut stop = false;
            for event in events.iter() {
                match event.token() {
                    SIGNAL_TOKEN => stop |= self.signal_received(),
                    WAKER_TOKEN => stop |= self.shutdown_requested.load(Ordering::SeqCst),
                    Token(n) if n >= FIRST_LISTENER => self.accept_all(n - FIRST_LISTENER, now),
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            if let Some(conn) = self.room.get_mut(key) {
                                conn.read_drained = false;
                            }
                            self.service_input(key, now);
                        }
                        if event.is_writable() {
                            self.flush(key);
                        }
                    }
                }
            }
            self.wake_throttled(now);
            self.run_ticks(now);
            self.resume_accepting(now);
            if self.flush_is_due(now) {
                self.room.take_flush_list(&mut keys);
                if keys.len() >= LARGE_FANOUT {
                    self.fanouts_this_tick += 1;
                }
                for key in keys.drain(..) {
                    self.flush(key);
                }
            }
            self.readers_behind = self.room.readers_behind(now, READER_PROGRESS, READER_HOLD);
            self.reap(&mut keys);
            if stop {
                self.shut_down();
                return Ok(());
            }
        }
    }

    /// How long the poll may sleep: until the next tick, flood wake-up,
    /// held flush or end of an accept pause, whichever is first.
    fn poll_timeout(&self, now: Instant) -> Duration {
        let mut wake = self.tick_start(self.tick + 1);
        if let Some(Reverse((at, _, _))) = self.flood_wakeups.peek() {
            wake = wake.min(*at);
        }
        if let Some(until) = self.accept_paused_until {
            wake = wake.min(until);
        }
        if let Some(due) = self.flush_due {
            wake = wake.min(due);
        }
        wake.saturating_duration_since(now)
    }

    /// Whether to write the pending outboxes now. Normally yes, every
    /// iteration; but while the room is busy with large fan-outs, the first
    /// pending line may wait up to `flush_window` so that the lines arriving
    /// meanwhile leave in the same `write` (each loopback `write` costs a few
    /// microseconds of this thread's CPU however little it carries).
    fn flush_is_due(&mut self, now: Instant) -> bool {
        let pending = self.room.pending_flushes();
        if pending == 0 {
            return false;
        }
        let busy = self.fanouts_last_tick >= BUSY_FANOUTS_PER_TICK;
        if self.config.flush_window.is_zero() || pending < LARGE_FANOUT || !busy {
            self.flush_due = None;
            return true;
        }
        match self.flush_due {
            None => {
                self.flush_due = Some(now + self.config.flush_window);
                false
            }
            Some(due) if now >= due => {
                self.flush_due = None;
                true
            }
            Some(_) => false,
        }
    }

    /// Accepts until `WouldBlock`, or until descriptors run out.
    fn accept_all(&mut self, index: usize, now: Instant) {
        while self.accept_paused_until.is_none() {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => {
                    if self.out_of_fds {
                        self.out_of_fds = false;
                        info!("descriptors available again; accepting");
                    }
                    self.admit(socket, peer, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_transient_accept_error(&e) => continue,
                Err(e) => {
                    if !self.out_of_fds {
                        self.out_of_fds = true;
                        warn!(
                            "accept failed: {e}; pausing accepts for {} ms ({} users connected)",
                            ACCEPT_PAUSE.as_millis(),
                            self.room.len()
                        );
                    }
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                }
            }
        }
    }

    /// Welcomes a new connection, or turns it away when the room is full.
    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr, now: Instant) {
        if self.room.len() >= self.max_clients {
            info!("refused {peer}: server full ({} clients)", self.max_clients);
            let _best_effort = socket.write(b"Server is full, try again later\n");
            return;
        }
        if let Err(error) = socket.set_nodelay(true) {
            warn!("{peer}: could not set TCP_NODELAY: {error}");
        }
        if let Err(error) = socket2::SockRef::from(&socket).set_send_buffer_size(SEND_BUFFER) {
            warn!("{peer}: could not set SO_SNDBUF: {error}");
        }
        let key = self.room.next_key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(error) = self
            .poll
            .registry()
            .register(&mut socket, Token(key), interest)
        {
            warn!("{peer}: could not register: {error}");
            return;
        }
        let (max_line, flood) = (self.config.max_line, self.config.flood);
        let key = self
            .room
            .join(|seq| Conn::new(socket, peer, seq, max_line, flood, now));
        info!("{peer} connected ({} online)", self.room.len());
        if let (Some(timeout), Some(conn)) = (self.config.idle_timeout, self.room.get(key)) {
            let deadline = self.tick_at_or_after(now + timeout);
            self.idle_wheel.insert(deadline, (key, conn.joined));
        }
    }

    /// Takes as many lines from `key` as flood control allows, reading the
    /// socket whenever the framer runs dry, and runs each one.
    ///
    /// At most [`LINES_PER_TURN`] lines are run per call: a client with a
    /// large token allowance (or none, `--flood-rate 0`) then waits for the
    /// next loop iteration like a throttled one, so the others' events and
    /// the flush of their outboxes are never held up behind it.
    fn service_input(&mut self, key: usize, now: Instant) {
        let flood = self.config.flood;
        let mut lines = 0;
        loop {
            let Some(conn) = self.room.get_mut(key) else {
                return;
            };
            if !conn.is_present() || conn.throttled {
                return;
            }
            if lines == LINES_PER_TURN {
                conn.throttled = true;
                self.flood_wakeups.push(Reverse((now, key, conn.joined)));
                return;
            }
            if self.readers_behind {
                conn.throttled = true;
                let at = now + INPUT_GATE_RECHECK;
                self.flood_wakeups.push(Reverse((at, key, conn.joined)));
                return;
            }
            if !conn.bucket.try_take(flood, now) {
                if conn.framer.buffered() > 0 || !conn.read_drained || conn.read_eof {
                    conn.throttled = true;
                    let at = now + conn.bucket.wait(flood, now);
                    self.flood_wakeups.push(Reverse((at, key, conn.joined)));
                }
                return;
            }
            let frame = match conn.framer.next_frame() {
                Some(frame) => Some(Input::from(frame)),
                None if conn.read_eof => conn.framer.finish().map(Input::from),
                None => None,
            };
            let input = match frame {
                Some(input) => input,
                None => {
                    conn.bucket.refund(flood);
                    if conn.read_eof {
                        self.room.leave(key, Leave::Closed);
                        return;
                    }
                    if conn.read_drained {
                        return;
                    }
                    match conn.read_once(&mut self.scratch) {
                        Ok(ReadResult::Data | ReadResult::Eof) => continue,
                        Ok(ReadResult::Drained) => return,
                        Err(error) => {
                            self.room.leave(key, Leave::Failed(error.to_string()));
                            return;
                        }
                    }
                }
            };
            conn.last_active = now;
            lines += 1;
            match input {
                Input::Line(text) => {
                    if session::execute(&mut self.room, key, command::parse(&text)) == After::Stop {
                        return;
                    }
                }
                Input::TooLong => {
                    let max = self.config.max_line;
                    self.room
                        .send(key, &format!("Line too long (max {max} bytes), discarded"));
                }
            }
        }
    }

    /// Resumes reading for connections whose next flood token is due.
    ///
    /// The due entries are taken out first: a connection that runs out of
    /// tokens (or of its turn) again goes back on the heap for a later pass,
    /// never for this one, so this loop always ends.
    fn wake_throttled(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(Reverse((at, key, joined))) = self.flood_wakeups.peek().copied() {
            if at > now {
                break;
            }
            self.flood_wakeups.pop();
            due.push((key, joined));
        }
        for (key, joined) in due {
            if let Some(conn) = self.room.get_mut(key)
                && conn.joined == joined
            {
                conn.throttled = false;
                self.service_input(key, now);
            }
        }
    }

    /// Does the work of every tick that has come since the last call.
    fn run_ticks(&mut self, now: Instant) {
        let current = self.tick_of(now);
        if current <= self.tick {
            return;
        }
        self.tick = current;
        self.fanouts_last_tick = std::mem::take(&mut self.fanouts_this_tick);
        self.check_idle(now);
        self.room.flush_presence();
        self.room.release_unused_buffers();
    }

    /// Ends an accept pause once its time is up, and accepts what waited.
    fn resume_accepting(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|until| now >= until) {
            self.accept_paused_until = None;
            for index in 0..self.listeners.len() {
                self.accept_all(index, now);
            }
        }
    }

    /// Evicts the users whose idle deadline came, and puts back the ones
    /// who were active since they were scheduled.
    fn check_idle(&mut self, now: Instant) {
        let Some(timeout) = self.config.idle_timeout else {
            return;
        };
        let mut due = Vec::new();
        self.idle_wheel.advance(self.tick, &mut due);
        for (key, joined) in due {
            let Some(conn) = self.room.get(key) else {
                continue;
            };
            if conn.joined != joined || !conn.is_present() {
                continue;
            }
            let deadline = conn.last_active + timeout;
            if now >= deadline {
                self.room.send(
                    key,
                    &format!("Disconnected: idle for {} s", timeout.as_secs()),
                );
                self.room.leave(key, Leave::Idle);
            } else {
                let tick = self.tick_at_or_after(deadline);
                self.idle_wheel.insert(tick, (key, joined));
            }
        }
    }

    /// Writes one user's outbox; a socket error means the user is gone.
    fn flush(&mut self, key: usize) {
        let Some(conn) = self.room.get_mut(key) else {
            return;
        };
        if conn.outbox.is_empty() {
            return;
        }
        match conn.write_out(Instant::now()) {
            Ok(Flushed::All) => self.room.drained(key),
            Ok(Flushed::Partly) => {}
            Err(error) => self.room.leave(key, Leave::Failed(error.to_string())),
        }
    }

    /// Closes the connections of users who left, after a last best-effort
    /// write of what was queued for them.
    fn reap(&mut self, keys: &mut Vec<usize>) {
        self.room.take_reap_list(keys);
        for key in keys.drain(..) {
            let Some(mut conn) = self.room.remove(key) else {
                continue;
            };
            if conn.leaving.as_ref().is_some_and(Leave::flush_on_close) {
                let _best_effort = conn.outbox.flush_to(&mut conn.socket);
            } else if conn.leaving == Some(Leave::TooSlow) {
                // Reset rather than close: a normal close leaves the MBs the
                // kernel still holds for a non-reader in an orphaned socket
                // for minutes, and a thousand of those push the whole
                // machine's TCP memory into pressure, stalling everyone.
                let socket = socket2::SockRef::from(&conn.socket);
                if let Err(error) = socket.set_linger(Some(Duration::ZERO)) {
                    warn!("{}: could not reset slow connection: {error}", conn.peer);
                }
            }
            if let Err(error) = self.poll.registry().deregister(&mut conn.socket) {
                warn!("{}: deregister failed: {error}", conn.peer);
            }
        }
    }

    /// Tells everyone the server is going, gives their sockets a moment to
    /// take the line, and closes every connection.
    fn shut_down(&mut self) {
        let keys = self.room.keys();
        info!("shutting down; {} connections", keys.len());
        for &key in &keys {
            self.room.send(key, "Server is shutting down");
        }
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        let mut events = Events::with_capacity(1024);
        loop {
            let mut pending = false;
            for &key in &keys {
                if let Some(conn) = self.room.get_mut(key)
                    && conn.is_present()
                    && !conn.outbox.is_empty()
                {
                    match conn.outbox.flush_to(&mut conn.socket) {
                        Ok(Flushed::All) => {}
                        Ok(Flushed::Partly) => pending = true,
                        Err(_) => conn.outbox.discard(),
                    }
                }
            }
            let now = Instant::now();
            if !pending || now >= deadline {
                break;
            }
            let _ = self.poll.poll(&mut events, Some(deadline - now));
        }
        for key in keys {
            self.room.leave(key, Leave::Shutdown);
            if let Some(mut conn) = self.room.remove(key) {
                let _ = self.poll.registry().deregister(&mut conn.socket);
            }
        }
    }

    /// True if SIGINT or SIGTERM arrived.
    fn signal_received(&mut self) -> bool {
        let Some(signals) = self.signals.as_mut() else {
            return false;
        };
        let mut stop = false;
        for signal in signals.pending() {
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
        let nanos = at.saturating_duration_since(self.started).as_nanos();
        nanos.div_ceil(TICK.as_nanos()) as Tick
    }
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
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// SIGINT and SIGTERM wake the loop through `signal-hook-mio`; a second one
/// while the first is being handled exits the process at once with status 1.
fn install_signals(poll: &Poll) -> io::Result<Signals> {
    let seen = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&seen))?;
        signal_hook::flag::register(signal, Arc::clone(&seen))?;
    }
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    poll.registry()
        .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)?;
    Ok(signals)
}
