//! The standard scenarios (`suite`) and the CI check (`smoke`).
//!
//! Each scenario starts a fresh chatd (so one scenario's leftovers, such as
//! memory the allocator kept, never colour the next), runs one or two
//! sessions, and reduces them to a few named figures. With `--runs K` every
//! scenario is repeated and each figure is reported as median and min–max,
//! because a single run on a shared 2-core machine is an anecdote.
//!
//! Every chatd gets the same extra flags (`--chatd-arg`, repeatable, and
//! `CHATLOAD_CHATD_ARGS`), so the suite can run side by side with and
//! without, say, `--db`; with `--scrape-ms N` each one also serves metrics
//! on a free port, scraped every N ms during every session, so a figure
//! can be compared with and without a Prometheus watching.

use std::path::Path;
use std::time::Duration;

use super::args::Options;
use super::scenario::{self, SessionReport};
use crate::chatd::{self, Chatd};
use crate::metrics::ScrapeStats;
use crate::procstat;
use crate::report::{self, Obj};
use crate::stats;

/// One figure of one scenario, across runs.
#[derive(Debug, Clone)]
struct Figure {
    scenario: &'static str,
    metric: &'static str,
    /// How values print.
    unit: Unit,
    values: Vec<f64>,
    /// The chatd target it is compared with.
    target: &'static str,
}

#[derive(Debug, Clone, Copy)]
enum Unit {
    Seconds,
    Bytes,
    PerSecond,
    Ms,
    Percent,
    Plain,
}

impl Unit {
    fn show(self, v: f64) -> String {
        match self {
            Unit::Seconds => format!("{v:.2} s"),
            Unit::Bytes => report::bytes(v),
            Unit::PerSecond => format!("{}/s", report::si(v)),
            Unit::Ms => format!("{v:.2} ms"),
            Unit::Percent => format!("{v:.2} %"),
            Unit::Plain => format!("{v:.3}"),
        }
    }
}

/// Sizes of the scenarios; `--quick` shrinks them to a seconds-long smoke.
#[derive(Debug, Clone, Copy)]
struct Scale {
    big: usize,
    idle: usize,
    ladder_clients: usize,
    ladder_start: f64,
    ladder_step: f64,
    ladder_factor: f64,
    cpu_secs: f64,
    latency_secs: f64,
    slow_secs: f64,
}

const FULL: Scale = Scale {
    big: 10_000,
    idle: 1_000,
    ladder_clients: 1_000,
    ladder_start: 300.0,
    ladder_step: 2.0,
    ladder_factor: 1.5,
    cpu_secs: 10.0,
    latency_secs: 5.0,
    slow_secs: 8.0,
};

const QUICK: Scale = Scale {
    big: 1_000,
    idle: 200,
    ladder_clients: 200,
    ladder_start: 500.0,
    ladder_step: 0.5,
    ladder_factor: 2.0,
    cpu_secs: 1.0,
    latency_secs: 1.0,
    slow_secs: 1.5,
};

/// Options every scenario starts from: quiet sessions with short grace.
fn base(o: &Options) -> Options {
    Options {
        quiet: true,
        json: false,
        check: false,
        ladder: false,
        slow: 0,
        grace: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(60),
        register_timeout: Duration::from_secs(30),
        ..o.clone()
    }
}

/// Starts a fresh chatd and runs one session of `scenario` against it; its
/// problems go to `problems` (see [`note`]). Returns the session's report
/// and how many the server cut as too slow.
fn session(
    path: &Path,
    o: &Options,
    scenario: &str,
    problems: &mut Vec<String>,
) -> Result<(SessionReport, usize), String> {
    let server = Chatd::start(path, o.chatd_flags())?;
    let view = scenario::started_view(&server, o);
    if o.scrape_every.is_some() && view.metrics.is_none() {
        return Err("chatd logged no `metrics listening on ADDR` line".into());
    }
    let rep = scenario::run_session(o, server.addr, &view);
    let kicked = server.too_slow_count();
    server.stop();
    note(problems, scenario, &rep);
    Ok((rep, kicked))
}

/// The `suite` subcommand.
pub fn run_suite(o: &Options) -> u8 {
    procstat::raise_nofile_limit();
    let path = match chatd::locate(o.chatd.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chatload: {e}");
            return 2;
        }
    };
    let scale = if o.quick { QUICK } else { FULL };
    let mut figures: Vec<Figure> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let flags = o.chatd_flags().join(" ");
    for run in 0..o.runs {
        eprintln!(
            "chatload: suite run {}/{} against {} {flags}{}",
            run + 1,
            o.runs,
            path.display(),
            o.scrape_every
                .map(|d| format!(", scraping /metrics every {} ms", d.as_millis()))
                .unwrap_or_default()
        );
        if let Err(e) = suite_run(&path, o, scale, &mut figures, &mut problems) {
            eprintln!("chatload: suite aborted: {e}");
            return 2;
        }
    }
    let rows: Vec<Vec<String>> = figures
        .iter()
        .map(|f| {
            let (med, lo, hi) = stats::spread(&f.values).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
            vec![
                f.scenario.to_string(),
                f.metric.to_string(),
                f.unit.show(med),
                if f.values.len() > 1 {
                    format!("{} – {}", f.unit.show(lo), f.unit.show(hi))
                } else {
                    String::new()
                },
                f.target.to_string(),
            ]
        })
        .collect();
    if o.json {
        let items = figures.iter().map(|f| {
            let (med, lo, hi) = stats::spread(&f.values).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
            Obj::new()
                .str("scenario", f.scenario)
                .str("metric", f.metric)
                .raw(
                    "values",
                    &report::array(f.values.iter().map(|v| report::number(*v))),
                )
                .num("median", med)
                .num("min", lo)
                .num("max", hi)
                .str("target", f.target)
                .finish()
        });
        let problems_json = report::array(problems.iter().map(|p| report::string(p)));
        println!(
            "{}",
            Obj::new()
                .str("mode", "suite")
                .str("chatd_flags", &flags)
                .num(
                    "scrape_ms",
                    o.scrape_every.map_or(f64::NAN, |d| d.as_millis() as f64)
                )
                .bool("quick", o.quick)
                .int("runs", o.runs as u64)
                .raw("figures", &report::array(items))
                .raw("problems", &problems_json)
                .finish()
        );
    } else {
        print!(
            "{}",
            report::table(
                &["scenario", "metric", "median", "min – max", "chatd target"],
                &rows
            )
        );
        for p in &problems {
            println!("note: {p}");
        }
    }
    0
}

/// Appends `v` to the figure named (scenario, metric), creating it.
fn put(
    figures: &mut Vec<Figure>,
    scenario: &'static str,
    metric: &'static str,
    unit: Unit,
    target: &'static str,
    v: f64,
) {
    if let Some(f) = figures
        .iter_mut()
        .find(|f| f.scenario == scenario && f.metric == metric)
    {
        f.values.push(v);
    } else {
        figures.push(Figure {
            scenario,
            metric,
            unit,
            values: vec![v],
            target,
        });
    }
}

/// Records a session's problems, labelled with its scenario, and what its
/// scrapes did (failed ones are problems too).
fn note(problems: &mut Vec<String>, scenario: &str, rep: &SessionReport) {
    for p in &rep.problems {
        problems.push(format!("{scenario}: {p}"));
    }
    if let Some(ScrapeStats {
        ok,
        failed,
        first_error,
        max_s,
        ..
    }) = &rep.scrapes
    {
        problems.push(format!(
            "{scenario}: {ok} scrapes of /metrics, slowest {:.2} ms{}",
            max_s * 1000.0,
            if *failed > 0 {
                format!(
                    "; {failed} failed ({})",
                    first_error.as_deref().unwrap_or("?")
                )
            } else {
                String::new()
            }
        ));
    }
}

fn progress(line: String) {
    eprintln!("chatload: {line}");
}

/// One pass over the seven scenarios.
fn suite_run(
    path: &Path,
    o: &Options,
    s: Scale,
    figures: &mut Vec<Figure>,
    problems: &mut Vec<String>,
) -> Result<(), String> {
    let b = base(o);
    let wanted =
        |n: u32| o.only.is_empty() || o.only.contains(&n) || (n == 1 && o.only.contains(&6));

    // 1 and 6: connect the big room until one broadcast reaches everyone.
    if wanted(1) {
        let sc1 = "1 connect big room";
        let opts = Options {
            clients: s.big,
            duration: Duration::ZERO,
            ..b.clone()
        };
        let (rep, _) = session(path, &opts, sc1, problems)?;
        let rss = rep
            .server
            .as_ref()
            .map_or(f64::NAN, |c| c.connected.rss as f64);
        put(
            figures,
            sc1,
            "time until broadcast reaches all",
            Unit::Seconds,
            "<= 5 s",
            rep.time_to_all_s(),
        );
        put(
            figures,
            sc1,
            "server RSS, room full",
            Unit::Bytes,
            "<= 40 MB",
            rss,
        );
        put(
            figures,
            "6 connect rate",
            "connects/s",
            Unit::PerSecond,
            ">= 20k/s",
            rep.connect.rate,
        );
        progress(format!(
            "{sc1}: {} clients, all reached after {:.2}s, RSS {}, {} conn/s",
            s.big,
            rep.time_to_all_s(),
            report::bytes(rss),
            report::si(rep.connect.rate)
        ));
    }

    // 2: memory per idle connection.
    if wanted(2) {
        let sc2 = "2 idle connections";
        let opts = Options {
            clients: s.idle,
            duration: Duration::ZERO,
            ..b.clone()
        };
        let (rep, _) = session(path, &opts, sc2, problems)?;
        let per = rep.server.as_ref().map_or(f64::NAN, |c| c.rss_per_conn);
        put(
            figures,
            sc2,
            "server RSS per idle connection",
            Unit::Bytes,
            "<= 2 KiB",
            per,
        );
        progress(format!("{sc2}: {} per connection", report::bytes(per)));
    }

    // 3: the rate ladder.
    if wanted(3) {
        let sc3 = "3 ladder";
        let opts = Options {
            clients: s.ladder_clients,
            senders: 10,
            rate: s.ladder_start,
            ladder: true,
            ladder_factor: s.ladder_factor,
            duration: Duration::from_secs_f64(s.ladder_step),
            grace: Duration::from_secs(1),
            p99_bound: Duration::from_millis(100),
            ..b.clone()
        };
        let (rep, _) = session(path, &opts, sc3, problems)?;
        if rep.ladder_capped {
            problems.push(format!(
                "{sc3}: no step failed within {} steps; the figure is a lower bound",
                opts.ladder_max_steps
            ));
        }
        let (dps, p99) = rep
            .saturation
            .map(|i| (rep.steps[i].deliveries_per_s, rep.steps[i].p99_ms))
            .unwrap_or((f64::NAN, f64::NAN));
        put(
            figures,
            sc3,
            "deliveries/s before p99 > 100 ms",
            Unit::PerSecond,
            ">= 2M/s",
            dps,
        );
        put(figures, sc3, "p99 at that rate", Unit::Ms, "<= 50 ms", p99);
        progress(format!(
            "{sc3}: {} deliveries/s at p99 {p99:.2} ms ({} steps)",
            report::si(dps),
            rep.steps.len()
        ));
    }

    // 4: CPU per delivery.
    if wanted(4) {
        let sc4 = "4 CPU per delivery";
        let opts = Options {
            clients: s.idle,
            senders: 10,
            rate: 200.0,
            duration: Duration::from_secs_f64(s.cpu_secs),
            ..b.clone()
        };
        let (rep, _) = session(path, &opts, sc4, problems)?;
        let cpu = rep
            .server
            .as_ref()
            .map_or(f64::NAN, |c| c.cpu_s_per_million);
        put(
            figures,
            sc4,
            "server CPU-s per million deliveries",
            Unit::Plain,
            "<= 1.0",
            cpu,
        );
        progress(format!("{sc4}: {cpu:.3} CPU-s per million deliveries"));
    }

    // 5: latency at a moderate rate.
    if wanted(5) {
        let sc5 = "5 latency 100 x 1000/s";
        let opts = Options {
            clients: 100,
            senders: 10,
            rate: 1000.0,
            duration: Duration::from_secs_f64(s.latency_secs),
            ..b.clone()
        };
        let (rep, _) = session(path, &opts, sc5, problems)?;
        let (p50, p99) = rep
            .steps
            .first()
            .map_or((f64::NAN, f64::NAN), |st| (st.p50_ms, st.p99_ms));
        put(figures, sc5, "p50", Unit::Ms, "<= 0.5 ms", p50);
        put(figures, sc5, "p99", Unit::Ms, "<= 3 ms", p99);
        progress(format!("{sc5}: p50 {p50:.2} ms, p99 {p99:.2} ms"));
    }

    // 7: one client that never reads must not hurt the others.
    if wanted(7) {
        let sc7 = "7 slow reader";
        let opts = Options {
            clients: 100,
            senders: 10,
            rate: 500.0,
            payload: 1024,
            duration: Duration::from_secs_f64(s.slow_secs),
            ..b.clone()
        };
        let (clean, _) = session(path, &opts, sc7, problems)?;
        let (slowed, kicked) = session(path, &Options { slow: 1, ..opts }, sc7, problems)?;
        let clean_p99 = clean.steps.first().map_or(f64::NAN, |st| st.p99_ms);
        let (delivered, slow_p99) = slowed.steps.first().map_or((f64::NAN, f64::NAN), |st| {
            (100.0 * st.delivered_fraction(), st.p99_ms)
        });
        let growth = slowed.server.as_ref().map_or(f64::NAN, |c| c.rss_growth);
        put(
            figures,
            sc7,
            "delivered to readers",
            Unit::Percent,
            "100 %",
            delivered,
        );
        put(
            figures,
            sc7,
            "p99 without the non-reader",
            Unit::Ms,
            "",
            clean_p99,
        );
        put(
            figures,
            sc7,
            "p99 with the non-reader",
            Unit::Ms,
            "within 20 %",
            slow_p99,
        );
        put(
            figures,
            sc7,
            "p99 ratio with / without",
            Unit::Plain,
            "<= 1.2",
            slow_p99 / clean_p99,
        );
        put(
            figures,
            sc7,
            "server RSS growth during run",
            Unit::Bytes,
            "flat",
            growth,
        );
        put(
            figures,
            sc7,
            "non-reader cut off as too slow",
            Unit::Plain,
            "1",
            kicked as f64,
        );
        progress(format!(
            "{sc7}: readers got {delivered:.3}%, p99 {slow_p99:.2} ms vs {clean_p99:.2} ms, \
             RSS growth {}, too-slow kicks {kicked}",
            report::bytes(growth)
        ));
    }
    Ok(())
}

/// What a smoke run found: [`smoke`] measures, the caller decides how to
/// show it (`chatload smoke` prints it, `tests/chatload_smoke.rs` asserts).
#[derive(Debug)]
pub struct Smoke {
    opts: Options,
    report: SessionReport,
    clean_exit: bool,
    log_tail: String,
}

impl Smoke {
    /// Every expected delivery arrived, once, in order, nothing was refused
    /// or lost, and chatd exited 0 on SIGTERM.
    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }

    /// Why the run is not a pass (empty when it is).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.report.problems.clone();
        if !self.clean_exit {
            problems.push(format!(
                "chatd did not exit 0 on SIGTERM; last log lines:\n{}",
                self.log_tail
            ));
        }
        problems
    }

    /// The session as text (the table `chatload smoke` prints, ending with
    /// `check: PASS` or `check: FAIL`).
    pub fn text(&self) -> String {
        scenario::session_text(&self.opts, &self.report)
    }

    /// The session as one JSON object.
    pub fn json(&self) -> String {
        scenario::session_json(&self.opts, &self.report)
    }
}

/// A few seconds of fan-out against a fresh chatd at `path` (50 clients,
/// 5 senders, 200 lines/s for 2 s) with every delivery checked. `o` gives
/// the output options (`quiet` silences progress); the sizes are fixed.
/// Bounded: every phase has a deadline (well under a minute in all). An
/// error means chatd could not be started.
pub fn smoke(path: &Path, o: &Options) -> Result<Smoke, String> {
    let opts = Options {
        clients: 50,
        senders: 5,
        rate: 200.0,
        duration: Duration::from_secs(2),
        grace: Duration::from_secs(3),
        connect_timeout: Duration::from_secs(10),
        register_timeout: Duration::from_secs(10),
        check: true,
        ladder: false,
        slow: 0,
        ..o.clone()
    };
    procstat::raise_nofile_limit();
    let server = Chatd::start(path, opts.chatd_flags())?;
    let view = scenario::started_view(&server, &opts);
    let report = scenario::run_session(&opts, server.addr, &view);
    let log_tail = server.log_tail();
    let clean_exit = server.stop();
    Ok(Smoke {
        opts,
        report,
        clean_exit,
        log_tail,
    })
}

/// The `smoke` subcommand: [`smoke`] against the chatd next to this
/// executable (or `--chatd`). Exit status 0 only if it passed.
pub fn run_smoke(o: &Options) -> u8 {
    let run = chatd::locate(o.chatd.as_deref()).and_then(|path| smoke(&path, o));
    let smoke = match run {
        Ok(smoke) => smoke,
        Err(e) => {
            eprintln!("chatload: {e}");
            return 2;
        }
    };
    if o.json {
        println!("{}", smoke.json());
    } else {
        print!("{}", smoke.text());
    }
    let problems = smoke.problems();
    for p in &problems {
        eprintln!("chatload: FAIL: {p}");
    }
    if problems.is_empty() { 0 } else { 1 }
}
