//! The link: two connections to one Redis, kept up for as long as it can
//! be, and a plain account of what happened on them.
//!
//! RESP2 forbids a subscribed connection from running other commands, so
//! the link holds a *command* connection (`PUBLISH`, `SET`, `XADD`, …,
//! each reply matched to its request) and a *subscriber* connection
//! (`SUBSCRIBE`, `PSUBSCRIBE`, and the messages Redis pushes). They live
//! and die together: the link is up when both are, and the first failure
//! of either closes both, so the caller never sees half a link.
//!
//! ```text
//!            on_timer: retry due                 handshake answered
//!   Down ---------------------------> Connecting --------------------> Up
//!    ^   <---------------------------            <--------------------
//!    |     refused, closed, timeout,             any failure, output
//!    |     handshake error                       past its bound, reply
//!    |                                           or ping unanswered
//!    +-- next attempt after 100 ms, doubling to 1 s (reset when up)
//! ```
//!
//! "Up" means proven, not merely connected: the command connection has
//! answered a `PING` and every subscription has been confirmed, because a
//! stopped Redis still completes TCP handshakes from its listen backlog.
//! While up, a connection with nothing outstanding is pinged every
//! [`KEEPALIVE`], and a request unanswered for [`REPLY_TIMEOUT`] takes the
//! link down, so a Redis that stops answering is noticed even when the
//! chat is quiet; a chat that is busy notices sooner, when
//! [`OUTPUT_LIMIT`](super::tuning::OUTPUT_LIMIT) bytes wait for it.
//!
//! The link never blocks and never spins. Connection attempts happen only
//! in [`Link::on_timer`], when the backoff says so, so a Redis that is down
//! costs one refused `connect` per second; there is no loop that retries
//! by itself. The caller owns time: the link says when it next needs the
//! clock ([`Link::deadline`]) and is told when that time has come.
//!
//! What happened is reported as [`LinkEvent`]s, queued in the link and
//! taken by the caller with [`Link::next_event`] after any call into it.
//! `Down` is reported once per outage (the first failed attempt at start
//! counts as one), not once per failed attempt.

use super::backoff::Backoff;
use super::conn::{Reading, RedisConn};
use super::down::LinkDown;
use super::pubsub::{Push, Subscriptions, Topic, classify};
use super::replies::Replies;
use super::tuning::{HANDSHAKE_TIMEOUT, KEEPALIVE, REPLY_TIMEOUT};
use super::url::ClusterUrl;
use log::debug;
use mio::event::Event;
use mio::{Registry, Token};
use redis_protocol::resp2::types::OwnedFrame;
use std::collections::VecDeque;
use std::io;
use std::mem;
use std::time::Instant;

/// Something the caller should know about the link.
#[derive(Debug)]
pub enum LinkEvent<T> {
    /// Both connections are ready and every subscription is confirmed:
    /// commands may be sent. After an outage this is the moment to
    /// resynchronise, as messages published meanwhile were missed.
    Up,
    /// The link was lost (or the first attempt failed). Commands are
    /// refused until the next `Up`; reconnection is under way.
    Down {
        /// What failed, for the log.
        reason: LinkDown,
        /// The tags of the commands sent and never answered, oldest first:
        /// each may or may not have been carried out by Redis.
        unanswered: Vec<T>,
    },
    /// Redis's answer to the command sent with `tag`. An error reply
    /// (`-ERR …`) is a reply too: `frame` is then [`OwnedFrame::Error`].
    Reply {
        /// The tag given to [`Link::command`].
        tag: T,
        /// The reply.
        frame: OwnedFrame,
    },
    /// A message published to a channel the link is subscribed to
    /// (directly or through a pattern). One may arrive shortly before `Up`
    /// (between the first subscription's confirmation and the last) or
    /// shortly after an unsubscribe; it is a real message either way.
    Message {
        /// The channel it was published to.
        channel: Vec<u8>,
        /// What was published.
        payload: Vec<u8>,
    },
}

/// A command the link did not send because it is not up; the tag is
/// handed back.
#[derive(Debug, PartialEq, Eq)]
pub struct NotSent<T> {
    /// The tag given to [`Link::command`].
    pub tag: T,
}

/// One of the link's two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Commands and their replies.
    Command,
    /// Subscriptions and published messages.
    Subscriber,
}

/// A connection attempt in progress, or an established link.
#[derive(Debug)]
struct Session<T> {
    /// The command connection.
    command: RedisConn,
    /// The subscriber connection.
    subscriber: RedisConn,
    /// Requests on the command connection awaiting replies; `None` is the
    /// link's own `PING` (handshake and keepalive).
    replies: Replies<Option<T>>,
    /// Acknowledgements awaited on the subscriber connection: one per
    /// channel or pattern (un)subscribed, one per `PING`.
    acks: Replies<()>,
    /// Everything the handshake asked has been answered.
    up: bool,
    /// When the attempt started; it fails at this + [`HANDSHAKE_TIMEOUT`].
    started: Instant,
    /// When idle connections are next pinged (while up).
    next_ping: Instant,
    /// The command connection stopped at its read budget.
    command_unread: bool,
    /// The subscriber connection stopped at its read budget.
    subscriber_unread: bool,
}

/// Where the link is.
#[derive(Debug)]
enum State<T> {
    /// No connection; the next attempt is due at `retry_at`.
    Down {
        /// When [`Link::on_timer`] makes the next attempt.
        retry_at: Instant,
    },
    /// Connections exist: connecting, handshaking, or up.
    Connected(Box<Session<T>>),
    /// [`Link::close`] was called: no connection, no more attempts.
    Closed,
}

/// The link to Redis. `T` is the caller's tag for a command, handed back
/// with its reply.
#[derive(Debug)]
pub struct Link<T> {
    /// Where Redis is.
    url: ClusterUrl,
    /// The server's poll registry (a clone of it), for the sockets.
    registry: Registry,
    /// The command connection's token, given by the caller.
    command_token: Token,
    /// The subscriber connection's token, given by the caller.
    subscriber_token: Token,
    /// Down, connecting or up.
    state: State<T>,
    /// What the caller wants to hear, restored on every new connection.
    subscriptions: Subscriptions,
    /// The wait before the next attempt.
    backoff: Backoff,
    /// Connection attempts made (a host with several addresses is tried
    /// at each in turn).
    attempts: u64,
    /// A `Down` has been reported for the current outage.
    down_reported: bool,
    /// Events not yet taken by the caller.
    events: VecDeque<LinkEvent<T>>,
    /// Frames of one read pass (kept to reuse its allocation).
    frames: Vec<OwnedFrame>,
}

impl<T> Link<T> {
    /// A link to `url` whose sockets will be registered with `registry`
    /// under the two tokens given. It starts down, with its first attempt
    /// due at once: call [`on_timer`](Self::on_timer) to make it.
    pub fn new(
        url: ClusterUrl,
        registry: &Registry,
        command_token: Token,
        subscriber_token: Token,
        now: Instant,
    ) -> io::Result<Link<T>> {
        Ok(Link {
            url,
            registry: registry.try_clone()?,
            command_token,
            subscriber_token,
            state: State::Down { retry_at: now },
            subscriptions: Subscriptions::new(),
            backoff: Backoff::new(),
            attempts: 0,
            down_reported: false,
            events: VecDeque::new(),
            frames: Vec::new(),
        })
    }

    /// Where the link goes.
    pub fn url(&self) -> &ClusterUrl {
        &self.url
    }

    /// True between `Up` and `Down`: commands are being sent.
    pub fn is_up(&self) -> bool {
        matches!(&self.state, State::Connected(session) if session.up)
    }

    /// Whether `token` is one of the link's two.
    pub fn owns(&self, token: Token) -> bool {
        token == self.command_token || token == self.subscriber_token
    }

    /// The next event to handle, oldest first. Take them all after every
    /// call into the link.
    pub fn next_event(&mut self) -> Option<LinkEvent<T>> {
        self.events.pop_front()
    }

    /// Sends `args` (`[b"PUBLISH", channel, payload]`) on the command
    /// connection; its reply comes back as [`LinkEvent::Reply`] with `tag`.
    /// Refused unless the link is up — and when the command would take the
    /// output past its bound, the link goes down (a `Down` event follows)
    /// and the command is refused too; so does a single command larger
    /// than the bound, which could never be sent. Queued only: it leaves at
    /// the next [`flush`](Self::flush).
    pub fn command(&mut self, tag: T, args: &[&[u8]], now: Instant) -> Result<(), NotSent<T>> {
        let State::Connected(session) = &mut self.state else {
            return Err(NotSent { tag });
        };
        if !session.up {
            return Err(NotSent { tag });
        }
        match session.command.send(args) {
            Ok(()) => {
                session.replies.sent(Some(tag), now);
                Ok(())
            }
            Err(reason) => {
                self.go_down(reason, now);
                Err(NotSent { tag })
            }
        }
    }

    /// Subscribes to `channel`, now if connected and on every connection
    /// from now on.
    pub fn subscribe(&mut self, channel: &[u8], now: Instant) {
        self.change_subscription(Topic::Channel, channel, true, now);
    }

    /// Stops hearing `channel`.
    pub fn unsubscribe(&mut self, channel: &[u8], now: Instant) {
        self.change_subscription(Topic::Channel, channel, false, now);
    }

    /// Subscribes to the channels matching the glob `pattern`.
    pub fn psubscribe(&mut self, pattern: &[u8], now: Instant) {
        self.change_subscription(Topic::Pattern, pattern, true, now);
    }

    /// Stops hearing the channels matching `pattern`.
    pub fn punsubscribe(&mut self, pattern: &[u8], now: Instant) {
        self.change_subscription(Topic::Pattern, pattern, false, now);
    }

    fn change_subscription(&mut self, topic: Topic, name: &[u8], on: bool, now: Instant) {
        let changed = if on {
            self.subscriptions.add(topic, name)
        } else {
            self.subscriptions.remove(topic, name)
        };
        let State::Connected(session) = &mut self.state else {
            return;
        };
        if !changed {
            return;
        }
        let command = if on {
            topic.subscribe_command()
        } else {
            topic.unsubscribe_command()
        };
        match session.subscriber.send(&[command, name]) {
            Ok(()) => session.acks.sent((), now),
            Err(reason) => self.go_down(reason, now),
        }
    }

    /// Handles a poll event, if its token is one of the link's.
    pub fn on_event(&mut self, event: &Event, now: Instant) {
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        self.on_ready(event.token(), readable, writable, now);
    }

    /// [`on_event`](Self::on_event) from its parts: the socket under
    /// `token` may be readable and/or writable.
    pub fn on_ready(&mut self, token: Token, readable: bool, writable: bool, now: Instant) {
        let role = if token == self.command_token {
            Role::Command
        } else if token == self.subscriber_token {
            Role::Subscriber
        } else {
            return;
        };
        let State::Connected(session) = &mut self.state else {
            // A late event for a connection already closed.
            return;
        };
        let result = session.ready(role, readable, writable, &mut self.frames, &mut self.events);
        self.settle(result, now);
    }

    /// True when a connection stopped reading at its budget with more
    /// waiting: call [`continue_reading`](Self::continue_reading) in the
    /// next loop iteration without sleeping (no event will come for bytes
    /// already there).
    pub fn has_unread_input(&self) -> bool {
        matches!(&self.state, State::Connected(session)
            if session.command_unread || session.subscriber_unread)
    }

    /// Reads on from connections that stopped at their budget.
    pub fn continue_reading(&mut self, now: Instant) {
        for role in [Role::Command, Role::Subscriber] {
            let State::Connected(session) = &mut self.state else {
                return;
            };
            if session.unread(role) {
                let result = session.ready(role, true, false, &mut self.frames, &mut self.events);
                self.settle(result, now);
            }
        }
    }

    /// Writes what is queued on both connections, as far as the kernel
    /// takes it (the rest goes on writable events). Call once per loop
    /// iteration, after the commands of that iteration.
    pub fn flush(&mut self, now: Instant) {
        let State::Connected(session) = &mut self.state else {
            return;
        };
        let result = session
            .command
            .flush()
            .and_then(|()| session.subscriber.flush());
        self.settle(result, now);
    }

    /// When the link next needs [`on_timer`](Self::on_timer): the next
    /// attempt while down, the end of the handshake's time while
    /// connecting, the next keepalive or reply deadline while up. `None`
    /// once closed. Calling `on_timer` earlier is harmless, and after it
    /// the deadline is always in the future.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Down { retry_at } => Some(*retry_at),
            State::Connected(session) if !session.up => Some(session.started + HANDSHAKE_TIMEOUT),
            State::Connected(session) => [
                Some(session.next_ping),
                session.replies.oldest().map(|sent| sent + REPLY_TIMEOUT),
                session.acks.oldest().map(|sent| sent + REPLY_TIMEOUT),
            ]
            .into_iter()
            .flatten()
            .min(),
            State::Closed => None,
        }
    }

    /// Does what is due at `now`: a connection attempt, giving up on a slow
    /// handshake or an unanswered request, a keepalive `PING`.
    pub fn on_timer(&mut self, now: Instant) {
        match &mut self.state {
            State::Down { retry_at } if now >= *retry_at => self.attempt(now),
            State::Down { .. } | State::Closed => {}
            State::Connected(session) => {
                let result = session.on_timer(now);
                self.settle(result, now);
            }
        }
    }

    /// Bytes queued for Redis on both connections and not yet written.
    pub fn queued_bytes(&self) -> usize {
        match &self.state {
            State::Connected(session) => session.command.queued() + session.subscriber.queued(),
            _ => 0,
        }
    }

    /// Heap bytes held by the connections' buffers.
    pub fn heap_bytes(&self) -> usize {
        match &self.state {
            State::Connected(session) => {
                session.command.heap_bytes() + session.subscriber.heap_bytes()
            }
            _ => 0,
        }
    }

    /// Closes both connections for good (server shutdown): no event, no
    /// more attempts. [`flush`](Self::flush) first to send what is queued,
    /// as far as the kernel takes it.
    pub fn close(&mut self) {
        if let State::Connected(mut session) = mem::replace(&mut self.state, State::Closed) {
            session.deregister(&self.registry);
        }
    }

    /// One connection attempt: both sockets, and the handshake queued.
    fn attempt(&mut self, now: Instant) {
        self.attempts += 1;
        debug!(
            "cluster link: connecting to {} (attempt {})",
            self.url, self.attempts
        );
        let opened = Session::open(
            &self.url,
            self.attempts,
            &self.registry,
            [self.command_token, self.subscriber_token],
            &self.subscriptions,
            now,
        );
        match opened {
            Ok(session) => self.state = State::Connected(Box::new(session)),
            Err(reason) => self.go_down(reason, now),
        }
    }

    /// After a step of the session: down on failure, `Up` once the
    /// handshake is all answered.
    fn settle(&mut self, result: Result<(), LinkDown>, now: Instant) {
        if let Err(reason) = result {
            self.go_down(reason, now);
            return;
        }
        let State::Connected(session) = &mut self.state else {
            return;
        };
        if !session.up && session.replies.is_empty() && session.acks.is_empty() {
            session.up = true;
            session.next_ping = now + KEEPALIVE;
            self.backoff.reset();
            self.down_reported = false;
            debug!("cluster link: up ({})", self.url);
            self.events.push_back(LinkEvent::Up);
        }
    }

    /// Closes both connections, schedules the next attempt, and reports
    /// `Down` if this outage has not been reported yet.
    fn go_down(&mut self, reason: LinkDown, now: Instant) {
        if matches!(self.state, State::Closed) {
            return;
        }
        let wait = self.backoff.after_failure();
        let old = mem::replace(
            &mut self.state,
            State::Down {
                retry_at: now + wait,
            },
        );
        let unanswered = match old {
            State::Connected(mut session) => {
                session.deregister(&self.registry);
                session.replies.unanswered().flatten().collect()
            }
            State::Down { .. } | State::Closed => Vec::new(),
        };
        debug!("cluster link: down ({reason}); next attempt in {wait:?}");
        if !self.down_reported {
            self.down_reported = true;
            self.events
                .push_back(LinkEvent::Down { reason, unanswered });
        }
    }
}

impl<T> Session<T> {
    /// Connects both sockets to the URL's address for this attempt and
    /// queues the handshake: `PING` on the command connection; every
    /// subscription, then `PING`, on the subscriber connection.
    fn open(
        url: &ClusterUrl,
        attempt: u64,
        registry: &Registry,
        [command_token, subscriber_token]: [Token; 2],
        subscriptions: &Subscriptions,
        now: Instant,
    ) -> Result<Session<T>, LinkDown> {
        let target = url.resolve(attempt)?;
        let mut command = RedisConn::connect(&target, registry, command_token)?;
        let subscriber = match RedisConn::connect(&target, registry, subscriber_token) {
            Ok(subscriber) => subscriber,
            Err(reason) => {
                command.deregister(registry);
                return Err(reason);
            }
        };
        let mut session = Session {
            command,
            subscriber,
            replies: Replies::new(),
            acks: Replies::new(),
            up: false,
            started: now,
            next_ping: now,
            command_unread: false,
            subscriber_unread: false,
        };
        if let Err(reason) = session.handshake(subscriptions, now) {
            session.deregister(registry);
            return Err(reason);
        }
        Ok(session)
    }

    fn handshake(&mut self, subscriptions: &Subscriptions, now: Instant) -> Result<(), LinkDown> {
        self.command.send(&[b"PING"])?;
        self.replies.sent(None, now);
        for (args, acks) in subscriptions.commands() {
            self.subscriber.send(&args)?;
            for _ in 0..acks {
                self.acks.sent((), now);
            }
        }
        self.subscriber.send(&[b"PING"])?;
        self.acks.sent((), now);
        Ok(())
    }

    fn conn(&mut self, role: Role) -> &mut RedisConn {
        match role {
            Role::Command => &mut self.command,
            Role::Subscriber => &mut self.subscriber,
        }
    }

    fn unread(&self, role: Role) -> bool {
        match role {
            Role::Command => self.command_unread,
            Role::Subscriber => self.subscriber_unread,
        }
    }

    /// Writes and/or reads one connection and turns what it received into
    /// events.
    fn ready(
        &mut self,
        role: Role,
        readable: bool,
        writable: bool,
        frames: &mut Vec<OwnedFrame>,
        events: &mut VecDeque<LinkEvent<T>>,
    ) -> Result<(), LinkDown> {
        if writable {
            self.conn(role).on_writable()?;
        }
        if !readable {
            return Ok(());
        }
        frames.clear();
        let reading = self.conn(role).on_readable(frames)?;
        match role {
            Role::Command => self.command_unread = reading == Reading::Stopped,
            Role::Subscriber => self.subscriber_unread = reading == Reading::Stopped,
        }
        for frame in frames.drain(..) {
            match role {
                Role::Command => self.reply(frame, events)?,
                Role::Subscriber => self.push(frame, events)?,
            }
        }
        if reading == Reading::Closed {
            return Err(LinkDown::Closed);
        }
        Ok(())
    }

    /// A reply on the command connection: the caller's, or the link's own
    /// `PING`'s (which must not be an error: `-LOADING` after a restart,
    /// `-NOAUTH`, and the like mean Redis cannot serve yet).
    fn reply(
        &mut self,
        frame: OwnedFrame,
        events: &mut VecDeque<LinkEvent<T>>,
    ) -> Result<(), LinkDown> {
        match self.replies.answered() {
            Some(Some(tag)) => events.push_back(LinkEvent::Reply { tag, frame }),
            Some(None) => {
                if let OwnedFrame::Error(error) = frame {
                    return Err(LinkDown::Protocol(error));
                }
            }
            None => {
                return Err(LinkDown::Protocol(format!(
                    "a reply to no request: {frame:?}"
                )));
            }
        }
        Ok(())
    }

    /// A frame on the subscriber connection.
    fn push(
        &mut self,
        frame: OwnedFrame,
        events: &mut VecDeque<LinkEvent<T>>,
    ) -> Result<(), LinkDown> {
        match classify(frame).map_err(LinkDown::Protocol)? {
            Push::Message { channel, payload } => {
                events.push_back(LinkEvent::Message { channel, payload });
            }
            Push::Ack => {
                if self.acks.answered().is_none() {
                    return Err(LinkDown::Protocol("an acknowledgement of nothing".into()));
                }
            }
        }
        Ok(())
    }

    /// Timeouts and keepalives.
    fn on_timer(&mut self, now: Instant) -> Result<(), LinkDown> {
        if !self.up {
            if now >= self.started + HANDSHAKE_TIMEOUT {
                return Err(LinkDown::Timeout);
            }
            return Ok(());
        }
        for oldest in [self.replies.oldest(), self.acks.oldest()]
            .into_iter()
            .flatten()
        {
            if now >= oldest + REPLY_TIMEOUT {
                return Err(LinkDown::Timeout);
            }
        }
        if now >= self.next_ping {
            if self.replies.is_empty() {
                self.command.send(&[b"PING"])?;
                self.replies.sent(None, now);
                self.command.flush()?;
            }
            if self.acks.is_empty() {
                self.subscriber.send(&[b"PING"])?;
                self.acks.sent((), now);
                self.subscriber.flush()?;
            }
            self.next_ping = now + KEEPALIVE;
        }
        Ok(())
    }

    fn deregister(&mut self, registry: &Registry) {
        self.command.deregister(registry);
        self.subscriber.deregister(registry);
    }
}

#[cfg(test)]
mod tests {
    //! The link against a scripted fake Redis on a Unix socket: what a real
    //! Redis does not do on demand (refuse the handshake, answer what was
    //! never asked).

    use super::*;
    use mio::{Events, Poll};
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::PathBuf;
    use std::time::Duration;

    /// A listener in a fresh directory, and the link's URL for it.
    fn fake_redis(name: &str) -> (UnixListener, ClusterUrl, PathBuf) {
        let dir = std::env::temp_dir().join(format!("chatd-link-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("redis.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = ClusterUrl::parse(&format!("unix://{}", path.display())).unwrap();
        (listener, url, dir)
    }

    /// One loop turn of at most `wait`; returns the events.
    fn turn(poll: &mut Poll, link: &mut Link<u32>, wait: Duration) -> Vec<LinkEvent<u32>> {
        let mut events = Events::with_capacity(8);
        let now = Instant::now();
        link.flush(now);
        let timeout = link
            .deadline()
            .map_or(wait, |at| at.saturating_duration_since(now));
        poll.poll(&mut events, Some(timeout.min(wait))).unwrap();
        let now = Instant::now();
        for event in events.iter() {
            link.on_event(event, now);
        }
        link.continue_reading(now);
        link.on_timer(now);
        link.flush(now);
        std::iter::from_fn(|| link.next_event()).collect()
    }

    /// Accepts the link's two connections (command first: a Unix connect
    /// completes in `connect`, in order), turning the loop meanwhile.
    fn accept_pair(
        listener: &UnixListener,
        poll: &mut Poll,
        link: &mut Link<u32>,
    ) -> (UnixStream, UnixStream) {
        let mut accepted = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while accepted.len() < 2 {
            assert!(Instant::now() < deadline, "the link did not connect");
            match listener.accept() {
                Ok((stream, _)) => accepted.push(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    turn(poll, link, Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        }
        let subscriber = accepted.pop().unwrap();
        let command = accepted.pop().unwrap();
        for stream in [&command, &subscriber] {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
        }
        (command, subscriber)
    }

    /// Reads exactly `expected` from `stream` (what the link must send).
    fn expect(stream: &mut UnixStream, poll: &mut Poll, link: &mut Link<u32>, expected: &[u8]) {
        turn(poll, link, Duration::ZERO);
        let mut got = vec![0; expected.len()];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }

    const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

    #[test]
    fn an_error_to_the_handshake_is_one_down_and_a_retry() {
        let (listener, url, dir) = fake_redis("loading");
        let mut poll = Poll::new().unwrap();
        let mut link: Link<u32> =
            Link::new(url, poll.registry(), Token(1), Token(2), Instant::now()).unwrap();
        link.subscribe(b"room", Instant::now());
        let (mut command, mut subscriber) = accept_pair(&listener, &mut poll, &mut link);
        expect(&mut command, &mut poll, &mut link, PING);
        expect(
            &mut subscriber,
            &mut poll,
            &mut link,
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nroom\r\n*1\r\n$4\r\nPING\r\n",
        );
        command
            .write_all(b"-LOADING Redis is loading the dataset in memory\r\n")
            .unwrap();
        let mut seen = Vec::new();
        while seen.is_empty() {
            seen = turn(&mut poll, &mut link, Duration::from_secs(1));
        }
        match &seen[..] {
            [
                LinkEvent::Down {
                    reason: LinkDown::Protocol(text),
                    unanswered,
                },
            ] => {
                assert!(text.starts_with("LOADING"), "{text}");
                assert!(unanswered.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            link.command(9, &[b"PING"], Instant::now()),
            Err(NotSent { tag: 9 })
        );

        // The retry comes on its own, and a second failure is not reported.
        let (second, _) = accept_pair(&listener, &mut poll, &mut link);
        drop(second);
        for _ in 0..5 {
            let events = turn(&mut poll, &mut link, Duration::from_millis(20));
            assert!(events.is_empty(), "{events:?}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn up_needs_every_answer_and_a_reply_to_nothing_takes_it_down() {
        let (listener, url, dir) = fake_redis("stray");
        let mut poll = Poll::new().unwrap();
        let mut link: Link<u32> =
            Link::new(url, poll.registry(), Token(1), Token(2), Instant::now()).unwrap();
        link.subscribe(b"room", Instant::now());
        let (mut command, mut subscriber) = accept_pair(&listener, &mut poll, &mut link);
        command.write_all(b"+PONG\r\n").unwrap();
        subscriber
            .write_all(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nroom\r\n:1\r\n")
            .unwrap();
        for _ in 0..5 {
            let events = turn(&mut poll, &mut link, Duration::from_millis(20));
            assert!(
                events.is_empty(),
                "up before the PING was answered: {events:?}"
            );
        }
        subscriber
            .write_all(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
            .unwrap();
        let events = turn(&mut poll, &mut link, Duration::from_secs(1));
        assert!(matches!(&events[..], [LinkEvent::Up]), "{events:?}");

        link.command(1, &[b"GET", b"k"], Instant::now()).unwrap();
        // The handshake's PING was answered without being read: it is first.
        expect(&mut command, &mut poll, &mut link, PING);
        expect(
            &mut command,
            &mut poll,
            &mut link,
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        );
        command.write_all(b"$1\r\nv\r\n:5\r\n").unwrap();
        let mut events = Vec::new();
        while events.len() < 2 {
            events.extend(turn(&mut poll, &mut link, Duration::from_secs(1)));
        }
        match &events[..] {
            [
                LinkEvent::Reply { tag: 1, frame },
                LinkEvent::Down {
                    reason: LinkDown::Protocol(_),
                    unanswered,
                },
            ] => {
                assert_eq!(frame, &OwnedFrame::BulkString(b"v".to_vec()));
                assert!(unanswered.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
