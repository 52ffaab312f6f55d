//! `chatload`'s command line, parsed with `lexopt` like chatd's own flags.
//!
//! One flat [`Options`] struct serves every subcommand: the suite builds its
//! scenarios by cloning the defaults and changing a few fields, so a scenario
//! is exactly what a user could have typed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::metrics::MetricsUrl;

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One fan-out session (optionally a rate ladder) against `--addr`.
    Fanout,
    /// The standard scenarios against a chatd this tool starts itself.
    Suite,
    /// A seconds-long correctness run for CI; non-zero exit unless perfect.
    Smoke,
    /// Print usage.
    Help,
}

/// One column of the cluster set (`suite --cluster LIST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// One chatd without `--cluster` and without Redis (`alone`).
    Alone,
    /// N chatd processes linked through one Redis, sharing one port.
    Cluster(usize),
}

impl Setup {
    /// The column's name: `alone`, `cluster x2`.
    pub fn label(self) -> String {
        match self {
            Setup::Alone => "alone".to_string(),
            Setup::Cluster(n) => format!("cluster x{n}"),
        }
    }

    /// How many chatd processes the setup runs.
    pub fn processes(self) -> usize {
        match self {
            Setup::Alone => 1,
            Setup::Cluster(n) => n,
        }
    }
}

/// `alone,1,2`: a comma-separated list of `alone` and process counts.
pub fn parse_setups(text: &str) -> Result<Vec<Setup>, String> {
    let mut setups = Vec::new();
    for item in text.split(',').map(str::trim) {
        let setup = match item {
            "alone" | "0" => Setup::Alone,
            n => match n.parse::<usize>() {
                Ok(n @ 1..=16) => Setup::Cluster(n),
                _ => {
                    return Err(format!(
                        "bad --cluster entry {item:?}: `alone` or a process count 1-16"
                    ));
                }
            },
        };
        setups.push(setup);
    }
    Ok(setups)
}

/// Everything a session needs to know.
#[derive(Debug, Clone)]
pub struct Options {
    /// The subcommand.
    pub mode: Mode,
    /// Server to load (ignored when chatload starts chatd itself).
    pub addr: SocketAddr,
    /// Reading clients.
    pub clients: usize,
    /// Connects in flight at once, so the server's accept queue is not
    /// simply overrun (which would measure SYN retransmits, not the server).
    pub connect_concurrency: usize,
    /// Bound on the whole connect phase.
    pub connect_timeout: Duration,
    /// Bound on waiting until one broadcast has reached every client.
    pub register_timeout: Duration,
    /// Clients that send chat lines (the first `senders` clients).
    pub senders: usize,
    /// Total lines per second across all senders.
    pub rate: f64,
    /// Sending time of one step (zero: connect and register only).
    pub duration: Duration,
    /// Bytes of chat text per line (the marker is padded up to this).
    pub payload: usize,
    /// How long after the last send to wait for stragglers.
    pub grace: Duration,
    /// Raise the rate step by step until delivery or p99 fails.
    pub ladder: bool,
    /// Rate multiplier per ladder step.
    pub ladder_factor: f64,
    /// Most ladder steps.
    pub ladder_max_steps: usize,
    /// How many times a bad ladder step is repeated at the same rate before
    /// the previous rate is declared the saturation point (one bad step on a
    /// shared machine may be a neighbour's burst).
    pub ladder_retries: u32,
    /// A ladder step whose p99 latency is above this fails.
    pub p99_bound: Duration,
    /// Extra clients that connect and never read.
    pub slow: usize,
    /// The server's pid, to sample its CPU and RSS from /proc.
    pub server_pid: Option<i32>,
    /// The server's metrics endpoint, to read its CPU and RSS from
    /// `/metrics` instead of /proc (a server started elsewhere, maybe as
    /// another user).
    pub metrics: Option<MetricsUrl>,
    /// Scrape `/metrics` this often during each session (the endpoint of
    /// `--metrics`, or of the chatd this tool starts, which then gets
    /// `--metrics 127.0.0.1:0`).
    pub scrape_every: Option<Duration>,
    /// Extra flags for every chatd this tool starts (`--chatd-arg`,
    /// repeatable; `CHATLOAD_CHATD_ARGS` adds more).
    pub chatd_args: Vec<String>,
    /// Each client first sends the line `load<i>` (servers that ask for a
    /// name before anything else).
    pub name_first: bool,
    /// The server does not echo a chat line to its sender.
    pub no_self_echo: bool,
    /// Print one JSON object on stdout instead of tables.
    pub json: bool,
    /// Fail (exit 1) unless every expected line arrived, once, in order.
    pub check: bool,
    /// chatd binary to start (suite, smoke, or fanout with `--chatd`).
    pub chatd: Option<PathBuf>,
    /// Suite: a seconds-long version of every scenario.
    pub quick: bool,
    /// Suite: run only these scenario numbers (1-7; 6 comes with 1).
    pub only: Vec<u32>,
    /// Suite: how many times each scenario runs.
    pub runs: usize,
    /// No progress line on stderr.
    pub quiet: bool,
    /// Every client speaks TLS (to `--addr`, or to the TLS listener of the
    /// chatd this tool starts); `suite --tls` runs the TLS scenarios.
    pub tls: bool,
    /// Verify the server's certificate against this PEM file; without it
    /// any certificate is accepted (test-only).
    pub ca: Option<PathBuf>,
    /// The name sent as SNI, and checked against the certificate with `--ca`.
    pub server_name: String,
    /// TLS clients that connect all at once during the (first) step, from a
    /// second client loop in this process: a handshake storm beside the
    /// measured chat.
    pub storm: usize,
    /// When the storm starts, after the step's first line.
    pub storm_after: Duration,
    /// Where the storm connects (default: the TLS listener of the chatd
    /// this tool starts, or `--addr` with `--tls`).
    pub storm_addr: Option<SocketAddr>,
    /// `suite --cluster LIST` (or `--cluster-cost`): the cluster set, one
    /// column per setup, instead of the standard scenarios.
    pub cluster: Vec<Setup>,
    /// The redis-server binary for the cluster set (default: from `PATH`).
    pub redis_server: Option<PathBuf>,
    /// The cluster set's Redis listens on a loopback TCP port instead of a
    /// Unix socket.
    pub redis_tcp: bool,
    /// More processes whose CPU is sampled per step (`--watch-pid`).
    pub watch_pids: Vec<i32>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Fanout,
            addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            clients: 100,
            connect_concurrency: 256,
            connect_timeout: Duration::from_secs(30),
            register_timeout: Duration::from_secs(15),
            senders: 10,
            rate: 1000.0,
            duration: Duration::from_secs(5),
            payload: 64,
            grace: Duration::from_secs(2),
            ladder: false,
            ladder_factor: 1.5,
            ladder_max_steps: 12,
            ladder_retries: 1,
            p99_bound: Duration::from_millis(100),
            slow: 0,
            server_pid: None,
            metrics: None,
            scrape_every: None,
            chatd_args: Vec::new(),
            name_first: false,
            no_self_echo: false,
            json: false,
            check: false,
            chatd: None,
            quick: false,
            only: Vec::new(),
            runs: 1,
            quiet: false,
            tls: false,
            ca: None,
            server_name: crate::tls::TEST_NAME.to_string(),
            storm: 0,
            storm_after: Duration::from_millis(1500),
            storm_addr: None,
            cluster: Vec::new(),
            redis_server: None,
            redis_tcp: false,
            watch_pids: Vec::new(),
        }
    }
}

/// Printed for `--help` and after a usage error.
pub const USAGE: &str = "\
usage: chatload [fanout] [OPTIONS]     load one server (default 127.0.0.1:8000)
       chatload suite [--chatd PATH] [--quick] [--runs K] [--only N]... [--json]
                      [--chatd-arg ARG]... [--scrape-ms N] [--tls]
       chatload suite --cluster LIST [--runs K] [--only N]... [--quick] [--json]
                      [--redis-server PATH] [--redis-tcp] [--chatd-arg ARG]...
       chatload suite --cluster-cost [--runs K] [--clients N] [--senders S] [--rate R]
                      [--duration SECS]
       chatload smoke [--chatd PATH] [--tls]
                                       CI check: 50 clients, 5 senders, 200 lines/s, 2 s

fanout options:
  --addr ADDR                server address              [127.0.0.1:8000]
  --clients N                reading clients             [100]
  --connect-concurrency N    connects in flight          [256]
  --connect-timeout SECS     whole connect phase bound   [30]
  --register-timeout SECS    room registration bound     [15]
  --senders S                sending clients             [10]
  --rate R                   total lines/s               [1000]
  --duration SECS            sending time (per step)     [5]
  --payload BYTES            chat text per line          [64]
  --grace SECS               wait for late lines         [2]
  --ladder                   raise the rate until delivery or p99 fails
  --ladder-factor F          rate multiplier per step    [1.5]
  --ladder-steps N           at most N steps             [12]
  --ladder-retries N         retries of a bad step       [1]
  --p99-bound-ms MS          ladder p99 bound            [100]
  --slow N                   extra clients that never read
  --server-pid PID           sample server CPU and RSS from /proc
  --metrics URL              read server CPU and RSS (and chatd's longest loop
                             iteration) from http://HOST:PORT/metrics instead
  --scrape-ms N              also scrape /metrics every N ms during the run
  --watch-pid PID            also report PID's CPU per step (repeatable; e.g.
                             every chatd of a cluster, and redis-server)
  --chatd PATH               start this chatd on a free port and load it
  --chatd-arg ARG            one more flag for the chatd started (repeatable,
                             e.g. --chatd-arg=--db=/tmp/x.db; also
                             CHATLOAD_CHATD_ARGS, space-separated)
  --name-first               each client first sends the line load<i>
  --no-self-echo             the server does not echo a line to its sender
  --check                    exit 1 unless every expected line arrived, in order
  --json                     print one JSON object on stdout
  --quiet                    no progress line on stderr
TLS (rustls; with --chatd, chatload makes a self-signed certificate and
starts chatd with --tls-listen 127.0.0.1:0 --tls-cert ... --tls-key ...):
  --tls                      every client speaks TLS to --addr (or chatd's TLS port)
  --ca FILE                  verify the certificate against FILE (PEM); without
                             it ANY certificate is accepted (test-only)
  --server-name NAME         SNI, and the name checked with --ca [localhost]
  --tls-storm N              N TLS clients connect at once during the step, from a
                             second client loop (they /join a room of their own)
  --storm-after SECS         storm start, after the step's start [1.5]
  --storm-addr ADDR          TLS address for the storm (default: chatd's TLS port
                             with --chatd, --addr with --tls)
suite options:
  --quick                    seconds-long smoke of every scenario
  --runs K                   repeat each scenario, report median and min-max
  --only N                   run scenario N only (repeatable; 6 is measured by 1)
  --tls                      the TLS set instead, plain and TLS side by side:
                             1 connect 10k, 2 handshakes/s, 3 idle RSS,
                             4 ladder, 5 TLS storm beside plain chat
cluster set (side by side, one column per setup; runs alternate between setups):
  --cluster LIST             setups, comma-separated: `alone` (one chatd, no Redis)
                             or N (N chatd processes with --cluster to one fresh
                             redis-server, on a Unix socket in a temp dir, --save ''
                             --appendonly no); all with --reuse-port, listening on
                             one shared 127.0.0.1 port where the clients connect
                             (the kernel spreads them), e.g. --cluster 1,2.
                             Before measuring, a probe on each process's private
                             port checks that every process sees every other's
                             lines. Scenarios (--only N):
                             1 ladder: 1000 clients, 10 senders, rate x1.3 per 2 s
                               step while p99 <= 50 ms; deliveries/s, p50/p99
                             2 latency: --clients/--senders/--rate/--duration
                               [100/10/1000/5]: p50/p99/p99.9, CPU-s per million
                             3 fixed rate: 1000 clients, 10 senders, 1000 lines/s,
                               4 s: CPU-s per million deliveries, p50/p99
                             each with CPU % of every chatd, of redis-server and
                             of chatload, and the clients each chatd got
  --cluster-cost             the round trip's cost per line: --cluster alone,1
                             --only 2 (one chatd alone vs the same in a cluster
                             of one, whose lines go through Redis and back)
  --redis-server PATH        redis-server binary [redis-server from PATH]
  --redis-tcp                Redis on a free 127.0.0.1 port, not a Unix socket";

/// Parses `std::env::args`.
pub fn parse() -> Result<Options, String> {
    parse_from(std::env::args_os().skip(1))
}

fn parse_from<I>(args: I) -> Result<Options, String>
where
    I: IntoIterator,
    I::Item: Into<std::ffi::OsString>,
{
    use lexopt::prelude::*;
    let mut o = Options::default();
    let mut parser = lexopt::Parser::from_args(args);
    let mut seen_mode = false;
    let mut cluster_cost = false;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Value(v) if !seen_mode => {
                seen_mode = true;
                o.mode = match v.to_string_lossy().as_ref() {
                    "fanout" => Mode::Fanout,
                    "suite" => Mode::Suite,
                    "smoke" => Mode::Smoke,
                    "help" => Mode::Help,
                    other => return Err(format!("unknown subcommand {other:?}")),
                };
            }
            Short('h') | Long("help") => o.mode = Mode::Help,
            Long("addr") => o.addr = value(&mut parser)?,
            Long("clients") => o.clients = value(&mut parser)?,
            Long("connect-concurrency") => {
                o.connect_concurrency = value::<usize>(&mut parser)?.max(1)
            }
            Long("connect-timeout") => o.connect_timeout = secs(&mut parser)?,
            Long("register-timeout") => o.register_timeout = secs(&mut parser)?,
            Long("senders") => o.senders = value(&mut parser)?,
            Long("rate") => o.rate = value(&mut parser)?,
            Long("duration") => o.duration = secs(&mut parser)?,
            Long("payload") => o.payload = value(&mut parser)?,
            Long("grace") => o.grace = secs(&mut parser)?,
            Long("ladder") => o.ladder = true,
            Long("ladder-factor") => o.ladder_factor = value(&mut parser)?,
            Long("ladder-steps") => o.ladder_max_steps = value(&mut parser)?,
            Long("ladder-retries") => o.ladder_retries = value(&mut parser)?,
            Long("p99-bound-ms") => {
                o.p99_bound = Duration::from_secs_f64(value::<f64>(&mut parser)? / 1000.0)
            }
            Long("slow") => o.slow = value(&mut parser)?,
            Long("server-pid") => o.server_pid = Some(value(&mut parser)?),
            Long("metrics") => {
                let raw = parser.value().map_err(|e| e.to_string())?;
                o.metrics = Some(MetricsUrl::parse(&raw.to_string_lossy())?);
            }
            Long("scrape-ms") => {
                let ms: u64 = value(&mut parser)?;
                if ms == 0 {
                    return Err("--scrape-ms must be at least 1".into());
                }
                o.scrape_every = Some(Duration::from_millis(ms));
            }
            Long("chatd-arg") => o.chatd_args.push(
                parser
                    .value()
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .into_owned(),
            ),
            Long("chatd") => {
                o.chatd = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?))
            }
            Long("name-first") => o.name_first = true,
            Long("no-self-echo") => o.no_self_echo = true,
            Long("json") => o.json = true,
            Long("check") => o.check = true,
            Long("quick") => o.quick = true,
            Long("only") => o.only.push(value(&mut parser)?),
            Long("runs") => o.runs = value::<usize>(&mut parser)?.max(1),
            Long("quiet") => o.quiet = true,
            Long("tls") => o.tls = true,
            Long("ca") => o.ca = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?)),
            Long("server-name") => {
                o.server_name = parser
                    .value()
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .into_owned()
            }
            Long("tls-storm") => o.storm = value(&mut parser)?,
            Long("storm-after") => o.storm_after = secs(&mut parser)?,
            Long("storm-addr") => o.storm_addr = Some(value(&mut parser)?),
            Long("cluster") => {
                let raw = parser.value().map_err(|e| e.to_string())?;
                o.cluster = parse_setups(&raw.to_string_lossy())?;
            }
            Long("cluster-cost") => {
                o.cluster = vec![Setup::Alone, Setup::Cluster(1)];
                cluster_cost = true;
            }
            Long("redis-server") => {
                o.redis_server = Some(PathBuf::from(parser.value().map_err(|e| e.to_string())?))
            }
            Long("redis-tcp") => o.redis_tcp = true,
            Long("watch-pid") => o.watch_pids.push(value(&mut parser)?),
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    if cluster_cost && o.only.is_empty() {
        // The round trip's cost: the latency scenario only.
        o.only.push(2);
    }
    if !o.cluster.is_empty() && o.mode != Mode::Suite {
        return Err("--cluster and --cluster-cost are for `chatload suite`".into());
    }
    if !o.cluster.is_empty() && o.tls {
        return Err("--cluster and --tls are two different sets: pick one".into());
    }
    if !o.cluster.is_empty() && o.scrape_every.is_some() {
        return Err("--scrape-ms is not supported with --cluster".into());
    }
    if !(o.rate > 0.0 && o.rate.is_finite()) {
        return Err("--rate must be a positive number".into());
    }
    if o.ladder_factor <= 1.0 {
        return Err("--ladder-factor must be above 1".into());
    }
    if o.mode == Mode::Fanout && o.senders > o.clients {
        return Err("--senders cannot exceed --clients".into());
    }
    if o.ca.is_some() && !o.tls && o.storm == 0 && o.mode != Mode::Suite {
        return Err("--ca is for TLS clients: give --tls or --tls-storm N".into());
    }
    if o.mode == Mode::Fanout
        && o.storm > 0
        && o.chatd.is_none()
        && o.storm_addr.is_none()
        && !o.tls
    {
        return Err("--tls-storm needs a TLS address: --storm-addr ADDR, --tls, or --chatd".into());
    }
    if o.metrics.is_some() && (o.server_pid.is_some() || o.chatd.is_some()) {
        return Err("--metrics reads a server this tool did not start: \
                    give it instead of --server-pid, and not with --chatd"
            .into());
    }
    Ok(o)
}

impl Options {
    /// The flags for a chatd this tool starts: no flood control, no idle
    /// timeout, then `--chatd-arg`s, then `CHATLOAD_CHATD_ARGS`, and with
    /// `--scrape-ms` a metrics listener on a free port.
    pub fn chatd_flags(&self) -> Vec<String> {
        let mut flags: Vec<String> = crate::chatd::UNTHROTTLED
            .iter()
            .map(|f| f.to_string())
            .collect();
        flags.extend(self.chatd_args.iter().cloned());
        if let Ok(env) = std::env::var("CHATLOAD_CHATD_ARGS") {
            flags.extend(env.split_whitespace().map(String::from));
        }
        if self.scrape_every.is_some() {
            flags.extend(["--metrics".to_string(), "127.0.0.1:0".to_string()]);
        }
        flags
    }
}

fn value<T>(parser: &mut lexopt::Parser) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let raw = parser.value().map_err(|e| e.to_string())?;
    let text = raw.to_string_lossy();
    text.parse::<T>()
        .map_err(|e| format!("bad value {text:?}: {e}"))
}

fn secs(parser: &mut lexopt::Parser) -> Result<Duration, String> {
    let s: f64 = value(parser)?;
    if !(s >= 0.0 && s.is_finite()) {
        return Err(format!("bad duration {s}"));
    }
    Ok(Duration::from_secs_f64(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommand_and_flags() {
        let o = parse_from(["suite", "--quick", "--runs", "3"]).expect("parses");
        assert_eq!(o.mode, Mode::Suite);
        assert!(o.quick);
        assert_eq!(o.runs, 3);
        let o = parse_from([
            "--clients",
            "50",
            "--senders",
            "5",
            "--rate",
            "200",
            "--check",
        ])
        .expect("parses");
        assert_eq!(o.mode, Mode::Fanout);
        assert_eq!(
            (o.clients, o.senders, o.rate, o.check),
            (50, 5, 200.0, true)
        );
    }

    #[test]
    fn metrics_scrapes_and_chatd_flags() {
        let o = parse_from([
            "--metrics",
            "http://127.0.0.1:9100/metrics",
            "--scrape-ms",
            "100",
        ])
        .expect("parses");
        assert_eq!(o.metrics.map(|m| m.addr.port()), Some(9100));
        assert_eq!(o.scrape_every, Some(Duration::from_millis(100)));
        let o = parse_from([
            "suite",
            "--chatd-arg=--db=/tmp/x.db",
            "--chatd-arg",
            "--history=5",
        ])
        .expect("parses");
        assert_eq!(o.chatd_args, ["--db=/tmp/x.db", "--history=5"]);
        let flags = o.chatd_flags();
        assert!(flags.starts_with(&crate::chatd::UNTHROTTLED.map(String::from)));
        assert!(flags.contains(&"--db=/tmp/x.db".to_string()));
        assert!(!flags.contains(&"--metrics".to_string()));
        assert!(parse_from(["--metrics", "127.0.0.1:1", "--server-pid", "1"]).is_err());
        assert!(parse_from(["--metrics", "https://127.0.0.1:1/"]).is_err());
        assert!(parse_from(["--scrape-ms", "0"]).is_err());
    }

    #[test]
    fn tls_flags() {
        let o = parse_from([
            "--tls",
            "--ca",
            "/tmp/ca.pem",
            "--server-name",
            "chat.example",
        ])
        .expect("parses");
        assert!(o.tls);
        assert_eq!(o.ca, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(o.server_name, "chat.example");
        assert_eq!(Options::default().server_name, "localhost");
        let o = parse_from([
            "--tls-storm",
            "1000",
            "--storm-after",
            "0.5",
            "--storm-addr",
            "127.0.0.1:8443",
        ])
        .expect("parses");
        assert_eq!(o.storm, 1000);
        assert_eq!(o.storm_after, Duration::from_millis(500));
        assert!(parse_from(["--tls-storm", "10"]).is_err());
        assert!(parse_from(["--tls-storm", "10", "--chatd", "/bin/true"]).is_ok());
        assert!(parse_from(["--ca", "/tmp/ca.pem"]).is_err());
        assert!(parse_from(["suite", "--tls"]).expect("parses").tls);
    }

    #[test]
    fn cluster_setups() {
        let o = parse_from(["suite", "--cluster", "1,2"]).expect("parses");
        assert_eq!(o.cluster, [Setup::Cluster(1), Setup::Cluster(2)]);
        assert!(o.only.is_empty());
        let o = parse_from(["suite", "--cluster", "alone, 1,3", "--redis-tcp"]).expect("parses");
        assert_eq!(
            o.cluster,
            [Setup::Alone, Setup::Cluster(1), Setup::Cluster(3)]
        );
        assert!(o.redis_tcp);
        assert_eq!(Setup::Cluster(2).label(), "cluster x2");
        assert_eq!(Setup::Alone.processes(), 1);
        let o = parse_from(["suite", "--cluster-cost"]).expect("parses");
        assert_eq!(o.cluster, [Setup::Alone, Setup::Cluster(1)]);
        assert_eq!(o.only, [2]);
        let o = parse_from(["suite", "--cluster-cost", "--only", "1"]).expect("parses");
        assert_eq!(o.only, [1]);
        assert!(parse_from(["suite", "--cluster", "1,x"]).is_err());
        assert!(parse_from(["suite", "--cluster", "17"]).is_err());
        assert!(parse_from(["--cluster", "2"]).is_err());
        assert!(parse_from(["suite", "--cluster", "2", "--tls"]).is_err());
        let o = parse_from(["--watch-pid", "7", "--watch-pid", "9"]).expect("parses");
        assert_eq!(o.watch_pids, [7, 9]);
    }

    #[test]
    fn senders_bounded_by_clients() {
        assert!(parse_from(["--clients", "2", "--senders", "3"]).is_err());
    }
}
