//! A session: connect, register, run one step or a rate ladder, and say
//! what the server cost. This is the `fanout` subcommand, and the building
//! block every suite scenario is made of.
//!
//! Server cost is sampled at three points (before connecting, once the room
//! is registered, after the last step) so that memory per connection and
//! CPU per delivery are each measured over the phase that causes them. The
//! samples come from `/proc/PID` when the server's pid is known, or else
//! from its `/metrics` page (`--metrics URL`), which also tells chatd's
//! longest loop iteration; with `--scrape-ms` the page is also fetched
//! every N ms throughout, to measure what scraping costs. A fourth sample,
//! right after the connect phase, gives the server's CPU per connect (over
//! TLS: per handshake).
//!
//! With `--tls` the clients speak TLS; with `--tls-storm N` a second swarm
//! opens N TLS connections at once during the first step (see `storm.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use super::args::Options;
use super::storm::{Storm, StormPlan, StormReport};
use super::swarm::{ConnectReport, StepPlan, Swarm, SwarmConfig};
use super::tally::StepResult;
use crate::chatd::{self, Chatd};
use crate::metrics::{self, MetricsUrl, ScrapeStats, Scraper};
use crate::procstat::{self, ProcSample};
use crate::report::{self, Obj};
use crate::tls::{TestCert, TlsClient};

/// Receivers × senders up to which order is always checked (it costs one
/// word per pair).
const ORDER_CHECK_PAIRS: usize = 1_000_000;
/// Time for the server's batched notices to drain before sampling memory.
const SETTLE: Duration = Duration::from_millis(300);
/// A ladder step is good only if the senders kept at least this share of
/// the target rate (otherwise the rate was not really offered).
const LADDER_MIN_PACE: f64 = 0.95;
/// A ladder step is good when at least this share of deliveries arrived.
const LADDER_MIN_DELIVERED: f64 = 0.999;

/// How long one scrape of `/metrics` may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long chatd gets to log its TLS listener after its plain one.
const TLS_LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a session's clients connect.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The swarm's address: a plain listener, or with `--tls` a TLS one.
    pub addr: SocketAddr,
    /// The TLS listener a `--tls-storm` connects to.
    pub storm_addr: Option<SocketAddr>,
}

impl Target {
    /// A server this tool did not start: `--addr`, and for the storm
    /// `--storm-addr` (or `--addr` itself with `--tls`).
    pub fn given(o: &Options) -> Target {
        Target {
            addr: o.addr,
            storm_addr: o.storm_addr.or(if o.tls { Some(o.addr) } else { None }),
        }
    }
}

/// Whether a chatd started for `o` needs a TLS listener (and so a
/// certificate).
pub fn needs_tls_listener(o: &Options) -> bool {
    o.tls || o.storm > 0
}

/// Starts chatd at `path` with `o`'s flags, plus a TLS listener on a free
/// port with `cert` when given, and says where the session connects.
pub fn start_chatd(
    path: &std::path::Path,
    o: &Options,
    cert: Option<&TestCert>,
) -> Result<(Chatd, Target), String> {
    if needs_tls_listener(o) && cert.is_none() {
        return Err("TLS clients need a certificate for the chatd started".into());
    }
    let mut flags = o.chatd_flags();
    if let Some(cert) = cert {
        flags.extend(cert.chatd_flags());
    }
    let server = Chatd::start(path, flags)?;
    let tls = match cert {
        Some(_) => Some(server.tls_addr(TLS_LOG_TIMEOUT).ok_or_else(|| {
            format!(
                "chatd logged no `tls listening on ADDR` line; last log lines:\n{}",
                server.log_tail()
            )
        })?),
        None => None,
    };
    let target = Target {
        addr: match tls {
            Some(addr) if o.tls => addr,
            _ => server.addr,
        },
        storm_addr: o.storm_addr.or(tls),
    };
    Ok((server, target))
}

/// Where a session reads the server's cost.
#[derive(Debug, Clone, Default)]
pub struct ServerView {
    /// `/proc/PID`, when the server is a process this user may read.
    pub pid: Option<i32>,
    /// Its `/metrics` page: the cost comes from it when there is no pid;
    /// it is scraped every `--scrape-ms` and asked for chatd's loop gauge.
    pub metrics: Option<MetricsUrl>,
    /// More processes to watch in `/proc` (the cluster scenarios: every
    /// chatd of the cluster, and Redis): their CPU during each step goes to
    /// [`StepResult::watched_cpu_s`], their new descriptors until the
    /// clients are registered to [`SessionReport::watched_conns`], in this
    /// order.
    pub watch: Vec<i32>,
}

/// Server counters at the three sampling points, and what follows from them.
#[derive(Debug, Clone, Default)]
pub struct ServerCost {
    /// Where the figures come from: `/proc` or `/metrics`.
    pub source: &'static str,
    /// chatd's `chatd_loop_busy_max_seconds` (the longest loop iteration
    /// since it started) before connecting and after the run, when known.
    pub loop_busy_before_s: Option<f64>,
    pub loop_busy_after_s: Option<f64>,
    /// Before the first connect.
    pub before: ProcSample,
    /// Right after the connect phase.
    pub after_connect: ProcSample,
    /// Server CPU seconds during the connect phase.
    pub connect_cpu_s: f64,
    /// ... per connection made (over TLS: per handshake), in µs.
    pub connect_cpu_us: f64,
    /// Share of one core the server used during the connect phase (100 =
    /// the server was the bottleneck).
    pub connect_busy_pct: f64,
    /// Once every client was registered and the room had settled.
    pub connected: ProcSample,
    /// After the last step.
    pub after: ProcSample,
    /// (RSS once registered − RSS before connecting) / clients.
    pub rss_per_conn: f64,
    /// Server CPU seconds spent during the steps.
    pub cpu_s: f64,
    /// ... per million deliveries received.
    pub cpu_s_per_million: f64,
    /// RSS after the steps − RSS once registered.
    pub rss_growth: f64,
}

/// Everything one session measured.
#[derive(Debug, Clone, Default)]
pub struct SessionReport {
    /// Reading clients asked for.
    pub clients: usize,
    /// Never-reading clients asked for.
    pub slow: usize,
    /// How the connect phase went.
    pub connect: ConnectReport,
    /// Seconds until the token reached everyone.
    pub register_s: Option<f64>,
    /// Readers that never saw the token.
    pub register_missing: usize,
    /// One result per step run (retries of a ladder step included).
    pub steps: Vec<StepResult>,
    /// Index of the last good ladder step.
    pub saturation: Option<usize>,
    /// The ladder ran out of steps before anything failed: the saturation
    /// point is a lower bound.
    pub ladder_capped: bool,
    /// What the server cost, when its pid or metrics were known.
    pub server: Option<ServerCost>,
    /// What the scrapes every `--scrape-ms` did.
    pub scrapes: Option<ScrapeStats>,
    /// What the `--tls-storm` did.
    pub storm: Option<StormReport>,
    /// The clients spoke TLS.
    pub tls: bool,
    /// Why the session is not a pass, for `--check` (empty = pass).
    pub problems: Vec<String>,
    /// Per process of [`ServerView::watch`]: descriptors it opened from
    /// before the connect phase until every client was registered, i.e.
    /// the clients the kernel gave it (-1 if unreadable).
    pub watched_conns: Vec<i64>,
}

impl SessionReport {
    /// Connect + registration time: until one broadcast reached all.
    pub fn time_to_all_s(&self) -> f64 {
        self.connect.elapsed_s + self.register_s.unwrap_or(f64::NAN)
    }
}

/// The `fanout` subcommand: one session against `--addr`, or against a
/// chatd started here with `--chatd`.
pub fn run_cli(o: &Options) -> u8 {
    let (soft, hard) = procstat::raise_nofile_limit();
    let needed = (o.clients + o.slow) as u64 + 16;
    if soft < needed {
        eprintln!("chatload: open-file limit {soft} (hard {hard}) is below the {needed} needed");
    }
    let mut server: Option<Chatd> = None;
    let mut target = Target::given(o);
    let mut view = ServerView {
        pid: o.server_pid,
        metrics: o.metrics.clone(),
        watch: o.watch_pids.clone(),
    };
    // Kept until chatd is stopped: it reads the files again on SIGHUP.
    let mut cert: Option<TestCert> = None;
    if let Some(path) = &o.chatd {
        let started = chatd::locate(Some(path)).and_then(|p| {
            if needs_tls_listener(o) {
                cert = Some(TestCert::generate()?);
            }
            start_chatd(&p, o, cert.as_ref())
        });
        match started {
            Ok((c, t)) => {
                target = t;
                view = ServerView {
                    watch: o.watch_pids.clone(),
                    ..started_view(&c, o)
                };
                server = Some(c);
            }
            Err(e) => {
                eprintln!("chatload: {e}");
                return 2;
            }
        }
    }
    if o.scrape_every.is_some() && view.metrics.is_none() {
        eprintln!("chatload: --scrape-ms needs --metrics URL (or --chatd, which starts one)");
        return 2;
    }
    let report = run_session(o, &target, &view);
    if o.json {
        println!("{}", session_json(o, &report));
    } else {
        print!("{}", session_text(o, &report));
    }
    if let Some(c) = server {
        c.stop();
    }
    drop(cert);
    let failed = if o.check {
        !report.problems.is_empty()
    } else {
        report.connect.connected == 0
    };
    if failed {
        for p in &report.problems {
            eprintln!("chatload: FAIL: {p}");
        }
        1
    } else {
        0
    }
}

/// How a session sees a chatd this tool started: /proc by its pid, and
/// its metrics endpoint when it has one (`--scrape-ms` asks for one).
pub fn started_view(server: &Chatd, o: &Options) -> ServerView {
    let wants_metrics = o.scrape_every.is_some()
        || o.chatd_flags()
            .iter()
            .any(|f| f == "--metrics" || f.starts_with("--metrics="));
    ServerView {
        pid: Some(server.pid),
        watch: Vec::new(),
        metrics: if wants_metrics {
            server
                .metrics_addr(Duration::from_secs(5))
                .map(MetricsUrl::of)
        } else {
            None
        },
    }
}

/// The server's counters now, from /proc or else from `/metrics`, with
/// chatd's loop gauge when the page has it.
fn sample_server(view: &ServerView) -> Result<(ProcSample, Option<f64>), String> {
    let page = view
        .metrics
        .as_ref()
        .map(|url| metrics::scrape(url, SCRAPE_TIMEOUT).map_err(|e| format!("{url}: {e}")));
    let busy = page
        .as_ref()
        .and_then(|p| p.as_ref().ok())
        .and_then(|p| p.loop_busy_max_s);
    if let Some(pid) = view.pid {
        return procstat::sample(pid)
            .map(|s| (s, busy))
            .map_err(|e| format!("/proc/{pid}: {e}"));
    }
    match page {
        Some(page) => Ok((page?.proc_sample()?, busy)),
        None => Err("no pid and no metrics URL".into()),
    }
}

/// Runs one session with the options' numbers against `target`.
pub fn run_session(o: &Options, target: &Target, view: &ServerView) -> SessionReport {
    let mut rep = SessionReport {
        clients: o.clients,
        slow: o.slow,
        tls: o.tls,
        ..SessionReport::default()
    };
    let tls = if needs_tls_listener(o) {
        match TlsClient::new(o.ca.as_deref(), &o.server_name) {
            Ok(t) => Some(t),
            Err(e) => {
                rep.problems.push(e);
                return rep;
            }
        }
    } else {
        None
    };
    let cfg = SwarmConfig {
        addr: target.addr,
        name_first: o.name_first,
        no_self_echo: o.no_self_echo,
        check_order: o.check || o.clients.saturating_mul(o.senders) <= ORDER_CHECK_PAIRS,
        progress: !o.quiet,
        tls: if o.tls { tls.clone() } else { None },
        join_room: None,
    };
    let mut swarm = match Swarm::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            rep.problems.push(format!("cannot create poll: {e}"));
            return rep;
        }
    };
    let watched = view.pid.is_some() || view.metrics.is_some();
    let sample = |what: &str, rep: &mut SessionReport| -> Option<(ProcSample, Option<f64>)> {
        if !watched {
            return None;
        }
        match sample_server(view) {
            Ok(s) => Some(s),
            Err(e) => {
                rep.problems
                    .push(format!("cannot sample the server {what}: {e}"));
                None
            }
        }
    };
    let before = sample("before connecting", &mut rep);
    let scraper = match (o.scrape_every, &view.metrics) {
        (Some(every), Some(url)) => Some(Scraper::start(url.clone(), every)),
        _ => None,
    };

    // The connect phase's CPU is short: read it in nanoseconds when the
    // server is a process here.
    let cpu_ns_before = view.pid.and_then(procstat::cpu_ns);
    let fds = || -> Vec<i64> {
        view.watch
            .iter()
            .map(|&pid| procstat::open_fds(pid).map_or(-1, |n| n as i64))
            .collect()
    };
    let fds_before = fds();
    rep.connect = swarm.connect(o.clients, o.slow, o.connect_concurrency, o.connect_timeout);
    let cpu_ns_after = view.pid.and_then(procstat::cpu_ns);
    let after_connect = sample("after connecting", &mut rep);
    if rep.connect.failed > 0 {
        rep.problems.push(format!(
            "{} of {} connects failed (first error: {})",
            rep.connect.failed,
            rep.connect.attempted,
            rep.connect.first_error.as_deref().unwrap_or("?")
        ));
    }
    if swarm.open_readers() == 0 {
        rep.problems.push("no reading client is connected".into());
        rep.scrapes = scraper.map(Scraper::finish);
        return rep;
    }
    match swarm.register(o.register_timeout) {
        Ok(s) => rep.register_s = Some(s),
        Err(missing) => {
            rep.register_missing = missing;
            rep.problems.push(format!(
                "{missing} clients never saw the registration line within {:.0}s",
                o.register_timeout.as_secs_f64()
            ));
        }
    }
    swarm.idle(SETTLE);
    let connected = sample("once registered", &mut rep);
    // Once registered, every server has accepted its clients (right after
    // the connect phase some still wait in the accept queue).
    rep.watched_conns = fds_before
        .iter()
        .zip(fds())
        .map(|(&b, a)| if b < 0 || a < 0 { -1 } else { a - b })
        .collect();

    let senders = o.senders.clamp(1, swarm.open_readers().max(1));
    let mut rate = o.rate;
    // A zero duration means "connect and register only" (memory scenarios).
    let steps = if o.duration.is_zero() {
        0
    } else if o.ladder {
        o.ladder_max_steps.max(1)
    } else {
        1
    };
    let mut retries_left = o.ladder_retries;
    for step in 0..steps {
        let plan = StepPlan {
            step: step as u32,
            rate,
            duration: o.duration,
            senders,
            payload: o.payload,
            grace: o.grace,
        };
        // The storm blows during the first step only.
        let storm = match (step, o.storm, target.storm_addr, &tls) {
            (0, 1.., Some(addr), Some(tls)) => Some(Storm::start(StormPlan {
                addr,
                tls: tls.clone(),
                clients: o.storm,
                after: o.storm_after,
                timeout: o.connect_timeout,
                pid: view.pid,
            })),
            (0, 1.., _, _) => {
                rep.problems
                    .push("--tls-storm: no TLS address to storm".into());
                None
            }
            _ => None,
        };
        let watched = |pids: &[i32]| -> Vec<Option<u64>> {
            pids.iter().map(|&pid| procstat::cpu_ns(pid)).collect()
        };
        let watched_before = watched(&view.watch);
        let busy_before = procstat::machine_busy_s();
        let mut r = swarm.run_step(&plan);
        r.machine_busy_s = match (busy_before, procstat::machine_busy_s()) {
            (Some(b), Some(a)) => a - b,
            _ => f64::NAN,
        };
        r.watched_cpu_s = watched_before
            .iter()
            .zip(watched(&view.watch))
            .map(|(b, a)| match (b, a) {
                (Some(b), Some(a)) => a.saturating_sub(*b) as f64 / 1e9,
                _ => f64::NAN,
            })
            .collect();
        if let Some(storm) = storm {
            match storm.finish() {
                Ok(s) => {
                    if s.connect.failed > 0 {
                        rep.problems.push(format!(
                            "storm: {} of {} TLS connects failed (first error: {})",
                            s.connect.failed,
                            s.connect.attempted,
                            s.connect.first_error.as_deref().unwrap_or("?")
                        ));
                    }
                    rep.storm = Some(s);
                }
                Err(e) => rep.problems.push(format!("storm: {e}")),
            }
        }
        let good = r.delivered_fraction() >= LADDER_MIN_DELIVERED
            && r.achieved_rate >= LADDER_MIN_PACE * r.rate
            && r.p99_ms <= o.p99_bound.as_secs_f64() * 1000.0
            && r.lost_clients == 0;
        if o.check && !r.is_perfect() {
            rep.problems.push(format!(
                "step {step}: sent {} (refused {}), expected {} deliveries, received {}, \
                 misordered {}, receivers with wrong counts {}, clients lost {}",
                r.counts.sent,
                r.counts.send_dropped,
                r.counts.expected,
                r.counts.received,
                r.counts.misordered,
                r.bad_receivers,
                r.lost_clients
            ));
        }
        let retry = !good && r.lost_clients == 0 && retries_left > 0;
        rep.steps.push(r);
        if !o.ladder {
            break;
        }
        if !good {
            if retry {
                // One bad step on a shared machine may be a neighbour's
                // burst, not saturation: hold the rate and try once more.
                retries_left -= 1;
                continue;
            }
            break;
        }
        rep.saturation = Some(rep.steps.len() - 1);
        retries_left = o.ladder_retries;
        rate *= o.ladder_factor;
        if step + 1 == steps {
            rep.ladder_capped = true;
        }
    }
    let after = sample("after the run", &mut rep);
    rep.scrapes = scraper.map(Scraper::finish);

    if let (
        Some((before, busy_before)),
        Some((after_connect, _)),
        Some((connected, _)),
        Some((after, busy_after)),
    ) = (before, after_connect, connected, after)
    {
        let received: u64 = rep.steps.iter().map(|s| s.counts.received).sum();
        let cpu_s = after.cpu_s - connected.cpu_s;
        let connect_cpu_s = match (cpu_ns_before, cpu_ns_after) {
            (Some(b), Some(a)) => a.saturating_sub(b) as f64 / 1e9,
            _ => after_connect.cpu_s - before.cpu_s,
        };
        rep.server = Some(ServerCost {
            source: if view.pid.is_some() {
                "/proc"
            } else {
                "/metrics"
            },
            loop_busy_before_s: busy_before,
            loop_busy_after_s: busy_after,
            before,
            after_connect,
            connect_cpu_s,
            connect_cpu_us: 1e6 * connect_cpu_s / rep.connect.connected.max(1) as f64,
            connect_busy_pct: 100.0 * connect_cpu_s / rep.connect.elapsed_s.max(1e-9),
            connected,
            after,
            rss_per_conn: (connected.rss as f64 - before.rss as f64)
                / (o.clients + o.slow).max(1) as f64,
            cpu_s,
            cpu_s_per_million: if received > 0 {
                cpu_s / (received as f64 / 1e6)
            } else {
                f64::NAN
            },
            rss_growth: after.rss as f64 - connected.rss as f64,
        });
    }
    rep
}

/// The human summary of a session.
pub fn session_text(o: &Options, r: &SessionReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "connect{}: {}/{} clients ({} slow) in {:.2}s = {} conn/s{}, {} failed{}\n",
        if r.tls { " (TLS)" } else { "" },
        r.connect.connected,
        r.connect.attempted,
        r.slow,
        r.connect.elapsed_s,
        report::si(r.connect.rate),
        // Too short a phase for a CPU share to mean anything.
        if r.connect.elapsed_s >= 0.1 {
            format!(" (chatload {:.0} % CPU)", r.connect.tool_cpu_pct)
        } else {
            String::new()
        },
        r.connect.failed,
        r.connect
            .first_error
            .as_deref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    ));
    match r.register_s {
        Some(s) => out.push_str(&format!(
            "registered: all readers saw the token after {s:.2}s\n"
        )),
        None => out.push_str(&format!(
            "registered: NO, {} readers missing\n",
            r.register_missing
        )),
    }
    let header = [
        "step", "lines/s", "achieved", "sent", "expected", "received", "deliv %", "deliv/s",
        "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "drain s", "lost", "tool CPU",
    ];
    let watching = r.steps.iter().any(|s| !s.watched_cpu_s.is_empty());
    let mut header = header.to_vec();
    if watching {
        header.push("watched CPU");
    }
    let rows: Vec<Vec<String>> = r
        .steps
        .iter()
        .map(|s| {
            vec![
                s.step.to_string(),
                report::si(s.rate),
                report::si(s.achieved_rate),
                s.counts.sent.to_string(),
                s.counts.expected.to_string(),
                s.counts.received.to_string(),
                format!("{:.3}", 100.0 * s.delivered_fraction()),
                report::si(s.deliveries_per_s),
                format!("{:.2}", s.p50_ms),
                format!("{:.2}", s.p90_ms),
                format!("{:.2}", s.p99_ms),
                format!("{:.2}", s.p999_ms),
                format!("{:.2}", s.max_ms),
                format!("{:.2}", s.drain_s),
                s.lost_clients.to_string(),
                format!("{:.0}%", s.tool_cpu_pct),
            ]
            .into_iter()
            .chain(watching.then(|| watched_pcts(s)))
            .collect()
        })
        .collect();
    out.push_str(&report::table(&header, &rows));
    if !r.watched_conns.is_empty() {
        out.push_str(&format!(
            "watched processes: {} new descriptors once registered\n",
            r.watched_conns
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" / ")
        ));
    }
    if o.ladder {
        match r.saturation.map(|i| &r.steps[i]) {
            Some(s) => out.push_str(&format!(
                "saturation: last good rate {} lines/s = {} deliveries/s, p99 {:.2} ms \
                 (bound {:.0} ms){}\n",
                report::si(s.rate),
                report::si(s.deliveries_per_s),
                s.p99_ms,
                o.p99_bound.as_secs_f64() * 1000.0,
                if r.ladder_capped {
                    "; no step failed, so this is a lower bound (raise --ladder-steps)"
                } else {
                    ""
                }
            )),
            None => out.push_str("saturation: not even the first step was good\n"),
        }
    }
    if let Some(c) = &r.server {
        out.push_str(&format!(
            "server (from {}): RSS {} before, {} registered ({} per connection), {} after{}; \
             CPU {:.2}s during the run = {:.3} CPU-s per million deliveries\n",
            c.source,
            report::bytes(c.before.rss as f64),
            report::bytes(c.connected.rss as f64),
            report::bytes(c.rss_per_conn),
            report::bytes(c.after.rss as f64),
            if c.after.hwm > 0 {
                format!(" (peak {})", report::bytes(c.after.hwm as f64))
            } else {
                String::new()
            },
            c.cpu_s,
            c.cpu_s_per_million
        ));
        out.push_str(&format!(
            "server CPU while connecting: {:.2}s = {:.1} µs per {} ({:.0} % of one core)\n",
            c.connect_cpu_s,
            c.connect_cpu_us,
            if r.tls { "handshake" } else { "connect" },
            c.connect_busy_pct
        ));
        if let Some(after) = c.loop_busy_after_s {
            out.push_str(&format!(
                "server: longest loop iteration {:.2} ms since it started ({})\n",
                after * 1000.0,
                match c.loop_busy_before_s {
                    Some(b) if after > b => {
                        format!("during this run; {:.2} ms before it", b * 1000.0)
                    }
                    Some(_) => "not during this run".to_string(),
                    None => "before the run: unknown".to_string(),
                }
            ));
        }
    }
    if let Some(s) = &r.scrapes {
        out.push_str(&format!(
            "scrapes of /metrics every {} ms: {} answered, {} failed{}; mean {:.2} ms, max {:.2} ms\n",
            o.scrape_every.map_or(0, |d| d.as_millis()),
            s.ok,
            s.failed,
            s.first_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            s.mean_s() * 1000.0,
            s.max_s * 1000.0
        ));
    }
    if let Some(s) = &r.storm {
        out.push_str(&format!(
            "TLS storm: {} clients at once, {:.2}s into the step: {} connected in {:.2}s \
             ({} handshakes/s), {} failed{}\n",
            s.clients,
            s.started_s,
            s.connect.connected,
            s.connect.elapsed_s,
            report::si(s.connect.rate),
            s.connect.failed,
            s.server_cpu_s
                .map(|cpu| format!(
                    "; server CPU meanwhile {cpu:.3}s = {:.0} µs per handshake (chat included)",
                    1e6 * cpu / s.connect.connected.max(1) as f64
                ))
                .unwrap_or_default()
        ));
    }
    if o.check {
        if r.problems.is_empty() {
            out.push_str("check: PASS (every expected delivery arrived, once, in order)\n");
        } else {
            out.push_str("check: FAIL\n");
        }
    }
    out
}

/// A step's CPU use of each watched process, in % of one core:
/// `48%/51%/9%`.
fn watched_pcts(s: &StepResult) -> String {
    s.watched_cpu_s
        .iter()
        .map(|cpu| format!("{:.0}%", 100.0 * cpu / s.elapsed_s.max(1e-9)))
        .collect::<Vec<_>>()
        .join("/")
}

/// The `--json` object of a session.
pub fn session_json(o: &Options, r: &SessionReport) -> String {
    let steps = report::array(r.steps.iter().map(step_json));
    let mut obj = Obj::new()
        .str("mode", "fanout")
        .bool("tls", r.tls)
        .int("clients", r.clients as u64)
        .int("slow", r.slow as u64)
        .int("senders", o.senders as u64)
        .int("payload", o.payload as u64)
        .raw(
            "connect",
            &Obj::new()
                .int("attempted", r.connect.attempted as u64)
                .int("connected", r.connect.connected as u64)
                .int("failed", r.connect.failed as u64)
                .num("seconds", r.connect.elapsed_s)
                .num("per_second", r.connect.rate)
                .num("tool_cpu_percent", r.connect.tool_cpu_pct)
                .finish(),
        )
        .num("register_seconds", r.register_s.unwrap_or(f64::NAN))
        .int("register_missing", r.register_missing as u64)
        .raw(
            "watched_new_fds",
            &report::array(r.watched_conns.iter().map(|n| n.to_string())),
        )
        .raw("steps", &steps);
    if let Some(i) = r.saturation {
        obj = obj
            .raw("saturation", &step_json(&r.steps[i]))
            .bool("ladder_capped", r.ladder_capped);
    }
    if let Some(s) = &r.storm {
        obj = obj.raw(
            "storm",
            &Obj::new()
                .int("clients", s.clients as u64)
                .num("started_seconds", s.started_s)
                .int("connected", s.connect.connected as u64)
                .int("failed", s.connect.failed as u64)
                .num("seconds", s.connect.elapsed_s)
                .num("per_second", s.connect.rate)
                .num("server_cpu_seconds", s.server_cpu_s.unwrap_or(f64::NAN))
                .finish(),
        );
    }
    if let Some(s) = &r.scrapes {
        obj = obj.raw(
            "scrapes",
            &Obj::new()
                .int(
                    "every_ms",
                    o.scrape_every.map_or(0, |d| d.as_millis() as u64),
                )
                .int("answered", s.ok)
                .int("failed", s.failed)
                .num("mean_seconds", s.mean_s())
                .num("max_seconds", s.max_s)
                .finish(),
        );
    }
    if let Some(c) = &r.server {
        obj = obj.raw(
            "server",
            &Obj::new()
                .str("source", c.source)
                .num(
                    "loop_busy_max_seconds_before",
                    c.loop_busy_before_s.unwrap_or(f64::NAN),
                )
                .num(
                    "loop_busy_max_seconds",
                    c.loop_busy_after_s.unwrap_or(f64::NAN),
                )
                .num("connect_cpu_seconds", c.connect_cpu_s)
                .num("connect_cpu_us_per_connection", c.connect_cpu_us)
                .num("connect_busy_percent", c.connect_busy_pct)
                .int("rss_before", c.before.rss)
                .int("rss_after_connect", c.after_connect.rss)
                .int("rss_registered", c.connected.rss)
                .int("rss_after", c.after.rss)
                .num(
                    "rss_peak",
                    if c.after.hwm > 0 {
                        c.after.hwm as f64
                    } else {
                        f64::NAN
                    },
                )
                .num("rss_per_connection", c.rss_per_conn)
                .num("rss_growth", c.rss_growth)
                .num("cpu_seconds", c.cpu_s)
                .num("cpu_seconds_per_million_deliveries", c.cpu_s_per_million)
                .finish(),
        );
    }
    let problems = report::array(r.problems.iter().map(|p| report::string(p)));
    obj.bool("pass", r.problems.is_empty())
        .raw("problems", &problems)
        .finish()
}

fn step_json(s: &StepResult) -> String {
    Obj::new()
        .int("step", u64::from(s.step))
        .num("rate", s.rate)
        .num("achieved_rate", s.achieved_rate)
        .int("sent", s.counts.sent)
        .int("send_refused", s.counts.send_dropped)
        .int("expected", s.counts.expected)
        .int("received", s.counts.received)
        .int("stale", s.counts.stale)
        .int("misordered", s.counts.misordered)
        .int("bad_receivers", s.bad_receivers)
        .int("lost_clients", s.lost_clients)
        .num("deliveries_per_second", s.deliveries_per_s)
        .num("p50_ms", s.p50_ms)
        .num("p90_ms", s.p90_ms)
        .num("p99_ms", s.p99_ms)
        .num("p999_ms", s.p999_ms)
        .num("max_ms", s.max_ms)
        .num("drain_seconds", s.drain_s)
        .num("tool_cpu_percent", s.tool_cpu_pct)
        .num("machine_busy_seconds", s.machine_busy_s)
        .raw(
            "watched_cpu_seconds",
            &report::array(s.watched_cpu_s.iter().map(|v| report::number(*v))),
        )
        .finish()
}
