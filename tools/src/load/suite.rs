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
//!
//! `suite --tls` runs the TLS set instead: each scenario twice in a row,
//! plain then TLS, against chatds started alike (both with a TLS listener
//! and a self-signed certificate made for the suite), so the two columns
//! come from the same minute of the same machine.

use std::path::Path;
use std::time::Duration;

use super::args::Options;
use super::scenario::{self, SessionReport};
use crate::chatd;
use crate::metrics::ScrapeStats;
use crate::procstat;
use crate::report::{self, Obj};
use crate::stats;
use crate::tls::TestCert;

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
pub(super) enum Unit {
    Seconds,
    Bytes,
    PerSecond,
    Ms,
    Percent,
    Micros,
    Plain,
    /// A whole count.
    Count,
}

impl Unit {
    pub(super) fn show(self, v: f64) -> String {
        if !v.is_finite() {
            return "-".into();
        }
        match self {
            Unit::Seconds => format!("{v:.2} s"),
            Unit::Bytes => report::bytes(v),
            Unit::PerSecond => format!("{}/s", report::si(v)),
            Unit::Ms => format!("{v:.2} ms"),
            Unit::Percent => format!("{v:.2} %"),
            Unit::Micros => format!("{v:.1} µs"),
            Unit::Plain => format!("{v:.3}"),
            Unit::Count => format!("{v:.0}"),
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

/// Sizes of the TLS set; `--quick` shrinks them too.
#[derive(Debug, Clone, Copy)]
struct TlsScale {
    big: usize,
    rate_clients: usize,
    idle: usize,
    ladder_clients: usize,
    ladder_start: f64,
    ladder_step: f64,
    ladder_factor: f64,
    ladder_steps: usize,
    cost_rate: f64,
    cost_secs: f64,
    storm: usize,
    storm_secs: f64,
    storm_after: f64,
}

const TLS_FULL: TlsScale = TlsScale {
    big: 10_000,
    rate_clients: 3_000,
    idle: 1_000,
    ladder_clients: 1_000,
    ladder_start: 500.0,
    ladder_step: 2.0,
    ladder_factor: 1.3,
    // Retries count as steps.
    ladder_steps: 18,
    cost_rate: 1_000.0,
    cost_secs: 3.0,
    storm: 1_000,
    storm_secs: 5.0,
    storm_after: 1.5,
};

const TLS_QUICK: TlsScale = TlsScale {
    big: 1_000,
    rate_clients: 500,
    idle: 200,
    ladder_clients: 200,
    ladder_start: 500.0,
    ladder_step: 0.5,
    ladder_factor: 2.0,
    ladder_steps: 12,
    cost_rate: 500.0,
    cost_secs: 1.0,
    storm: 200,
    storm_secs: 1.5,
    storm_after: 0.5,
};

/// The ladder's p99 bound in the TLS set, for plain and TLS alike: the
/// TLS target is a rate with p99 ≤ 50 ms.
const TLS_LADDER_P99: Duration = Duration::from_millis(50);
/// Retries of a bad ladder step in the TLS set: p99 at 1,000 recipients
/// crosses 50 ms now and then at any rate on a shared machine, and the two
/// ladders are compared, so neither should end on one unlucky step.
const TLS_LADDER_RETRIES: u32 = 2;

/// Options every scenario starts from: quiet sessions with short grace.
pub(super) fn base(o: &Options) -> Options {
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

/// Starts a fresh chatd (with a TLS listener when given a certificate) and
/// runs one session of `scenario` against it; its problems go to
/// `problems` (see [`note`]). Returns the session's report and how many the
/// server cut as too slow.
fn session(
    path: &Path,
    o: &Options,
    cert: Option<&TestCert>,
    scenario: &str,
    problems: &mut Vec<String>,
) -> Result<(SessionReport, usize), String> {
    let (server, target) = scenario::start_chatd(path, o, cert)?;
    let view = scenario::started_view(&server, o);
    if o.scrape_every.is_some() && view.metrics.is_none() {
        return Err("chatd logged no `metrics listening on ADDR` line".into());
    }
    let rep = scenario::run_session(o, &target, &view);
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
    if !o.cluster.is_empty() {
        return super::cluster::run(&path, o);
    }
    let scale = if o.quick { QUICK } else { FULL };
    let tls_scale = if o.quick { TLS_QUICK } else { TLS_FULL };
    // One certificate for every chatd of the TLS set, removed at the end.
    let cert = if o.tls {
        match TestCert::generate() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("chatload: {e}");
                return 2;
            }
        }
    } else {
        None
    };
    let mut figures: Vec<Figure> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let flags = o.chatd_flags().join(" ");
    for run in 0..o.runs {
        eprintln!(
            "chatload: {}suite run {}/{} against {} {flags}{}",
            if o.tls { "TLS " } else { "" },
            run + 1,
            o.runs,
            path.display(),
            o.scrape_every
                .map(|d| format!(", scraping /metrics every {} ms", d.as_millis()))
                .unwrap_or_default()
        );
        let done = match &cert {
            Some(cert) => tls_suite_run(&path, o, tls_scale, cert, &mut figures, &mut problems),
            None => suite_run(&path, o, scale, &mut figures, &mut problems),
        };
        if let Err(e) = done {
            eprintln!("chatload: suite aborted: {e}");
            return 2;
        }
    }
    if o.tls {
        // T1 and T2 come from the same sessions, plain then TLS: group the
        // rows by scenario (the sort is stable, so plain stays first).
        figures.sort_by_key(|f| f.scenario);
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
                .str("mode", if o.tls { "suite-tls" } else { "suite" })
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
pub(super) fn note(problems: &mut Vec<String>, scenario: &str, rep: &SessionReport) {
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

pub(super) fn progress(line: String) {
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
        let (rep, _) = session(path, &opts, None, sc1, problems)?;
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
        let (rep, _) = session(path, &opts, None, sc2, problems)?;
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
        let (rep, _) = session(path, &opts, None, sc3, problems)?;
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
        let (rep, _) = session(path, &opts, None, sc4, problems)?;
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
        let (rep, _) = session(path, &opts, None, sc5, problems)?;
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
        let (clean, _) = session(path, &opts, None, sc7, problems)?;
        let (slowed, kicked) = session(path, &Options { slow: 1, ..opts }, None, sc7, problems)?;
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

/// `plain` or `tls`, as the session is.
fn pick(tls: bool, plain: &'static str, tls_name: &'static str) -> &'static str {
    if tls { tls_name } else { plain }
}

/// One pass over the TLS set: every scenario plain, then TLS.
fn tls_suite_run(
    path: &Path,
    o: &Options,
    s: TlsScale,
    cert: &TestCert,
    figures: &mut Vec<Figure>,
    problems: &mut Vec<String>,
) -> Result<(), String> {
    let b = Options {
        tls: false,
        storm: 0,
        ..base(o)
    };
    let wanted = |n: u32| o.only.is_empty() || o.only.contains(&n);
    let label = |tls: bool| pick(tls, "plain", "TLS");

    // 1: connect the big room until one broadcast reaches everyone.
    if wanted(1) {
        let sc1 = "T1 connect big room";
        for tls in [false, true] {
            let opts = Options {
                clients: s.big,
                duration: Duration::ZERO,
                tls,
                ..b.clone()
            };
            let (rep, _) = session(
                path,
                &opts,
                Some(cert),
                pick(tls, "T1 plain", "T1 TLS"),
                problems,
            )?;
            let rss = rep
                .server
                .as_ref()
                .map_or(f64::NAN, |c| c.connected.rss as f64);
            let per = rep.server.as_ref().map_or(f64::NAN, |c| c.rss_per_conn);
            let time = rep.time_to_all_s();
            let (time_name, time_target, rss_name, per_name) = if tls {
                (
                    "TLS: time until broadcast reaches all",
                    "<= 10 s",
                    "TLS: server RSS, room full",
                    "TLS: server RSS per connection, room full",
                )
            } else {
                (
                    "plain: time until broadcast reaches all",
                    "<= 5 s",
                    "plain: server RSS, room full",
                    "plain: server RSS per connection, room full",
                )
            };
            put(figures, sc1, time_name, Unit::Seconds, time_target, time);
            put(figures, sc1, rss_name, Unit::Bytes, "", rss);
            put(figures, sc1, per_name, Unit::Bytes, "", per);
            put(
                figures,
                sc1,
                pick(
                    tls,
                    "plain: connects/s meanwhile",
                    "TLS: handshakes/s meanwhile",
                ),
                Unit::PerSecond,
                "",
                rep.connect.rate,
            );
            progress(format!(
                "T1 {}: {} clients, all reached after {time:.2}s, RSS {} ({} per connection), \
                 {} conn/s",
                label(tls),
                s.big,
                report::bytes(rss),
                report::bytes(per),
                report::si(rep.connect.rate)
            ));
        }
    }

    // 2: connects (handshakes) per second, and the server's CPU for each.
    if wanted(2) {
        let sc2 = "T2 connect rate";
        let mut plain_us = f64::NAN;
        for tls in [false, true] {
            let opts = Options {
                clients: s.rate_clients,
                duration: Duration::ZERO,
                tls,
                ..b.clone()
            };
            let (rep, _) = session(
                path,
                &opts,
                Some(cert),
                pick(tls, "T2 plain", "T2 TLS"),
                problems,
            )?;
            let (us, busy) = rep.server.as_ref().map_or((f64::NAN, f64::NAN), |c| {
                (c.connect_cpu_us, c.connect_busy_pct)
            });
            let (rate, tool) = (rep.connect.rate, rep.connect.tool_cpu_pct);
            put(
                figures,
                sc2,
                pick(tls, "plain: connects/s", "TLS: handshakes/s"),
                Unit::PerSecond,
                "",
                rate,
            );
            put(
                figures,
                sc2,
                pick(
                    tls,
                    "plain: server CPU per connect",
                    "TLS: server CPU per handshake",
                ),
                Unit::Micros,
                "",
                us,
            );
            put(
                figures,
                sc2,
                pick(
                    tls,
                    "plain: server busy meanwhile",
                    "TLS: server busy meanwhile",
                ),
                Unit::Percent,
                "",
                busy,
            );
            put(
                figures,
                sc2,
                pick(
                    tls,
                    "plain: chatload busy meanwhile",
                    "TLS: chatload busy meanwhile",
                ),
                Unit::Percent,
                "",
                tool,
            );
            if tls {
                put(
                    figures,
                    sc2,
                    "TLS: handshakes/s one server core can do",
                    Unit::PerSecond,
                    "",
                    1e6 / us,
                );
                put(
                    figures,
                    sc2,
                    "TLS: the handshake alone (TLS - plain)",
                    Unit::Micros,
                    "",
                    us - plain_us,
                );
            } else {
                plain_us = us;
            }
            progress(format!(
                "T2 {}: {} connects at {} /s, server {us:.1} µs CPU each ({busy:.0} % busy), \
                 chatload {tool:.0} % busy",
                label(tls),
                s.rate_clients,
                report::si(rate)
            ));
        }
    }

    // 3: memory per idle connection.
    if wanted(3) {
        let sc3 = "T3 idle connections";
        let mut plain_per = f64::NAN;
        for tls in [false, true] {
            let opts = Options {
                clients: s.idle,
                duration: Duration::ZERO,
                tls,
                ..b.clone()
            };
            let (rep, _) = session(
                path,
                &opts,
                Some(cert),
                if tls { "T3 TLS" } else { "T3 plain" },
                problems,
            )?;
            let per = rep.server.as_ref().map_or(f64::NAN, |c| c.rss_per_conn);
            if tls {
                put(
                    figures,
                    sc3,
                    "TLS: server RSS per idle connection",
                    Unit::Bytes,
                    "<= 8 KiB",
                    per,
                );
                put(
                    figures,
                    sc3,
                    "TLS - plain per idle connection",
                    Unit::Bytes,
                    "",
                    per - plain_per,
                );
            } else {
                plain_per = per;
                put(
                    figures,
                    sc3,
                    "plain: server RSS per idle connection",
                    Unit::Bytes,
                    "<= 2 KiB",
                    per,
                );
            }
            progress(format!(
                "T3 {}: {} per connection",
                label(tls),
                report::bytes(per)
            ));
        }
    }

    // 4: the rate ladder, p99 bound 50 ms for both.
    if wanted(4) {
        let sc4 = "T4 ladder";
        let mut plain_dps = f64::NAN;
        for tls in [false, true] {
            let opts = Options {
                clients: s.ladder_clients,
                senders: 10,
                rate: s.ladder_start,
                ladder: true,
                ladder_factor: s.ladder_factor,
                ladder_max_steps: s.ladder_steps,
                ladder_retries: TLS_LADDER_RETRIES,
                duration: Duration::from_secs_f64(s.ladder_step),
                grace: Duration::from_secs(1),
                p99_bound: TLS_LADDER_P99,
                tls,
                ..b.clone()
            };
            let name = if tls { "T4 TLS" } else { "T4 plain" };
            let (rep, _) = session(path, &opts, Some(cert), name, problems)?;
            if rep.ladder_capped {
                problems.push(format!(
                    "{name}: no step failed within {} steps; the figure is a lower bound",
                    opts.ladder_max_steps
                ));
            }
            let (dps, p99, tool) = rep
                .saturation
                .map(|i| {
                    let st = &rep.steps[i];
                    (st.deliveries_per_s, st.p99_ms, st.tool_cpu_pct)
                })
                .unwrap_or((f64::NAN, f64::NAN, f64::NAN));
            if tls {
                put(
                    figures,
                    sc4,
                    "TLS: deliveries/s with p99 <= 50 ms",
                    Unit::PerSecond,
                    "",
                    dps,
                );
                put(
                    figures,
                    sc4,
                    "TLS: p99 at that rate",
                    Unit::Ms,
                    "<= 50 ms",
                    p99,
                );
                put(
                    figures,
                    sc4,
                    "TLS: chatload CPU at that rate",
                    Unit::Percent,
                    "",
                    tool,
                );
                put(
                    figures,
                    sc4,
                    "TLS / plain deliveries/s",
                    Unit::Plain,
                    ">= 0.5",
                    dps / plain_dps,
                );
            } else {
                plain_dps = dps;
                put(
                    figures,
                    sc4,
                    "plain: deliveries/s with p99 <= 50 ms",
                    Unit::PerSecond,
                    "",
                    dps,
                );
                put(figures, sc4, "plain: p99 at that rate", Unit::Ms, "", p99);
                put(
                    figures,
                    sc4,
                    "plain: chatload CPU at that rate",
                    Unit::Percent,
                    "",
                    tool,
                );
            }
            progress(format!(
                "T4 {}: {} deliveries/s at p99 {p99:.2} ms ({} steps, chatload {tool:.0} % CPU)",
                label(tls),
                report::si(dps),
                rep.steps.len()
            ));
        }
        // What the ladder's end says is noisy at 1,000 recipients on a
        // shared machine; what a delivery costs the server is not: the same
        // fixed rate, plain then TLS, and chatd's CPU per delivery.
        let mut plain_cpu = f64::NAN;
        for tls in [false, true] {
            let opts = Options {
                clients: s.ladder_clients,
                senders: 10,
                rate: s.cost_rate,
                duration: Duration::from_secs_f64(s.cost_secs),
                tls,
                ..b.clone()
            };
            let name = pick(tls, "T4 plain fixed rate", "T4 TLS fixed rate");
            let (rep, _) = session(path, &opts, Some(cert), name, problems)?;
            let cpu = rep
                .server
                .as_ref()
                .map_or(f64::NAN, |c| c.cpu_s_per_million);
            put(
                figures,
                sc4,
                pick(
                    tls,
                    "plain: server CPU-s per million deliveries",
                    "TLS: server CPU-s per million deliveries",
                ),
                Unit::Plain,
                "",
                cpu,
            );
            if tls {
                put(
                    figures,
                    sc4,
                    "TLS / plain server CPU per delivery",
                    Unit::Plain,
                    "<= 2 (>= 50 % server-bound)",
                    cpu / plain_cpu,
                );
            } else {
                plain_cpu = cpu;
            }
            progress(format!(
                "T4 {} at {} lines/s: {cpu:.3} server CPU-s per million deliveries",
                label(tls),
                s.cost_rate
            ));
        }
    }

    // 5: plain chat, without and with a storm of TLS connects.
    if wanted(5) {
        let sc5 = "T5 TLS storm";
        // chatd serves metrics here, for its longest loop iteration.
        let mut chatd_args = b.chatd_args.clone();
        chatd_args.extend(["--metrics".to_string(), "127.0.0.1:0".to_string()]);
        let opts = Options {
            clients: 100,
            senders: 10,
            rate: 200.0,
            duration: Duration::from_secs_f64(s.storm_secs),
            storm_after: Duration::from_secs_f64(s.storm_after),
            chatd_args,
            ..b.clone()
        };
        let (calm, _) = session(path, &opts, Some(cert), "T5 without storm", problems)?;
        let stormy_opts = Options {
            storm: s.storm,
            ..opts
        };
        let (stormy, _) = session(path, &stormy_opts, Some(cert), "T5 with storm", problems)?;
        let pct = |r: &SessionReport| {
            r.steps
                .first()
                .map_or((f64::NAN, f64::NAN, f64::NAN), |st| {
                    (st.p50_ms, st.p99_ms, st.max_ms)
                })
        };
        let (p50, p99, max) = pct(&calm);
        let (sp50, sp99, smax) = pct(&stormy);
        let busy = |r: &SessionReport| {
            r.server
                .as_ref()
                .and_then(|c| c.loop_busy_after_s)
                .map_or(f64::NAN, |s| s * 1000.0)
        };
        put(
            figures,
            sc5,
            "plain p50 without the storm",
            Unit::Ms,
            "",
            p50,
        );
        put(
            figures,
            sc5,
            "plain p99 without the storm",
            Unit::Ms,
            "",
            p99,
        );
        put(
            figures,
            sc5,
            "plain max without the storm",
            Unit::Ms,
            "",
            max,
        );
        put(figures, sc5, "plain p50 with the storm", Unit::Ms, "", sp50);
        put(
            figures,
            sc5,
            "plain p99 with the storm",
            Unit::Ms,
            "< 20 ms",
            sp99,
        );
        put(figures, sc5, "plain max with the storm", Unit::Ms, "", smax);
        put(
            figures,
            sc5,
            "chatd's longest loop turn without the storm",
            Unit::Ms,
            "",
            busy(&calm),
        );
        put(
            figures,
            sc5,
            "chatd's longest loop turn with the storm",
            Unit::Ms,
            "",
            busy(&stormy),
        );
        let (took, failed, us) =
            stormy
                .storm
                .as_ref()
                .map_or((f64::NAN, f64::NAN, f64::NAN), |st| {
                    (
                        st.connect.elapsed_s,
                        st.connect.failed as f64,
                        st.server_cpu_s.map_or(f64::NAN, |cpu| {
                            1e6 * cpu / st.connect.connected.max(1) as f64
                        }),
                    )
                });
        put(
            figures,
            sc5,
            "storm: time until all handshakes done",
            Unit::Seconds,
            "",
            took,
        );
        put(
            figures,
            sc5,
            "storm: TLS connects failed",
            Unit::Plain,
            "0",
            failed,
        );
        put(
            figures,
            sc5,
            "storm: server CPU per handshake, chat included",
            Unit::Micros,
            "",
            us,
        );
        progress(format!(
            "T5: plain p50/p99 {p50:.2}/{p99:.2} ms without, {sp50:.2}/{sp99:.2} ms with \
             {} TLS connects at once (done in {took:.2}s, {failed} failed, {us:.0} µs server CPU each)",
            s.storm
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
/// 5 senders, 200 lines/s for 2 s) with every delivery checked; over TLS
/// with `o.tls` (chatd then gets a TLS listener and a throwaway
/// certificate). `o` gives
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
    let cert = if scenario::needs_tls_listener(&opts) {
        Some(TestCert::generate()?)
    } else {
        None
    };
    let (server, target) = scenario::start_chatd(path, &opts, cert.as_ref())?;
    let view = scenario::started_view(&server, &opts);
    let report = scenario::run_session(&opts, &target, &view);
    let log_tail = server.log_tail();
    let clean_exit = server.stop();
    drop(cert);
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
