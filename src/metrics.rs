//! What `GET /metrics` reports: the server's counters, and the text that
//! carries them.
//!
//! The loop bumps counters on its hottest paths (every line, every
//! delivery, every byte count), so a counter is a plain `u64` field and a
//! labelled family a small array indexed by an enum: a bump is one add, with
//! no hashing, no locking (there is one thread) and no allocation. Values
//! that are already known somewhere else (open connections, rooms, queued
//! bytes) are not mirrored here, where they could drift: the server passes
//! them in as [`Gauges`] when it renders. The process figures are read from
//! /proc at render time ([`ProcessStats::read_self`]), so nothing here costs
//! anything between scrapes.
//!
//! [`render`] writes the Prometheus text exposition format 0.0.4, which
//! PROTOCOL.md ("Metrics (v2)") requires to pass `promtool check metrics`:
//! a `# HELP` and a `# TYPE` line before each family, counters named
//! `..._total`, and every labelled series present from the start at 0 (a
//! series that appears only once its first event happens breaks `rate()`).
//!
//! Counters are never reset and wrap only after 2^64 events, which no chat
//! server reaches.

use std::io::{self, Write};

/// Why a connection was refused at accept, the `reason` label of
/// `chatd_connections_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// `--max-clients` reached (`Server is full, try again later`).
    Full,
    /// `--ip-max-connections` or `--ip-connect-rate` exceeded.
    IpLimit,
    /// The address is banned.
    Banned,
}

impl RefusalReason {
    /// How many reasons there are: the length of the counter array.
    pub const COUNT: usize = 3;
    /// Every reason, in the order the series are rendered.
    pub const ALL: [RefusalReason; RefusalReason::COUNT] = [
        RefusalReason::Full,
        RefusalReason::IpLimit,
        RefusalReason::Banned,
    ];

    /// The value of the `reason` label, as PROTOCOL.md spells it.
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::Full => "full",
            RefusalReason::IpLimit => "ip_limit",
            RefusalReason::Banned => "banned",
        }
    }

    /// This reason's slot in [`Counters::connections_refused`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a chat connection ended, the `reason` label of
/// `chatd_disconnects_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The client closed its side (EOF).
    Closed,
    /// `/quit`.
    Quit,
    /// No line for `--idle-timeout` seconds.
    Idle,
    /// More than `--max-outbound` bytes queued.
    TooSlow,
    /// `/kick` by an operator (or the third wrong `/oper` password).
    Kicked,
    /// A socket or TLS error.
    Error,
    /// The server shut down.
    Shutdown,
}

impl DisconnectReason {
    /// How many reasons there are: the length of the counter array.
    pub const COUNT: usize = 7;
    /// Every reason, in the order the series are rendered.
    pub const ALL: [DisconnectReason; DisconnectReason::COUNT] = [
        DisconnectReason::Closed,
        DisconnectReason::Quit,
        DisconnectReason::Idle,
        DisconnectReason::TooSlow,
        DisconnectReason::Kicked,
        DisconnectReason::Error,
        DisconnectReason::Shutdown,
    ];

    /// The value of the `reason` label, as PROTOCOL.md spells it.
    pub fn label(self) -> &'static str {
        match self {
            DisconnectReason::Closed => "closed",
            DisconnectReason::Quit => "quit",
            DisconnectReason::Idle => "idle",
            DisconnectReason::TooSlow => "too_slow",
            DisconnectReason::Kicked => "kicked",
            DisconnectReason::Error => "error",
            DisconnectReason::Shutdown => "shutdown",
        }
    }

    /// This reason's slot in [`Counters::disconnects`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Every counter PROTOCOL.md lists, owned by the server and bumped in place
/// (`counters.deliveries += n`). All start at 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// `chatd_connections_accepted_total`: chat connections `accept()`
    /// returned, refused ones included (metrics connections not).
    pub connections_accepted: u64,
    /// `chatd_connections_refused_total{reason}`: of those, the ones
    /// refused, indexed by [`RefusalReason::index`].
    pub connections_refused: [u64; RefusalReason::COUNT],
    /// `chatd_disconnects_total{reason}`: chat connections that ended,
    /// indexed by [`DisconnectReason::index`].
    pub disconnects: [u64; DisconnectReason::COUNT],
    /// `chatd_lines_received_total`: client lines processed (empty and
    /// too-long ones included).
    pub lines_received: u64,
    /// `chatd_deliveries_total`: lines queued to a recipient, one per
    /// recipient.
    pub deliveries: u64,
    /// `chatd_bytes_received_total`: bytes read from chat sockets
    /// (plaintext for TLS).
    pub bytes_received: u64,
    /// `chatd_bytes_sent_total`: bytes the kernel took for chat sockets
    /// (plaintext for TLS).
    pub bytes_sent: u64,
    /// `chatd_flood_delays_total`: times a client's input waited for a
    /// flood token.
    pub flood_delays: u64,
    /// `chatd_tls_handshake_failures_total`: TLS handshakes that failed.
    pub tls_handshake_failures: u64,
    /// `chatd_history_lines_total`: lines added to history.
    pub history_lines: u64,
}

impl Counters {
    /// All zero.
    pub fn new() -> Self {
        Counters::default()
    }

    /// Counts one refused connection (which must also have been counted in
    /// [`connections_accepted`](Self::connections_accepted)).
    pub fn refused(&mut self, reason: RefusalReason) {
        self.connections_refused[reason.index()] += 1;
    }

    /// Counts one ended chat connection.
    pub fn disconnected(&mut self, reason: DisconnectReason) {
        self.disconnects[reason.index()] += 1;
    }
}

/// Values the server already keeps elsewhere, sampled when it renders.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gauges {
    /// `chatd_connections`: chat connections open now, plain and TLS,
    /// handshakes included, metrics connections not.
    pub connections: u64,
    /// `chatd_rooms`: rooms that have users.
    pub rooms: u64,
    /// `chatd_outbound_queued_bytes`: bytes waiting in all outboxes.
    pub outbound_queued_bytes: u64,
    /// `chatd_loop_busy_max_seconds`: the longest one loop iteration spent
    /// working (from the poll's return to the next poll) since the start:
    /// how long the one thread ever kept everyone waiting.
    pub loop_busy_max_seconds: f64,
    /// `chatd_db_write_max_seconds`: the longest one tick's history write
    /// to `--db` took (0 without `--db`): the database's share of a stall.
    pub db_write_max_seconds: f64,
}

/// The process's own figures, the `process_*` series every Prometheus
/// client library exports under the same names.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// `process_resident_memory_bytes`: resident set size.
    pub resident_memory_bytes: u64,
    /// `process_virtual_memory_bytes`: virtual memory size.
    pub virtual_memory_bytes: u64,
    /// `process_cpu_seconds_total`: user plus system CPU time, in seconds
    /// (to the clock tick, usually 10 ms).
    pub cpu_seconds: f64,
    /// `process_open_fds`: open file descriptors.
    pub open_fds: u64,
    /// `process_start_time_seconds`: when the process started, in seconds
    /// since the Unix epoch (to the clock tick).
    pub start_time_seconds: f64,
}

/// Where the kernel describes this process.
const PROC_SELF_STAT: &str = "/proc/self/stat";
/// System-wide figures; its `btime` line is the boot time.
const PROC_STAT: &str = "/proc/stat";
/// One entry per open descriptor.
const PROC_SELF_FD: &str = "/proc/self/fd";

impl ProcessStats {
    /// Reads this process's figures from /proc.
    ///
    /// Costs two small file reads and a `stat` (tens of microseconds);
    /// before Linux 6.2 also a listing of /proc/self/fd, one entry per open
    /// descriptor (16 ms with 19,000 users). Fails with an error, never a
    /// panic, when /proc is missing or says something unexpected; the server
    /// then renders without the process series.
    pub fn read_self() -> io::Result<ProcessStats> {
        let stat = std::fs::read_to_string(PROC_SELF_STAT)?;
        let boot_time = parse_boot_time(&std::fs::read_to_string(PROC_STAT)?)?;
        let system = System {
            clock_ticks_per_second: sysconf(libc::_SC_CLK_TCK)?,
            page_size: sysconf(libc::_SC_PAGESIZE)?,
            boot_time,
        };
        let mut stats = parse_self_stat(&stat, &system)?;
        stats.open_fds = count_open_fds()?;
        Ok(stats)
    }
}

/// The machine facts needed to turn /proc/self/stat into units.
#[derive(Debug, Clone, Copy)]
struct System {
    /// `sysconf(_SC_CLK_TCK)`: the unit of the time fields.
    clock_ticks_per_second: u64,
    /// `sysconf(_SC_PAGESIZE)`: the unit of the `rss` field.
    page_size: u64,
    /// `btime` from /proc/stat: boot time in Unix seconds.
    boot_time: u64,
}

/// A positive `sysconf` value.
fn sysconf(name: libc::c_int) -> io::Result<u64> {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| invalid("sysconf gave no positive value"))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The `btime N` line of /proc/stat.
fn parse_boot_time(proc_stat: &str) -> io::Result<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| invalid("no btime line in /proc/stat"))
}

/// The figures in /proc/self/stat (see proc(5)); `open_fds` is left at 0.
///
/// The second field is the command name in parentheses, which may itself
/// contain spaces and parentheses, so the fields are counted from the last
/// `)`: after it come field 3 (`state`), and so on.
fn parse_self_stat(stat: &str, system: &System) -> io::Result<ProcessStats> {
    /// proc(5) numbers fields from 1; the first after the name is 3.
    const FIRST_AFTER_NAME: usize = 3;
    const UTIME: usize = 14;
    const STIME: usize = 15;
    const STARTTIME: usize = 22;
    const VSIZE: usize = 23;
    const RSS: usize = 24;

    let after_name = stat
        .rfind(')')
        .map(|at| &stat[at + 1..])
        .ok_or_else(|| invalid("no command name in /proc/self/stat"))?;
    let fields: Vec<&str> = after_name.split_ascii_whitespace().collect();
    let field = |number: usize| -> io::Result<u64> {
        fields
            .get(number - FIRST_AFTER_NAME)
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| invalid("short or odd /proc/self/stat"))
    };
    let ticks = system.clock_ticks_per_second as f64;
    Ok(ProcessStats {
        resident_memory_bytes: field(RSS)?.saturating_mul(system.page_size),
        virtual_memory_bytes: field(VSIZE)?,
        cpu_seconds: field(UTIME)?.saturating_add(field(STIME)?) as f64 / ticks,
        open_fds: 0,
        start_time_seconds: system.boot_time as f64 + field(STARTTIME)? as f64 / ticks,
    })
}

/// Open descriptors, as /proc/self/fd counts them.
///
/// Since Linux 6.2 the directory's size is the count: one `stat`, 3 µs,
/// where listing 19,000 entries took 16 ms of the loop's only thread.
/// Older kernels report size 0 (and a process counting its descriptors has
/// at least one), so 0 means: list them.
fn count_open_fds() -> io::Result<u64> {
    let size = std::fs::metadata(PROC_SELF_FD)?.len();
    if size > 0 {
        return Ok(size);
    }
    count_open_fds_by_listing()
}

/// Entries in /proc/self/fd, the descriptor reading them included.
fn count_open_fds_by_listing() -> io::Result<u64> {
    let mut count = 0;
    for entry in std::fs::read_dir(PROC_SELF_FD)? {
        entry?;
        count += 1;
    }
    Ok(count)
}

/// What the `# TYPE` line says.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// Writes every series in the Prometheus text format 0.0.4, appending to
/// `out` (which the server may keep and clear between scrapes).
///
/// `process` is `None` when /proc could not be read; the process series are
/// then left out rather than reported as 0.
pub fn render(
    counters: &Counters,
    gauges: &Gauges,
    process: Option<&ProcessStats>,
    out: &mut Vec<u8>,
) {
    let mut w = Writer(out);

    w.family(
        "chatd_connections",
        Kind::Gauge,
        "Chat connections open now, plain and TLS, handshakes included.",
    );
    w.integer("chatd_connections", None, gauges.connections);
    w.family("chatd_rooms", Kind::Gauge, "Rooms that have users.");
    w.integer("chatd_rooms", None, gauges.rooms);
    w.family(
        "chatd_outbound_queued_bytes",
        Kind::Gauge,
        "Bytes waiting in all outboxes.",
    );
    w.integer(
        "chatd_outbound_queued_bytes",
        None,
        gauges.outbound_queued_bytes,
    );
    w.family(
        "chatd_loop_busy_max_seconds",
        Kind::Gauge,
        "The longest one event-loop iteration worked since the start.",
    );
    w.float("chatd_loop_busy_max_seconds", gauges.loop_busy_max_seconds);
    w.family(
        "chatd_db_write_max_seconds",
        Kind::Gauge,
        "The longest one tick's history write to the database took.",
    );
    w.float("chatd_db_write_max_seconds", gauges.db_write_max_seconds);

    w.family(
        "chatd_connections_accepted_total",
        Kind::Counter,
        "Chat connections accept() returned, refused ones included.",
    );
    w.integer(
        "chatd_connections_accepted_total",
        None,
        counters.connections_accepted,
    );
    w.family(
        "chatd_connections_refused_total",
        Kind::Counter,
        "Accepted chat connections that were refused, by reason.",
    );
    for reason in RefusalReason::ALL {
        w.integer(
            "chatd_connections_refused_total",
            Some(reason.label()),
            counters.connections_refused[reason.index()],
        );
    }
    w.family(
        "chatd_disconnects_total",
        Kind::Counter,
        "Chat connections that ended, by reason.",
    );
    for reason in DisconnectReason::ALL {
        w.integer(
            "chatd_disconnects_total",
            Some(reason.label()),
            counters.disconnects[reason.index()],
        );
    }

    let plain: [(&str, &str, u64); 7] = [
        (
            "chatd_lines_received_total",
            "Client lines processed.",
            counters.lines_received,
        ),
        (
            "chatd_deliveries_total",
            "Lines queued to a recipient, one per recipient.",
            counters.deliveries,
        ),
        (
            "chatd_bytes_received_total",
            "Bytes read from chat sockets (plaintext for TLS).",
            counters.bytes_received,
        ),
        (
            "chatd_bytes_sent_total",
            "Bytes written to chat sockets (plaintext for TLS).",
            counters.bytes_sent,
        ),
        (
            "chatd_flood_delays_total",
            "Times a client's input waited for a flood token.",
            counters.flood_delays,
        ),
        (
            "chatd_tls_handshake_failures_total",
            "Failed TLS handshakes.",
            counters.tls_handshake_failures,
        ),
        (
            "chatd_history_lines_total",
            "Lines added to history.",
            counters.history_lines,
        ),
    ];
    for (name, help, value) in plain {
        w.family(name, Kind::Counter, help);
        w.integer(name, None, value);
    }

    if let Some(process) = process {
        w.family(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
        );
        w.float("process_cpu_seconds_total", process.cpu_seconds);
        w.family(
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
        );
        w.integer("process_open_fds", None, process.open_fds);
        w.family(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
        );
        w.integer(
            "process_resident_memory_bytes",
            None,
            process.resident_memory_bytes,
        );
        w.family(
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
        );
        w.integer(
            "process_virtual_memory_bytes",
            None,
            process.virtual_memory_bytes,
        );
        w.family(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
        );
        w.float("process_start_time_seconds", process.start_time_seconds);
    }
}

/// Appends exposition lines to a byte buffer.
///
/// Writing to a `Vec` cannot fail, so the `io::Result`s of `write!` are
/// dropped here, once, instead of being unwrapped.
struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    /// The `# HELP` and `# TYPE` lines that open a family. Help texts are
    /// constants here, free of the `\` and newline the format would escape.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = write!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} {}\n",
            kind.as_str()
        );
    }

    /// One sample with an integer value and an optional `reason` label
    /// (label values are constants here, free of characters to escape).
    fn integer(&mut self, name: &str, reason: Option<&str>, value: u64) {
        let _ = match reason {
            Some(reason) => writeln!(self.0, "{name}{{reason=\"{reason}\"}} {value}"),
            None => writeln!(self.0, "{name} {value}"),
        };
    }

    /// One unlabelled sample with a float value. Rust's shortest
    /// round-trip form (`12.34`, `0`, `1712345678.5`) is a valid Go float;
    /// the non-finite values are spelled as the format wants, though /proc
    /// figures never produce them.
    fn float(&mut self, name: &str, value: f64) {
        let _ = if value.is_nan() {
            writeln!(self.0, "{name} NaN")
        } else if value.is_infinite() {
            let sign = if value > 0.0 { '+' } else { '-' };
            writeln!(self.0, "{name} {sign}Inf")
        } else {
            writeln!(self.0, "{name} {value}")
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample_counters() -> Counters {
        let mut counters = Counters::new();
        counters.connections_accepted = 12;
        counters.refused(RefusalReason::Full);
        counters.refused(RefusalReason::Banned);
        counters.refused(RefusalReason::Banned);
        counters.disconnected(DisconnectReason::Quit);
        counters.disconnected(DisconnectReason::TooSlow);
        counters.disconnects[DisconnectReason::Shutdown.index()] += 3;
        counters.lines_received = 100;
        counters.deliveries = 2_000;
        counters.bytes_received = 4_567;
        counters.bytes_sent = 89_012;
        counters.flood_delays = 5;
        counters.tls_handshake_failures = 1;
        counters.history_lines = 99;
        counters
    }

    const SAMPLE_GAUGES: Gauges = Gauges {
        connections: 7,
        rooms: 2,
        outbound_queued_bytes: 1_024,
        loop_busy_max_seconds: 0.25,
        db_write_max_seconds: 0.0,
    };

    const SAMPLE_PROCESS: ProcessStats = ProcessStats {
        resident_memory_bytes: 2_412_544,
        virtual_memory_bytes: 10_000_000,
        cpu_seconds: 1.25,
        open_fds: 9,
        start_time_seconds: 1_712_345_678.5,
    };

    fn rendered(process: Option<&ProcessStats>) -> String {
        let mut out = Vec::new();
        render(&sample_counters(), &SAMPLE_GAUGES, process, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn known_counters_render_exactly() {
        let expected = "\
# HELP chatd_connections Chat connections open now, plain and TLS, handshakes included.
# TYPE chatd_connections gauge
chatd_connections 7
# HELP chatd_rooms Rooms that have users.
# TYPE chatd_rooms gauge
chatd_rooms 2
# HELP chatd_outbound_queued_bytes Bytes waiting in all outboxes.
# TYPE chatd_outbound_queued_bytes gauge
chatd_outbound_queued_bytes 1024
# HELP chatd_loop_busy_max_seconds The longest one event-loop iteration worked since the start.
# TYPE chatd_loop_busy_max_seconds gauge
chatd_loop_busy_max_seconds 0.25
# HELP chatd_db_write_max_seconds The longest one tick's history write to the database took.
# TYPE chatd_db_write_max_seconds gauge
chatd_db_write_max_seconds 0
# HELP chatd_connections_accepted_total Chat connections accept() returned, refused ones included.
# TYPE chatd_connections_accepted_total counter
chatd_connections_accepted_total 12
# HELP chatd_connections_refused_total Accepted chat connections that were refused, by reason.
# TYPE chatd_connections_refused_total counter
chatd_connections_refused_total{reason=\"full\"} 1
chatd_connections_refused_total{reason=\"ip_limit\"} 0
chatd_connections_refused_total{reason=\"banned\"} 2
# HELP chatd_disconnects_total Chat connections that ended, by reason.
# TYPE chatd_disconnects_total counter
chatd_disconnects_total{reason=\"closed\"} 0
chatd_disconnects_total{reason=\"quit\"} 1
chatd_disconnects_total{reason=\"idle\"} 0
chatd_disconnects_total{reason=\"too_slow\"} 1
chatd_disconnects_total{reason=\"kicked\"} 0
chatd_disconnects_total{reason=\"error\"} 0
chatd_disconnects_total{reason=\"shutdown\"} 3
# HELP chatd_lines_received_total Client lines processed.
# TYPE chatd_lines_received_total counter
chatd_lines_received_total 100
# HELP chatd_deliveries_total Lines queued to a recipient, one per recipient.
# TYPE chatd_deliveries_total counter
chatd_deliveries_total 2000
# HELP chatd_bytes_received_total Bytes read from chat sockets (plaintext for TLS).
# TYPE chatd_bytes_received_total counter
chatd_bytes_received_total 4567
# HELP chatd_bytes_sent_total Bytes written to chat sockets (plaintext for TLS).
# TYPE chatd_bytes_sent_total counter
chatd_bytes_sent_total 89012
# HELP chatd_flood_delays_total Times a client's input waited for a flood token.
# TYPE chatd_flood_delays_total counter
chatd_flood_delays_total 5
# HELP chatd_tls_handshake_failures_total Failed TLS handshakes.
# TYPE chatd_tls_handshake_failures_total counter
chatd_tls_handshake_failures_total 1
# HELP chatd_history_lines_total Lines added to history.
# TYPE chatd_history_lines_total counter
chatd_history_lines_total 99
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 1.25
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 9
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 2412544
# HELP process_virtual_memory_bytes Virtual memory size in bytes.
# TYPE process_virtual_memory_bytes gauge
process_virtual_memory_bytes 10000000
# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1712345678.5
";
        let actual = rendered(Some(&SAMPLE_PROCESS));
        for (number, (got, want)) in actual.lines().zip(expected.lines()).enumerate() {
            assert_eq!(got, want, "line {}", number + 1);
        }
        assert_eq!(actual, expected);
    }

    #[test]
    fn every_labelled_series_is_there_at_zero_from_the_start() {
        let mut out = Vec::new();
        render(&Counters::new(), &Gauges::default(), None, &mut out);
        let text = String::from_utf8(out).unwrap_or_default();
        for reason in RefusalReason::ALL {
            let line = format!(
                "chatd_connections_refused_total{{reason=\"{}\"}} 0",
                reason.label()
            );
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        for reason in DisconnectReason::ALL {
            let line = format!("chatd_disconnects_total{{reason=\"{}\"}} 0", reason.label());
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        assert!(
            !text.contains("process_"),
            "no /proc figures, no process series"
        );
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn reasons_index_their_own_slots() {
        for (slot, reason) in RefusalReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), slot);
        }
        for (slot, reason) in DisconnectReason::ALL.into_iter().enumerate() {
            assert_eq!(reason.index(), slot);
        }
    }

    #[test]
    fn non_finite_floats_use_the_exposition_spelling() {
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        w.float("a", f64::NAN);
        w.float("b", f64::INFINITY);
        w.float("c", f64::NEG_INFINITY);
        w.float("d", 0.0);
        assert_eq!(out, b"a NaN\nb +Inf\nc -Inf\nd 0\n");
    }

    const SYSTEM: System = System {
        clock_ticks_per_second: 100,
        page_size: 4096,
        boot_time: 1_700_000_000,
    };

    #[test]
    fn self_stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with spaces and a `)` must not shift the fields.
        let stat = "4242 (chat d) (x) S 1 4242 4242 0 -1 4194560 300 0 0 0 \
                    150 75 0 0 20 0 1 0 12345 10485760 600 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let stats = parse_self_stat(stat, &SYSTEM);
        let stats = stats.unwrap_or_else(|e| panic!("parse failed: {e}"));
        assert_eq!(stats.cpu_seconds, 2.25);
        assert!((stats.start_time_seconds - 1_700_000_123.45).abs() < 1e-6);
        assert_eq!(stats.virtual_memory_bytes, 10_485_760);
        assert_eq!(stats.resident_memory_bytes, 600 * 4096);
    }

    #[test]
    fn odd_proc_text_is_an_error_not_a_panic() {
        for stat in ["", "4242 (chatd", "4242 (chatd) S 1 2", "1 (x) S x y z"] {
            assert!(parse_self_stat(stat, &SYSTEM).is_err(), "{stat:?}");
        }
        assert!(parse_boot_time("cpu 1 2 3\nintr 5\n").is_err());
        assert!(parse_boot_time("btime soon\n").is_err());
        assert_eq!(
            parse_boot_time("cpu 1 2\nbtime 1700000000\nprocesses 5\n").ok(),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_reads_sensibly() {
        let stats = match ProcessStats::read_self() {
            Ok(stats) => stats,
            Err(e) => panic!("reading /proc failed: {e}"),
        };
        assert!(stats.resident_memory_bytes > 0);
        assert!(stats.virtual_memory_bytes >= stats.resident_memory_bytes);
        assert!(stats.open_fds >= 3, "stdio at least: {}", stats.open_fds);
        // Both ways of counting work here (other tests open sockets
        // meanwhile, so the figures need not agree).
        let listed = count_open_fds_by_listing().unwrap_or_default();
        assert!(listed >= 3, "stdio at least: {listed}");
        assert!(stats.cpu_seconds >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        // Started in the past, not long ago (boot time is to the second).
        assert!(
            stats.start_time_seconds <= now + 1.0,
            "{}",
            stats.start_time_seconds
        );
        assert!(
            stats.start_time_seconds > now - 3_600.0,
            "{}",
            stats.start_time_seconds
        );
    }

    /// PROTOCOL.md: the output is "valid for `promtool check metrics`".
    /// Runs Debian's promtool (package `prometheus`) on the real rendering;
    /// without it the test says so loudly, and fails only under CI.
    #[test]
    fn promtool_accepts_the_output() {
        let process = ProcessStats::read_self().ok();
        let mut busy = Vec::new();
        render(
            &sample_counters(),
            &SAMPLE_GAUGES,
            process.as_ref(),
            &mut busy,
        );
        let mut fresh = Vec::new();
        render(&Counters::new(), &Gauges::default(), None, &mut fresh);
        for text in [busy, fresh] {
            let child = Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match child {
                Ok(child) => child,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Straight to the stderr handle: the test harness
                    // captures eprintln! of a passing test, and this must
                    // be seen.
                    let _ = writeln!(
                        io::stderr(),
                        "\n!!!!!!!! DID NOT RUN: promtool missing !!!!!!!!\n\
                         !!!!!!!! (apt-get install prometheus) metrics text unchecked !!!!!!!!\n"
                    );
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "promtool missing and CI is set"
                    );
                    return;
                }
                Err(e) => panic!("cannot run promtool: {e}"),
            };
            // A promtool that stops reading early says why in its output,
            // which the assertion below shows; the broken pipe would not.
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(&text);
            }
            let output = match child.wait_with_output() {
                Ok(output) => output,
                Err(e) => panic!("waiting for promtool: {e}"),
            };
            assert!(
                output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
                "promtool check metrics: {}\nstdout: {}\nstderr: {}\ninput:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&text),
            );
        }
    }
}
