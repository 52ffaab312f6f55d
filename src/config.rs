//! Every knob of the server and its default, in one place.
//!
//! The defaults are PROTOCOL.md's command-line contract; the flag parser in
//! `main.rs` and the tests both start from [`Config::default`], so a default
//! changed here changes everywhere at once.

use crate::flood::FloodLimit;
use std::net::SocketAddr;
use std::time::Duration;

/// The address users join when no `--listen` is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
/// Idle users are disconnected after this long (the seed's 60 s).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest accepted line, terminator excluded.
pub const DEFAULT_MAX_LINE: usize = 4096;
/// Bytes a client may have queued in the server before it is cut off.
pub const DEFAULT_MAX_OUTBOUND: usize = 256 * 1024;
/// Lines per second per connection, and the bucket size.
pub const DEFAULT_FLOOD: FloodLimit = FloodLimit {
    rate: 20,
    burst: 40,
};
/// Descriptors kept back from `--max-clients` for listeners, the poll
/// instance, the signal pipe, stdio and logging.
pub const FD_RESERVE: u64 = 32;
/// The timer tick: presence batches flush and idle users are checked this often.
pub const TICK: Duration = Duration::from_millis(100);
/// How long accepting pauses after the process ran out of descriptors.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// The longest a flush may wait under load so several lines share one
/// `write` (see [`Config::flush_window`]).
pub const DEFAULT_FLUSH_WINDOW: Duration = Duration::from_millis(2);
/// A flush touching at least this many outboxes counts as a large fan-out:
/// only those are worth delaying, since their writes dominate the CPU.
pub const LARGE_FANOUT: usize = 256;
/// Coalescing starts once the previous tick saw this many large fan-outs,
/// so an idle room never waits.
pub const BUSY_FANOUTS_PER_TICK: u32 = 2;
/// Listen backlog, large enough for a connect storm (mio's own bind uses 128).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Everything the server needs to know before it starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// Disconnect users idle this long; `None` never does.
    pub idle_timeout: Option<Duration>,
    /// Longest accepted line in bytes, terminator excluded.
    pub max_line: usize,
    /// Connections beyond this are refused with `Server is full`; `None`
    /// derives it from the open-file limit at start.
    pub max_clients: Option<usize>,
    /// Queued output, per client, past which it is cut off as too slow.
    pub max_outbound: usize,
    /// Per-connection line rate limit.
    pub flood: FloodLimit,
    /// Install SIGINT/SIGTERM handlers (the binary does; in-process tests don't).
    pub handle_signals: bool,
    /// Raise the soft RLIMIT_NOFILE to the hard limit at start.
    pub raise_fd_limit: bool,
    /// Under load (large fan-outs several times a tick) outboxes are
    /// flushed at most this late, so each `write` carries several lines and
    /// the CPU per delivery falls; zero flushes every loop iteration.
    pub flush_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![DEFAULT_LISTEN.parse().expect("default address is valid")],
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_line: DEFAULT_MAX_LINE,
            max_clients: None,
            max_outbound: DEFAULT_MAX_OUTBOUND,
            flood: DEFAULT_FLOOD,
            handle_signals: false,
            raise_fd_limit: true,
            flush_window: DEFAULT_FLUSH_WINDOW,
        }
    }
}

impl Config {
    /// A config for tests and tools: one listener on 127.0.0.1 port 0.
    pub fn ephemeral() -> Self {
        Config {
            listen: vec!["127.0.0.1:0".parse().expect("loopback address is valid")],
            ..Config::default()
        }
    }
}
