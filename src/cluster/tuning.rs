//! Every number the link runs by, in one place, each with its reason.
//!
//! None of them is a flag: they are what makes "Redis is down" a definite
//! state reached in bounded time and bounded memory, and "Redis is back"
//! noticed within PROTOCOL.md's 5 s.

use std::time::Duration;

/// The most bytes one connection may hold queued for Redis (written by
/// nobody yet, kernel buffers not counted). A push past it means Redis has
/// stopped reading or cannot keep up, and the link is declared down rather
/// than grown: Redis itself cuts a subscriber that falls 8 MiB behind for a
/// minute (`client-output-buffer-limit pubsub`), so this is the same
/// tolerance in the other direction.
pub const OUTPUT_LIMIT: usize = 8 << 20;

/// The largest incomplete reply held while its end is awaited. Chat
/// replies are small (a few history lines, a list of names); a reply
/// larger than this is not one the chat asked for, and holding it would
/// make the server's memory depend on Redis's contents.
pub const INPUT_LIMIT: usize = 16 << 20;

/// The bytes asked of the kernel in one `read`.
pub const READ_CHUNK: usize = 64 * 1024;

/// The most bytes read from one connection per call into the link; the rest
/// wait for [`Link::continue_reading`](super::Link::continue_reading), so a
/// flood of published messages cannot hold the loop away from the chat's
/// own sockets, and the events one call produces are bounded.
pub const READ_BUDGET: usize = 4 * READ_CHUNK;

/// An input buffer holding nothing keeps at most this much capacity; a
/// larger one (left by a large reply) is handed back.
pub const INPUT_KEEP: usize = 2 * READ_CHUNK;

/// The wait before the first reconnection attempt after a failure; each
/// further failure doubles it up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(100);

/// The longest wait between attempts: PROTOCOL.md's "retries about every
/// second". With a refused connect costing a few system calls, a Redis
/// that is down costs the loop nothing measurable.
pub const RETRY_MAX: Duration = Duration::from_secs(1);

/// How long an attempt may take from `connect` to both connections ready
/// (the command connection's `PING` answered, every subscription
/// confirmed). A stopped Redis still completes TCP handshakes from its
/// listen backlog, so "connected" alone proves nothing; an unroutable host
/// would otherwise hold an attempt for the kernel's two minutes of SYNs.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// While up, a connection with nothing outstanding is sent a `PING` this
/// often, so that a Redis that stopped answering (SIGSTOP, a host gone
/// without a reset) is noticed even when the chat is quiet.
pub const KEEPALIVE: Duration = Duration::from_secs(1);

/// The longest a request (the caller's or a keepalive) may wait for its
/// reply before the link is declared down. Redis answers in microseconds;
/// seconds mean it is stopped or swamped.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
