//! The cluster set: `chatload suite --cluster LIST` and `suite
//! --cluster-cost`.
//!
//! With `--cluster URL`, several chatd processes linked through one Redis
//! are one chat: a room's lines go to Redis and come back to every server,
//! the origin included. Two questions follow, and this set answers them
//! side by side, one column per setup, in one run:
//!
//! - what does a second process buy? (`--cluster 1,2`: the rate ladder,
//!   the latency scenario and a fixed-rate cost scenario against one and
//!   two processes sharing a port);
//! - what does the round trip through Redis cost per line? (`--cluster-cost`,
//!   short for `--cluster alone,1 --only 2`: the latency scenario against
//!   one chatd alone and the same chatd in a cluster of one).
//!
//! A setup is started afresh for every session, like every scenario of the
//! suite: a `redis-server` of its own (Unix socket in a temporary directory,
//! no persistence; none for `alone`), then N chatd processes started with
//! `--reuse-port --listen 127.0.0.1:PORT --listen 127.0.0.1:0 --cluster URL`
//! on one free PORT, the first process first. The shared port is where the
//! session's clients connect, so the kernel spreads them over the
//! processes; the second, private listener of each process is where a
//! probe client checks the link before anything is measured: every probe
//! renames itself until every other probe has seen the rename, so each
//! process is known to reach every other one, and Redis (see
//! [`wait_linked`]: a server whose link is down refuses renames, so this
//! holds for a cluster of one too). The `alone` setup gets the same listeners and `--reuse-port`,
//! only no `--cluster`, so the two columns differ in one thing.
//!
//! Each process's CPU, and Redis's, is read from `/proc/PID/task/*/schedstat`
//! around every step; each process's share of the clients from how many
//! descriptors it opened during the connect phase. Runs alternate between
//! setups (and reverse their order every other run), so every column sees
//! the same minutes of a shared machine; with `--runs K` each cell is the
//! median and min–max of K runs.
//!
//! Every phase has its deadline, and every process is a guard: chatd
//! processes are stopped (SIGTERM, then SIGKILL) and Redis killed and its
//! directory removed when the session ends, on an error too, and even if
//! chatload itself is killed (`PR_SET_PDEATHSIG`).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use super::args::{Options, Setup};
use super::scenario::{self, ServerView, SessionReport, Target};
use super::suite::{Unit, base, note, progress};
use super::tally::StepResult;
use crate::chatd::Chatd;
use crate::redis::RedisServer;
use crate::report::{self, Obj};
use crate::stats;

/// How long the processes of a setup get to see each other's lines.
const LINK_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a probe repeats its line while it has not reached everyone.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long the servers get to close the probes' sockets.
const PROBE_SETTLE: Duration = Duration::from_millis(200);
/// How long a process gets to log its second listener after its first.
const LISTENERS_TIMEOUT: Duration = Duration::from_secs(5);
/// Every cluster set chatd's `--cluster-name` (each setup has a Redis of
/// its own anyway).
const CLUSTER_NAME: &str = "chatload";
/// Free ports tried when another process takes the chosen one first.
const PORT_ATTEMPTS: usize = 3;
/// The ladder's p99 bound, as in the TLS set.
const LADDER_P99: Duration = Duration::from_millis(50);
/// Retries of a bad ladder step (a neighbour's burst on a shared machine
/// should not end a ladder that is compared with another).
const LADDER_RETRIES: u32 = 2;

/// Sizes of the cluster set; `--quick` shrinks them.
#[derive(Debug, Clone, Copy)]
struct Scale {
    ladder_clients: usize,
    ladder_start: f64,
    ladder_step: f64,
    ladder_factor: f64,
    /// Retries count as steps.
    ladder_steps: usize,
    /// The latency scenario's sending time when `--quick` (otherwise
    /// `--duration`, 5 s by default).
    latency_secs: Option<f64>,
    /// C3's rate (lines/s, to the ladder's room) and sending time.
    cost_rate: f64,
    cost_secs: f64,
}

const FULL: Scale = Scale {
    ladder_clients: 1_000,
    ladder_start: 500.0,
    ladder_step: 2.0,
    ladder_factor: 1.3,
    ladder_steps: 20,
    latency_secs: None,
    cost_rate: 1_000.0,
    cost_secs: 4.0,
};

const QUICK: Scale = Scale {
    ladder_clients: 200,
    ladder_start: 500.0,
    ladder_step: 0.5,
    ladder_factor: 2.0,
    ladder_steps: 12,
    latency_secs: Some(1.0),
    cost_rate: 500.0,
    cost_secs: 1.0,
};

/// The processes of one setup, stopped when dropped (chatd first, then
/// Redis: the fields drop in this order).
struct Fleet {
    chatds: Vec<Chatd>,
    redis: Option<RedisServer>,
    /// The port every process listens on.
    shared: SocketAddr,
    /// Seconds until every process saw every other one's probe line.
    linked_s: f64,
}

impl Fleet {
    /// Starts Redis (unless `alone`) and the setup's chatd processes on one
    /// free port, and waits until they are linked.
    fn start(path: &Path, o: &Options, setup: Setup) -> Result<Fleet, String> {
        let redis = match setup {
            Setup::Alone => None,
            Setup::Cluster(_) => Some(RedisServer::start(o.redis_server.as_deref(), o.redis_tcp)?),
        };
        let mut flags = o.chatd_flags();
        flags.push("--reuse-port".into());
        if let Some(redis) = &redis {
            flags.extend([
                "--cluster".into(),
                redis.url(),
                "--cluster-name".into(),
                CLUSTER_NAME.into(),
            ]);
        }
        let mut attempt = 0;
        let (chatds, shared) = loop {
            attempt += 1;
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let shared = SocketAddr::from(([127, 0, 0, 1], port));
            let shared_text = shared.to_string();
            let listen = [shared_text.as_str(), "127.0.0.1:0"];
            let mut chatds: Vec<Chatd> = Vec::new();
            let mut failed = None;
            for _ in 0..setup.processes() {
                match Chatd::start_on(path, &listen, &flags) {
                    Ok(c) => chatds.push(c),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => break (chatds, shared),
                // Someone took the port between our look and chatd's bind.
                Some(e) if chatds.is_empty() && e.contains("in use") && attempt < PORT_ATTEMPTS => {
                }
                Some(e) => {
                    return Err(format!(
                        "chatd #{} of {} on {shared}: {e}",
                        chatds.len() + 1,
                        setup.processes()
                    ));
                }
            }
        };
        let mut private = Vec::new();
        for (i, c) in chatds.iter().enumerate() {
            let addrs = c.listen_addrs(2, LISTENERS_TIMEOUT).ok_or_else(|| {
                format!(
                    "chatd #{} logged fewer than 2 `listening on` lines; last log lines:\n{}",
                    i + 1,
                    c.log_tail()
                )
            })?;
            if addrs[0] != shared {
                return Err(format!(
                    "chatd #{} listens on {} instead of the shared {shared}",
                    i + 1,
                    addrs[0]
                ));
            }
            private.push(addrs[1]);
        }
        let linked = wait_linked(&private, LINK_TIMEOUT);
        // The probes are gone: give the servers a moment to close their
        // sockets, so the session's count of each one's new descriptors
        // starts from a settled figure.
        std::thread::sleep(PROBE_SETTLE);
        let linked_s = linked.map_err(|e| {
            let tails: Vec<String> = chatds
                .iter()
                .enumerate()
                .map(|(i, c)| format!("chatd #{} last log lines:\n{}", i + 1, c.log_tail()))
                .collect();
            format!("{e}\n{}", tails.join("\n"))
        })?;
        Ok(Fleet {
            chatds,
            redis,
            shared,
            linked_s,
        })
    }

    /// The processes a session watches: every chatd, then Redis. The first
    /// chatd is also the session's own server (its RSS and CPU figures).
    fn view(&self) -> ServerView {
        ServerView {
            pid: self.chatds.first().map(|c| c.pid),
            metrics: None,
            watch: self
                .chatds
                .iter()
                .map(|c| c.pid)
                .chain(self.redis.as_ref().map(|r| r.pid))
                .collect(),
        }
    }

    /// Stops every chatd, then Redis; what went wrong on the way.
    fn stop(mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, c) in self.chatds.drain(..).enumerate() {
            let too_slow = c.too_slow_count();
            if too_slow > 0 {
                problems.push(format!(
                    "chatd #{} cut {too_slow} clients as too slow",
                    i + 1
                ));
            }
            if c.panic_count() > 0 {
                problems.push(format!("chatd #{} panicked: {}", i + 1, c.log_tail()));
            }
            let warnings: Vec<String> = c
                .warning_lines()
                .into_iter()
                .filter(|l| !l.contains("too slow"))
                .collect();
            if let Some(first) = warnings.first() {
                problems.push(format!(
                    "chatd #{} logged {} warnings, the first: {first}",
                    i + 1,
                    warnings.len()
                ));
            }
            if !c.stop() {
                problems.push(format!("chatd #{} did not exit 0 on SIGTERM", i + 1));
            }
        }
        if let Some(redis) = self.redis.take() {
            // Redis logs (at warning level) a subscriber it cuts for
            // falling behind its output buffer limit.
            let cut = redis.log_lines_with(&["output buffer", "closed ASAP"]);
            if let Some(first) = cut.first() {
                problems.push(format!("redis-server cut {} clients: {first}", cut.len()));
            }
            redis.stop();
        }
        problems
    }
}

/// One probe client on one process's private listener.
struct Probe {
    stream: TcpStream,
    /// Everything read so far (a few renames, the lobby's notices).
    seen: Vec<u8>,
}

/// Waits until the processes behind `addrs` are linked, through their
/// users' eyes. Probe `i` connects to `addrs[i]` and renames itself
/// (`/nick NAME_i`, repeated every [`PROBE_EVERY`] until it reads its own
/// `OLD is now known as NAME_i`): PROTOCOL.md says "while Redis is
/// unreachable, each server ... answers a rename with `Name changes are
/// unavailable right now`", so each process, even a cluster of one (which
/// chats on alone while its link is down), has then reached Redis. Then it
/// repeats a line naming itself until every probe has read it: a room's
/// lines reach every server's users, so every process reaches every other
/// one. (The rename alone would not do for that: a probe whose own arrival
/// is still on its way through Redis misses it.) Returns the seconds it
/// took.
fn wait_linked(addrs: &[SocketAddr], timeout: Duration) -> Result<f64, String> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut probes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let stream = TcpStream::connect_timeout(addr, Duration::from_secs(2))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| format!("probe of chatd #{} at {addr}: {e}", i + 1))?;
        probes.push(Probe {
            stream,
            seen: Vec::new(),
        });
    }
    // Names of 1-32 letters, digits, `_ - .`, unique to this run.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id();
    let names: Vec<String> = (0..addrs.len())
        .map(|i| format!("linkprobe{i}-{nonce:x}"))
        .collect();
    let renamed: Vec<Vec<u8>> = names
        .iter()
        .map(|n| format!(" is now known as {n}\n").into_bytes())
        .collect();
    let said: Vec<Vec<u8>> = names
        .iter()
        .map(|n| format!("{n}: link check {n}\n").into_bytes())
        .collect();
    let n = addrs.len();
    // renamed_ok[i]: probe i has read its own rename.
    let mut renamed_ok = vec![false; n];
    // reached[i][j]: probe j has read probe i's line.
    let mut reached = vec![vec![false; n]; n];
    let mut next_send = start;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let now = Instant::now();
        if now >= next_send {
            next_send = now + PROBE_EVERY;
            for (i, name) in names.iter().enumerate() {
                let line = if !renamed_ok[i] {
                    format!("/nick {name}\n")
                } else if !reached[i].iter().all(|&r| r) {
                    format!("link check {name}\n")
                } else {
                    continue;
                };
                if let Err(e) = probes[i].stream.write_all(line.as_bytes())
                    && e.kind() != ErrorKind::WouldBlock
                {
                    return Err(format!("probe of chatd #{}: {e}", i + 1));
                }
            }
        }
        for (j, probe) in probes.iter_mut().enumerate() {
            loop {
                match probe.stream.read(&mut buf) {
                    Ok(0) => return Err(format!("chatd #{} closed the probe", j + 1)),
                    Ok(k) => probe.seen.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("probe of chatd #{}: {e}", j + 1)),
                }
            }
            if !renamed_ok[j] && contains(&probe.seen, &renamed[j]) {
                renamed_ok[j] = true;
                // Its line goes out at once, not a period later.
                next_send = Instant::now();
            }
            for (i, needle) in said.iter().enumerate() {
                if !reached[i][j] && contains(&probe.seen, needle) {
                    reached[i][j] = true;
                }
            }
        }
        if renamed_ok.iter().all(|&r| r) && reached.iter().flatten().all(|&r| r) {
            return Ok(start.elapsed().as_secs_f64());
        }
        if Instant::now() >= deadline {
            let not_renamed: Vec<String> = (0..n)
                .filter(|&i| !renamed_ok[i])
                .map(|i| format!("#{}", i + 1))
                .collect();
            let missing: Vec<String> = (0..n)
                .flat_map(|i| (0..n).map(move |j| (i, j)))
                .filter(|&(i, j)| !reached[i][j])
                .map(|(i, j)| format!("#{} -> #{}", i + 1, j + 1))
                .collect();
            let unavailable = probes
                .iter()
                .any(|p| contains(&p.seen, b"Name changes are unavailable"));
            return Err(format!(
                "the chatd processes are not linked after {:.0}s: probes never renamed \
                 on [{}]; lines never seen (from -> to): [{}]{}",
                timeout.as_secs_f64(),
                not_renamed.join(", "),
                missing.join(", "),
                if unavailable {
                    " (chatd answers `Name changes are unavailable`: its link to Redis is down)"
                } else {
                    " (does this chatd implement --cluster?)"
                }
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One figure, one column per setup, one value per run in each.
#[derive(Debug, Clone)]
struct Row {
    scenario: String,
    metric: String,
    unit: Unit,
    cols: Vec<Vec<f64>>,
}

/// Every figure of the set so far, and what is worth saying beside them.
struct Figures {
    setups: Vec<Setup>,
    rows: Vec<Row>,
    /// Why each ladder ended, and other observations.
    notes: Vec<String>,
    /// Sessions' problems.
    problems: Vec<String>,
}

impl Figures {
    /// Appends `v` to column `col` of the figure (scenario, metric).
    fn put(&mut self, scenario: &str, metric: &str, unit: Unit, col: usize, v: f64) {
        let ncols = self.setups.len();
        let row = match self
            .rows
            .iter_mut()
            .position(|r| r.scenario == scenario && r.metric == metric)
        {
            Some(i) => &mut self.rows[i],
            None => {
                self.rows.push(Row {
                    scenario: scenario.to_string(),
                    metric: metric.to_string(),
                    unit,
                    cols: vec![Vec::new(); ncols],
                });
                let last = self.rows.len() - 1;
                &mut self.rows[last]
            }
        };
        row.cols[col].push(v);
    }

    /// The per-process rows of a step: each chatd's CPU, all of them,
    /// Redis, chatload (in % of one core), and each chatd's clients.
    fn put_processes(
        &mut self,
        scenario: &str,
        col: usize,
        step: &StepResult,
        rep: &SessionReport,
        processes: usize,
        max_processes: usize,
    ) {
        let pct = |cpu: f64| 100.0 * cpu / step.elapsed_s.max(1e-9);
        let chatd_cpu: Vec<f64> = step.watched_cpu_s.iter().take(processes).copied().collect();
        for i in 0..max_processes {
            self.put(
                scenario,
                &format!("chatd #{} CPU", i + 1),
                Unit::Percent,
                col,
                chatd_cpu.get(i).map_or(f64::NAN, |&c| pct(c)),
            );
        }
        if max_processes > 1 {
            self.put(
                scenario,
                "chatd CPU, all processes",
                Unit::Percent,
                col,
                pct(chatd_cpu.iter().sum()),
            );
        }
        self.put(
            scenario,
            "redis-server CPU",
            Unit::Percent,
            col,
            step.watched_cpu_s
                .get(processes)
                .map_or(f64::NAN, |&c| pct(c)),
        );
        self.put(
            scenario,
            "chatload CPU",
            Unit::Percent,
            col,
            step.tool_cpu_pct,
        );
        self.put(
            scenario,
            "rest of the machine (others, interrupts)",
            Unit::Percent,
            col,
            rest_pct(step),
        );
        if max_processes > 1 {
            for i in 0..max_processes {
                self.put(
                    scenario,
                    &format!("clients on chatd #{}", i + 1),
                    Unit::Count,
                    col,
                    rep.watched_conns
                        .get(i)
                        .filter(|_| i < processes)
                        .map_or(f64::NAN, |&n| n as f64),
                );
            }
        }
    }
}

/// `chatload suite --cluster LIST` / `--cluster-cost`: the scenarios, one
/// column per setup, runs alternating; prints the side-by-side table (or
/// JSON). Exit status 2 if a setup could not be started or linked.
pub fn run(path: &Path, o: &Options) -> u8 {
    let scale = if o.quick { QUICK } else { FULL };
    let mut figures = Figures {
        setups: o.cluster.clone(),
        rows: Vec::new(),
        notes: Vec::new(),
        problems: Vec::new(),
    };
    if o.cluster.iter().any(|s| matches!(s, Setup::Cluster(_)))
        && let Err(e) = RedisServer::check_binary(o.redis_server.as_deref())
    {
        eprintln!("chatload: {e}");
        return 2;
    }
    let max_processes = o.cluster.iter().map(|s| s.processes()).max().unwrap_or(1);
    let flags = o.chatd_flags().join(" ");
    let labels: Vec<String> = o.cluster.iter().map(|s| s.label()).collect();
    for run in 0..o.runs {
        eprintln!(
            "chatload: cluster suite run {}/{} against {} {flags}: {}",
            run + 1,
            o.runs,
            path.display(),
            labels.join(", ")
        );
        for scenario in [1, 2, 3] {
            if !(o.only.is_empty() || o.only.contains(&scenario)) {
                continue;
            }
            // Every other run goes the other way, so no column always
            // comes first (after a cold start) or last.
            let mut order: Vec<usize> = (0..o.cluster.len()).collect();
            if run % 2 == 1 {
                order.reverse();
            }
            for col in order {
                let setup = o.cluster[col];
                let done = match scenario {
                    1 => ladder(path, o, scale, setup, col, max_processes, &mut figures),
                    2 => fixed(
                        path,
                        o,
                        Fixed::latency(o, scale),
                        setup,
                        col,
                        max_processes,
                        &mut figures,
                    ),
                    _ => fixed(
                        path,
                        o,
                        Fixed::cost(scale),
                        setup,
                        col,
                        max_processes,
                        &mut figures,
                    ),
                };
                if let Err(e) = done {
                    eprintln!("chatload: cluster suite aborted ({}): {e}", setup.label());
                    if !figures.rows.is_empty() {
                        eprintln!("chatload: the figures so far:");
                        eprint!("{}", text(o, &figures));
                    }
                    return 2;
                }
            }
        }
    }
    if o.json {
        println!("{}", json(o, &figures, &flags));
    } else {
        print!("{}", text(o, &figures));
    }
    0
}

/// Starts a fresh `setup`, runs one session of `opts` against its shared
/// port, stops it. Returns the report and the seconds until it linked.
fn session(
    path: &Path,
    opts: &Options,
    setup: Setup,
    name: &str,
    figures: &mut Figures,
) -> Result<(SessionReport, f64), String> {
    let fleet = Fleet::start(path, opts, setup)?;
    let target = Target {
        addr: fleet.shared,
        storm_addr: None,
    };
    let rep = scenario::run_session(opts, &target, &fleet.view());
    let linked_s = fleet.linked_s;
    let label = format!("{name}, {}", setup.label());
    for p in fleet.stop() {
        figures.problems.push(format!("{label}: {p}"));
    }
    note(&mut figures.problems, &label, &rep);
    if setup.processes() > 1
        && let Some(i) = rep
            .watched_conns
            .iter()
            .take(setup.processes())
            .position(|&n| n == 0)
    {
        figures.problems.push(format!(
            "{label}: the kernel gave chatd #{} no client (SO_REUSEPORT spread)",
            i + 1
        ));
    }
    Ok((rep, linked_s))
}

/// C1: the rate ladder (p99 ≤ 50 ms) against one setup.
fn ladder(
    path: &Path,
    o: &Options,
    s: Scale,
    setup: Setup,
    col: usize,
    max_processes: usize,
    figures: &mut Figures,
) -> Result<(), String> {
    let sc = "C1 ladder";
    let opts = Options {
        clients: s.ladder_clients,
        senders: 10,
        rate: s.ladder_start,
        ladder: true,
        ladder_factor: s.ladder_factor,
        ladder_max_steps: s.ladder_steps,
        ladder_retries: LADDER_RETRIES,
        duration: Duration::from_secs_f64(s.ladder_step),
        grace: Duration::from_secs(1),
        p99_bound: LADDER_P99,
        ..base(o)
    };
    let (rep, linked_s) = session(path, &opts, setup, sc, figures)?;
    let label = setup.label();
    if rep.ladder_capped {
        figures.problems.push(format!(
            "{sc}, {label}: no step failed within {} steps; the figure is a lower bound",
            opts.ladder_max_steps
        ));
    }
    figures.put(sc, "processes linked after", Unit::Seconds, col, linked_s);
    let good = rep.saturation.map(|i| &rep.steps[i]);
    figures.put(
        sc,
        "lines/s at the last good step",
        Unit::PerSecond,
        col,
        good.map_or(f64::NAN, |st| st.rate),
    );
    figures.put(
        sc,
        "deliveries/s with p99 <= 50 ms",
        Unit::PerSecond,
        col,
        good.map_or(f64::NAN, |st| st.deliveries_per_s),
    );
    figures.put(
        sc,
        "p50 at that rate",
        Unit::Ms,
        col,
        good.map_or(f64::NAN, |st| st.p50_ms),
    );
    figures.put(
        sc,
        "p99 at that rate",
        Unit::Ms,
        col,
        good.map_or(f64::NAN, |st| st.p99_ms),
    );
    if let Some(st) = good {
        figures.put_processes(sc, col, st, &rep, setup.processes(), max_processes);
    }
    // What ended the ladder: the last step run, if it was not the good one.
    let end = rep
        .steps
        .last()
        .filter(|_| rep.saturation != Some(rep.steps.len() - 1));
    let ended = end.map_or("nothing (capped)".to_string(), |st| {
        format!(
            "{} lines/s: {}",
            report::si(st.rate),
            step_state(st, &opts, setup.processes())
        )
    });
    let good_text = good.map_or("no good step".to_string(), |st| {
        format!(
            "{} deliveries/s at p99 {:.2} ms, CPU {}",
            report::si(st.deliveries_per_s),
            st.p99_ms,
            cpu_text(st, setup.processes())
        )
    });
    figures.notes.push(format!(
        "{sc}, {label}: last good step {good_text}; ended at {ended}"
    ));
    progress(format!(
        "{sc}, {label}: linked after {linked_s:.2}s; {good_text}; ended at {ended}"
    ));
    Ok(())
}

/// A fixed-rate scenario: C2 (latency) and C3 (cost at the ladder's size).
#[derive(Debug, Clone, Copy)]
struct Fixed {
    /// `C2 latency`, `C3 fixed rate`.
    name: &'static str,
    clients: usize,
    senders: usize,
    rate: f64,
    duration: Duration,
}

impl Fixed {
    /// C2: latency at a moderate fixed rate (`--clients`, `--senders`,
    /// `--rate`, `--duration`; 100 × 1,000 lines/s for 5 s by default).
    fn latency(o: &Options, s: Scale) -> Fixed {
        Fixed {
            name: "C2 latency",
            clients: o.clients,
            senders: o.senders.min(o.clients).max(1),
            rate: o.rate,
            duration: s
                .latency_secs
                .map_or(o.duration, Duration::from_secs_f64)
                .max(Duration::from_millis(100)),
        }
    }

    /// C3: the ladder's room at a fixed rate well below saturation, for
    /// what a delivery costs each process: a ladder's end is noisy on a
    /// shared machine, CPU per delivery at a fixed rate much less so.
    fn cost(s: Scale) -> Fixed {
        Fixed {
            name: "C3 fixed rate",
            clients: s.ladder_clients,
            senders: 10,
            rate: s.cost_rate,
            duration: Duration::from_secs_f64(s.cost_secs),
        }
    }
}

/// Runs a [`Fixed`] scenario against one setup.
fn fixed(
    path: &Path,
    o: &Options,
    plan: Fixed,
    setup: Setup,
    col: usize,
    max_processes: usize,
    figures: &mut Figures,
) -> Result<(), String> {
    let sc = format!(
        "{} {} x {}/s",
        plan.name,
        plan.clients,
        report::si(plan.rate).trim_end_matches(".00")
    );
    let opts = Options {
        clients: plan.clients,
        senders: plan.senders,
        rate: plan.rate,
        duration: plan.duration,
        ..base(o)
    };
    let (rep, linked_s) = session(path, &opts, setup, &sc, figures)?;
    let label = setup.label();
    figures.put(&sc, "processes linked after", Unit::Seconds, col, linked_s);
    let Some(st) = rep.steps.first() else {
        figures
            .problems
            .push(format!("{sc}, {label}: no step was run"));
        return Ok(());
    };
    figures.put(&sc, "p50", Unit::Ms, col, st.p50_ms);
    figures.put(&sc, "p99", Unit::Ms, col, st.p99_ms);
    figures.put(&sc, "p99.9", Unit::Ms, col, st.p999_ms);
    figures.put(&sc, "max", Unit::Ms, col, st.max_ms);
    figures.put(
        &sc,
        "delivered",
        Unit::Percent,
        col,
        100.0 * st.delivered_fraction(),
    );
    figures.put(
        &sc,
        "deliveries/s",
        Unit::PerSecond,
        col,
        st.deliveries_per_s,
    );
    figures.put_processes(&sc, col, st, &rep, setup.processes(), max_processes);
    let millions = st.counts.received as f64 / 1e6;
    let chatd_cpu: f64 = st.watched_cpu_s.iter().take(setup.processes()).sum();
    figures.put(
        &sc,
        "chatd CPU-s per million deliveries",
        Unit::Plain,
        col,
        chatd_cpu / millions,
    );
    figures.put(
        &sc,
        "redis-server CPU-s per million deliveries",
        Unit::Plain,
        col,
        st.watched_cpu_s
            .get(setup.processes())
            .map_or(f64::NAN, |&c| c / millions),
    );
    progress(format!(
        "{sc}, {label}: linked after {linked_s:.2}s; p50 {:.2} ms, p99 {:.2} ms, \
         {} deliveries/s ({:.3} % delivered), CPU {}",
        st.p50_ms,
        st.p99_ms,
        report::si(st.deliveries_per_s),
        100.0 * st.delivered_fraction(),
        cpu_text(st, setup.processes())
    ));
    Ok(())
}

/// What the rest of the machine used during a step, in % of one core: its
/// busy time less the watched processes' and chatload's. On a machine
/// shared with other work this says how much of the two cores the run
/// did not have; on a quiet one it is mostly the kernel's interrupt work
/// for the run's own loopback traffic.
fn rest_pct(st: &StepResult) -> f64 {
    let watched: f64 = st.watched_cpu_s.iter().filter(|c| c.is_finite()).sum();
    let tool = st.tool_cpu_pct / 100.0 * st.elapsed_s;
    100.0 * (st.machine_busy_s - watched - tool).max(0.0) / st.elapsed_s.max(1e-9)
}

/// `chatd 48%+51%, redis 9%, chatload 97%, rest 20%` for a step.
fn cpu_text(st: &StepResult, processes: usize) -> String {
    let pct = |cpu: f64| format!("{:.0}%", 100.0 * cpu / st.elapsed_s.max(1e-9));
    let chatd: Vec<String> = st
        .watched_cpu_s
        .iter()
        .take(processes)
        .map(|&c| pct(c))
        .collect();
    let redis = st
        .watched_cpu_s
        .get(processes)
        .map(|&c| format!(", redis {}", pct(c)))
        .unwrap_or_default();
    format!(
        "chatd {}{redis}, chatload {:.0}%, rest {:.0}%",
        chatd.join("+"),
        st.tool_cpu_pct,
        rest_pct(st)
    )
}

/// Why a ladder step failed, in words.
fn step_state(st: &StepResult, o: &Options, processes: usize) -> String {
    let mut why = Vec::new();
    let bound = o.p99_bound.as_secs_f64() * 1000.0;
    if st.p99_ms > bound {
        why.push(format!("p99 {:.1} ms > {bound:.0} ms", st.p99_ms));
    }
    if st.delivered_fraction() < 0.999 {
        why.push(format!(
            "{:.2} % delivered",
            100.0 * st.delivered_fraction()
        ));
    }
    if st.achieved_rate < 0.95 * st.rate {
        why.push(format!(
            "senders kept only {} lines/s",
            report::si(st.achieved_rate)
        ));
    }
    if st.lost_clients > 0 {
        why.push(format!("{} clients lost", st.lost_clients));
    }
    if why.is_empty() {
        why.push("good".into());
    }
    format!("{} (CPU {})", why.join(", "), cpu_text(st, processes))
}

/// The side-by-side table, then the notes and problems.
fn text(o: &Options, f: &Figures) -> String {
    let labels: Vec<String> = f.setups.iter().map(|s| s.label()).collect();
    let mut header = vec!["scenario", "metric"];
    header.extend(labels.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = f
        .rows
        .iter()
        .map(|r| {
            let mut cells = vec![r.scenario.clone(), r.metric.clone()];
            cells.extend(r.cols.iter().map(|values| cell(r.unit, values, o.runs > 1)));
            cells
        })
        .collect();
    let mut out = format!(
        "cluster set: {} run(s), {} (median{})\n",
        o.runs,
        labels.join(" | "),
        if o.runs > 1 { ", min – max" } else { "" }
    );
    out.push_str(&report::table(&header, &rows));
    for n in &f.notes {
        out.push_str(&format!("ladder: {n}\n"));
    }
    for p in &f.problems {
        out.push_str(&format!("note: {p}\n"));
    }
    out
}

/// A cell: the median, and with several runs the min – max.
fn cell(unit: Unit, values: &[f64], spread: bool) -> String {
    match stats::spread(values) {
        None => "-".into(),
        Some((med, lo, hi)) if spread && values.len() > 1 => {
            format!("{} ({} – {})", unit.show(med), unit.show(lo), unit.show(hi))
        }
        Some((med, _, _)) => unit.show(med),
    }
}

/// The whole set as one JSON object.
fn json(o: &Options, f: &Figures, flags: &str) -> String {
    let setups = report::array(f.setups.iter().map(|s| report::string(&s.label())));
    let rows = report::array(f.rows.iter().map(|r| {
        let cols = report::array(r.cols.iter().zip(&f.setups).map(|(values, setup)| {
            let (med, lo, hi) = stats::spread(values).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
            Obj::new()
                .str("setup", &setup.label())
                .raw(
                    "values",
                    &report::array(values.iter().map(|v| report::number(*v))),
                )
                .num("median", med)
                .num("min", lo)
                .num("max", hi)
                .finish()
        }));
        Obj::new()
            .str("scenario", &r.scenario)
            .str("metric", &r.metric)
            .raw("setups", &cols)
            .finish()
    }));
    Obj::new()
        .str("mode", "suite-cluster")
        .str("chatd_flags", flags)
        .bool("quick", o.quick)
        .int("runs", o.runs as u64)
        .raw("setups", &setups)
        .raw("figures", &rows)
        .raw(
            "ladder_notes",
            &report::array(f.notes.iter().map(|n| report::string(n))),
        )
        .raw(
            "problems",
            &report::array(f.problems.iter().map(|p| report::string(p))),
        )
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_contain() {
        assert!(contains(
            b"alice: chatload-link-1-0\n",
            b"chatload-link-1-0"
        ));
        assert!(!contains(b"chatload-link-1-", b"chatload-link-1-0"));
    }

    #[test]
    fn cells_show_median_and_spread() {
        assert_eq!(
            cell(Unit::Ms, &[1.0, 3.0, 2.0], true),
            "2.00 ms (1.00 ms – 3.00 ms)"
        );
        assert_eq!(cell(Unit::Ms, &[1.0, 3.0, 2.0], false), "2.00 ms");
        assert_eq!(cell(Unit::Ms, &[], true), "-");
        assert_eq!(cell(Unit::Count, &[f64::NAN], true), "-");
    }
}
