//! chatstress: bounded stress and soak scenarios for chatd (see LIMITS.md).
//!
//! ```text
//! chatstress capacity [--clients 19000] [--per-process 9500] [--idle-secs 10]
//! chatstress slow     [--non-readers 1000] [--readers 50] [--secs 20] [--line-bytes 1024]
//!                     [--max-outbound 262144] [--reader-rcvbuf BYTES]
//! chatstress flood    [--observers 20] [--mb 100] [--secs 20] [--line-bytes 1024]
//!                     [--flood-rate N] [--p99-ms 50]
//! chatstress soak     [--clients 1000] [--duration 60] [--chat-ms 5000] [--rename-ms 20000]
//!                     [--lifetime-ms 20000] [--offline-ms 2000] [--seed N]
//! common: [--chatd PATH]  (default: the chatd next to this executable)
//! ```
//!
//! Each starts its own chatd on 127.0.0.1 port 0, prints its figures and
//! exits 1 if a check failed, 2 on a usage error.

#[path = "../stress/mod.rs"]
mod stress;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: chatstress capacity|slow|flood|soak [options] (see LIMITS.md)";

fn main() -> ExitCode {
    match run() {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(failure)) => {
            eprintln!("chatstress: FAILED: {failure}");
            ExitCode::FAILURE
        }
        Err(usage) => {
            eprintln!("chatstress: {usage}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<stress::Outcome, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let scenario: String = match parser.next()? {
        Some(Value(v)) => v.string()?,
        Some(Long("help")) | Some(Short('h')) | None => {
            println!("{USAGE}");
            return Ok(Ok(()));
        }
        Some(other) => return Err(other.unexpected()),
    };
    let mut chatd = stress::default_chatd();
    let mut num: std::collections::HashMap<String, u64> = Default::default();
    let mut addr: Option<SocketAddr> = None;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("chatd") => chatd = PathBuf::from(parser.value()?),
            Long("addr") => addr = Some(parser.value()?.parse()?),
            Long(name) => {
                let name = name.to_string();
                let value: u64 = parser.value()?.parse()?;
                num.insert(name, value);
            }
            other => return Err(other.unexpected()),
        }
    }
    let get = |name: &str, default: u64| num.get(name).copied().unwrap_or(default);
    let ms = |name: &str, default: u64| Duration::from_millis(get(name, default));
    let known: &[&str] = match scenario.as_str() {
        "capacity" => &["clients", "per-process", "idle-secs"],
        "capacity-child" => &["count"],
        "slow" => &[
            "non-readers",
            "readers",
            "secs",
            "line-bytes",
            "max-outbound",
            "reader-rcvbuf",
        ],
        "flood" => &[
            "observers",
            "mb",
            "secs",
            "line-bytes",
            "flood-rate",
            "p99-ms",
        ],
        "soak" => &[
            "clients",
            "duration",
            "chat-ms",
            "rename-ms",
            "lifetime-ms",
            "offline-ms",
            "seed",
        ],
        other => return Err(format!("unknown scenario {other:?}").into()),
    };
    if let Some(bad) = num.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("--{bad} is not an option of {scenario}").into());
    }
    Ok(match scenario.as_str() {
        "capacity" => stress::capacity::run(stress::capacity::Options {
            chatd,
            clients: get("clients", 19_000) as usize,
            per_process: get("per-process", 9_500).clamp(1, 19_000) as usize,
            idle_secs: get("idle-secs", 10),
        }),
        "capacity-child" => {
            let addr = addr.ok_or("capacity-child needs --addr")?;
            stress::capacity::child(addr, get("count", 1) as usize)
        }
        "slow" => stress::slow::run(stress::slow::Options {
            chatd,
            non_readers: get("non-readers", 1000) as usize,
            readers: get("readers", 50) as usize,
            secs: get("secs", 20),
            line_bytes: get("line-bytes", 1024).max(32) as usize,
            max_outbound: get("max-outbound", 262_144) as usize,
            reader_rcvbuf: num.get("reader-rcvbuf").map(|&b| b as usize),
        }),
        "flood" => stress::flood::run(stress::flood::Options {
            chatd,
            observers: get("observers", 20) as usize,
            bytes: get("mb", 100) * 1_000_000,
            secs: get("secs", 20),
            line_bytes: get("line-bytes", 1024).max(32) as usize,
            flood_rate: num.get("flood-rate").map(|&r| r as u32),
            p99_limit: ms("p99-ms", 50),
        }),
        "soak" => stress::soak::run(stress::soak::Options {
            chatd,
            clients: get("clients", 1000) as usize,
            duration: Duration::from_secs(get("duration", 60)),
            chat_every: ms("chat-ms", 5_000),
            rename_every: ms("rename-ms", 20_000),
            lifetime: ms("lifetime-ms", 20_000),
            offline: ms("offline-ms", 2_000),
            seed: get("seed", 42),
        }),
        _ => unreachable!(),
    })
}
