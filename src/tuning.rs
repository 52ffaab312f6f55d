//! Every tuning constant of the server, in one place.
//!
//! The defaults of the command-line flags live in [`crate::config`] (they
//! are PROTOCOL.md's contract); what is here are the numbers an operator
//! never sets but an engineer may want to revisit: sizes, periods and the
//! thresholds of the backpressure policy. Each says why it has its value.

use std::time::Duration;

/// The timer tick: presence batches flush, idle users are checked, history
/// is written to the database and unused buffers are freed this often.
pub const TICK: Duration = Duration::from_millis(100);

/// Timer wheel width in ticks: a minute and a half of 100 ms ticks, so the
/// default 60 s idle timeout is checked once per deadline.
pub const WHEEL_SLOTS: usize = 1024;

/// How long accepting pauses after the process ran out of descriptors.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Listen backlog, large enough for a connect storm (mio's own bind uses 128).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Descriptors kept back from `--max-clients` for listeners, the poll
/// instance, the signal pipe, stdio, the database and logging.
pub const FD_RESERVE: u64 = 32;

/// The bytes read from a socket in one call; lines beyond what flood control
/// lets through wait in the connection's framer.
pub const READ_CHUNK: usize = 16 * 1024;

/// The kernel send buffer asked for each connection (Linux doubles it).
/// Left to autotuning, a client that never reads makes the kernel hold
/// megabytes for it before its outbox even starts to fill; a thousand such
/// clients push the host's TCP memory into pressure and stall everyone
/// else. Fixed, a connection's kernel cost is known, and 128 KiB is still
/// far more than a chat line burst.
pub const SEND_BUFFER: usize = 128 * 1024;

/// Lines run for one connection before the loop moves on to the others;
/// the rest wait for the next loop iteration (never the same one).
pub const LINES_PER_TURN: usize = 64;

/// A reading user whose queue passes this fraction of `--max-outbound`
/// (one half) is *behind*: no input line is taken from anyone while a user
/// who is behind still reads at a healthy rate (see [`MIN_READER_RATE`]).
pub const HIGH_WATER_DIVISOR: usize = 2;

/// The slowest drain, in bytes per second, for which the room waits. A
/// user who is behind holds everyone's input only while the kernel keeps
/// taking its output at least this fast on average (a chat client on any
/// broadband link reads 256 KiB/s or more); slower, input goes on and the
/// user is cut off at `--max-outbound`, so nobody can hold the room at a
/// crawl.
pub const MIN_READER_RATE: u64 = 64 * 1024;

/// The most drain credit a user who is behind can bank, in bytes: a reader
/// that stops loses its hold on the room within `READER_CREDIT /
/// MIN_READER_RATE` (1 s), however long it read well before.
pub const READER_CREDIT: u64 = 64 * 1024;

/// A user who is behind and whose output the kernel did not take for this
/// long does not hold the room at all (a client that stopped reading).
pub const READER_STALL: Duration = Duration::from_millis(200);

/// While all queues together are past `--max-outbound-total`, a user with
/// output queued that the kernel has not taken for this long is cut off as
/// too slow: otherwise a crowd of non-readers, each below `--max-outbound`,
/// could stop everyone's input for good.
pub const TOTAL_STALL: Duration = Duration::from_secs(1);

/// While input is held back, the loop looks again this often even without
/// socket events (a reader's hold on the room expires with time).
pub const GATE_RECHECK: Duration = Duration::from_millis(5);

/// Once this many bytes of output buffers were freed since the last time,
/// freed memory is handed back to the system (`malloc_trim`), so a burst
/// that filled the queues does not leave the process large for good.
pub const TRIM_AFTER_FREED: usize = 16 << 20;

/// A reply of N lines (`who`, `/rooms`, `/history`, `/help`) costs N / this
/// many flood tokens, at least one (PROTOCOL.md, `--flood-rate`).
pub const REPLY_LINES_PER_TOKEN: usize = 100;

/// How long shutdown waits for `Server is shutting down` to reach clients
/// whose socket buffers are full.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// A log line that could not be written (closed pipe, full disk) silences
/// logging for this long, so a broken log costs nothing per line.
pub const LOG_RETRY: Duration = Duration::from_secs(1);

/// The flush window's adaptive trigger: a flush touching at least this many
/// outboxes counts as a large fan-out.
pub const LARGE_FANOUT: usize = 256;

/// Coalescing starts once the previous tick saw this many large fan-outs,
/// so an idle room never waits.
pub const BUSY_FANOUTS_PER_TICK: u32 = 2;

/// Holding a flush goes on while held flushes carry at least this many
/// lines per write on average; fewer, and holding only adds latency.
pub const MIN_LINES_PER_HELD_WRITE: f64 = 2.0;

/// While holding does not pay, one flush this often is held anyway, to
/// find out whether the load changed (one line in 200 at 200 lines/s, so
/// the p99 latency does not see it).
pub const FLUSH_PROBE_EVERY: Duration = Duration::from_secs(1);

/// A TLS client that has not finished its handshake this long after
/// connecting is disconnected (PROTOCOL.md: 10 s, within one tick).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS connections refused at connect (server full, limits, ban) wait for
/// their handshake to be told why; at most this many at once, beyond which
/// a refused TLS connection is simply closed, so refusals cannot pile up.
pub const MAX_TLS_REFUSALS: usize = 1024;

/// TLS handshake steps (reads that advance a handshake) run per loop
/// iteration; the rest wait for the next one. A step that answers a
/// ClientHello costs about 140 µs of the loop thread (key exchange and
/// signature), so 16 keep one iteration's handshake work near 2 ms and a
/// storm of 1,000 TLS connects from holding plain users' lines for 140 ms.
pub const HANDSHAKES_PER_TURN: usize = 16;

/// With `--cluster`, the chat lines one user may have on their way through
/// Redis at once. Its lines are read on without waiting for their echoes
/// (so a fast sender is not held to one line per round trip), up to this
/// many; past it, or for any other command, its input waits for them, so
/// a reply never overtakes the user's own line.
pub const CLUSTER_LINES_IN_FLIGHT: u32 = 32;
