//! Every knob of the server and its default, in one place.
//!
//! The defaults are PROTOCOL.md's command-line contract; the flag parser in
//! `main.rs` and the tests both start from [`Config::default`], so a default
//! changed here changes everywhere at once.

use crate::flood::FloodLimit;
use crate::iplimit::{Exempt, IpLimitConfig};
use std::net::SocketAddr;
use std::time::Duration;

/// The address users join when no `--listen` is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
/// Idle users are disconnected after this long (PROTOCOL.md: 60 s).
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
/// Output queued for all users together past which input waits (256 MiB).
pub const DEFAULT_MAX_OUTBOUND_TOTAL: usize = 256 << 20;
/// Rooms that may exist at once, the lobby included.
pub const DEFAULT_MAX_ROOMS: usize = 1000;
/// Lines of history replayed on entering a room.
pub const DEFAULT_HISTORY: usize = 20;
/// Lines of history each room keeps in memory (PROTOCOL.md: "the last 1000
/// lines of each room").
pub const HISTORY_PER_ROOM: usize = crate::history::LINES_PER_ROOM;
/// Bytes of history all rooms keep in memory together (PROTOCOL.md: "at
/// most 64 MiB in all").
pub const HISTORY_MAX_BYTES: usize = crate::history::MAX_BYTES;
/// `--max-outbound` must leave room for one longest line plus this much
/// (PROTOCOL.md: "a value below `--max-line` + 256 is refused").
pub const OUTBOUND_LINE_MARGIN: usize = 256;
/// The longest a flush may wait under load so several lines share one
/// `write` (see [`Config::flush_window`]).
pub const DEFAULT_FLUSH_WINDOW: Duration = Duration::from_millis(2);

/// The default `--cluster-name` (PROTOCOL.md: "default `chatd`").
pub const DEFAULT_CLUSTER_NAME: &str = "chatd";

/// Everything the server needs to know before it starts.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// Addresses to accept TLS connections on.
    pub tls_listen: Vec<SocketAddr>,
    /// The PEM certificate chain for TLS.
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key for TLS.
    pub tls_key: Option<std::path::PathBuf>,
    /// Disconnect users idle this long; `None` never does.
    pub idle_timeout: Option<Duration>,
    /// Longest accepted line in bytes, terminator excluded.
    pub max_line: usize,
    /// Connections beyond this are refused with `Server is full`; `None`
    /// derives it from the open-file limit at start.
    pub max_clients: Option<usize>,
    /// Queued output, per client, past which it is cut off as too slow.
    pub max_outbound: usize,
    /// Queued output, all clients together, past which input waits.
    pub max_outbound_total: usize,
    /// Rooms that may exist at once, the lobby included.
    pub max_rooms: usize,
    /// Lines of history replayed on entering a room; 0 = none.
    pub history: usize,
    /// The SQLite file for history and bans; `None` keeps history in memory.
    pub db: Option<std::path::PathBuf>,
    /// Where to serve Prometheus metrics over HTTP, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// `--ip-max-connections` and `--ip-connect-rate`.
    pub ip_limits: IpLimitConfig,
    /// `--ip-exempt`: addresses per-address limits and bans never apply to.
    pub exempt: Exempt,
    /// `--oper-password-file`: enables operators.
    pub oper_password_file: Option<std::path::PathBuf>,
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
    /// `--cluster URL`: the Redis that links this server with others into
    /// one chat; `None` runs alone.
    pub cluster: Option<crate::cluster::ClusterUrl>,
    /// `--cluster-name NAME`: the prefix of every Redis key and channel, so
    /// several clusters can share one Redis.
    pub cluster_name: String,
    /// `--reuse-port`: listeners set SO_REUSEPORT, so several processes
    /// can listen on one address (the kernel spreads connections).
    pub reuse_port: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![DEFAULT_LISTEN.parse().expect("default address is valid")],
            tls_listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_line: DEFAULT_MAX_LINE,
            max_clients: None,
            max_outbound: DEFAULT_MAX_OUTBOUND,
            max_outbound_total: DEFAULT_MAX_OUTBOUND_TOTAL,
            max_rooms: DEFAULT_MAX_ROOMS,
            history: DEFAULT_HISTORY,
            db: None,
            metrics: None,
            ip_limits: IpLimitConfig::default(),
            exempt: Exempt::default(),
            oper_password_file: None,
            flood: DEFAULT_FLOOD,
            handle_signals: false,
            raise_fd_limit: true,
            flush_window: DEFAULT_FLUSH_WINDOW,
            cluster: None,
            cluster_name: DEFAULT_CLUSTER_NAME.to_string(),
            reuse_port: false,
        }
    }
}

impl Config {
    /// Checks the combinations of flags that would hurt every user, and
    /// says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let min_outbound = self.max_line.saturating_add(OUTBOUND_LINE_MARGIN);
        if self.max_outbound < min_outbound {
            return Err(format!(
                "--max-outbound {} must be at least --max-line {} + {OUTBOUND_LINE_MARGIN} = {min_outbound}, \
                 or one long line would cut off every reader",
                self.max_outbound, self.max_line
            ));
        }
        let files = self.tls_cert.is_some() || self.tls_key.is_some();
        if !self.tls_listen.is_empty() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err("--tls-listen needs both --tls-cert FILE and --tls-key FILE".to_string());
        }
        if self.tls_listen.is_empty() && files {
            return Err("--tls-cert and --tls-key need --tls-listen ADDR".to_string());
        }
        if self.max_outbound_total < self.max_outbound {
            return Err(format!(
                "--max-outbound-total {} must be at least --max-outbound {}",
                self.max_outbound_total, self.max_outbound
            ));
        }
        if self.cluster.is_some() && self.db.is_some() {
            return Err(
                "--db and --cluster cannot be used together: a cluster keeps its history in Redis"
                    .to_string(),
            );
        }
        if crate::names::validate(&self.cluster_name).is_err() {
            return Err(format!(
                "invalid --cluster-name {:?} (1-32 letters, digits, _ - .)",
                self.cluster_name
            ));
        }
        Ok(())
    }

    /// A config for tests and tools: one listener on 127.0.0.1 port 0.
    pub fn ephemeral() -> Self {
        Config {
            listen: vec!["127.0.0.1:0".parse().expect("loopback address is valid")],
            ..Config::default()
        }
    }
}
