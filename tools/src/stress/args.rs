//! `chatstress`'s command line: a scenario, then `--NAME NUMBER` options,
//! each checked against the scenario's own list, and `--chatd PATH`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{capacity, churn, crowd, flood, rooms, slow, soak};

/// Printed for `--help` and after a usage error.
pub const USAGE: &str = "\
usage: chatstress SCENARIO [--chatd PATH] [options]
  capacity  [--clients 19000] [--per-process 9500] [--idle-secs 10]
  slow      [--non-readers 1000] [--readers 50] [--secs 20] [--line-bytes 1024]
            [--max-outbound 262144] [--reader-rcvbuf BYTES]
  flood     [--observers 20] [--mb 100] [--secs 20] [--line-bytes 1024]
            [--flood-rate N] [--p99-ms 50]
  soak      [--clients 1000] [--duration 60] [--chat-ms 5000] [--rename-ms 20000]
            [--lifetime-ms 20000] [--offline-ms 2000] [--seed 42]
  crowd     [--clients 18000] [--per-process 9000] [--line-bytes 4000]
            [--max-outbound-total 268435456] [--no-total-flag] [--after-secs 10]
  churn     [--secs 20] [--idle-timeout 3600] [--in-flight 16]
  rooms     [--clients 10000] [--rooms 100] [--duration 60] [--chat-ms 10000]
            [--move-ms 5000] [--seed 42]
  --chatd PATH   the chatd to start (default: the one next to this executable)

crowd --no-total-flag (also chosen by itself when chatd refuses the flag)
measures a chatd older than --max-outbound-total against the same bounds.

Each scenario starts its own chatd on 127.0.0.1 port 0 (extra flags may be
given in CHATSTRESS_CHATD_ARGS), prints its figures and a line per check,
and exits 1 if a check failed, 2 on a usage error. README.md, \"Limits and
failure behaviour\", explains each scenario and gives its figures.";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Print [`USAGE`].
    Help,
    /// Run a scenario against the chatd at `chatd` (or the one next to
    /// this executable).
    Run {
        /// `--chatd PATH`.
        chatd: Option<PathBuf>,
        /// The scenario and its numbers.
        scenario: Scenario,
    },
    /// The hidden child side of `capacity`: hold `count` connections to
    /// `addr` and obey the parent on stdin.
    CapacityChild {
        /// The chatd under test.
        addr: SocketAddr,
        /// Connections to hold.
        count: usize,
    },
    /// The hidden child side of `crowd`, the same way.
    CrowdChild {
        /// The chatd under test.
        addr: SocketAddr,
        /// Connections to hold.
        count: usize,
    },
}

/// Options that take no value: `--NAME` alone means 1.
const SWITCHES: &[&str] = &["no-total-flag"];

/// A scenario with its options, except the chatd path (resolved later).
#[derive(Debug)]
pub enum Scenario {
    /// `chatstress capacity`.
    Capacity(capacity::Options),
    /// `chatstress slow`.
    Slow(slow::Options),
    /// `chatstress flood`.
    Flood(flood::Options),
    /// `chatstress soak`.
    Soak(soak::Options),
    /// `chatstress crowd`.
    Crowd(crowd::Options),
    /// `chatstress churn`.
    Churn(churn::Options),
    /// `chatstress rooms`.
    Rooms(rooms::Options),
}

/// The `--NAME NUMBER` options given, and the names the scenario knows.
struct Numbers {
    given: HashMap<String, u64>,
}

impl Numbers {
    fn get(&self, name: &str, default: u64) -> u64 {
        self.given.get(name).copied().unwrap_or(default)
    }

    fn usize(&self, name: &str, default: usize) -> Result<usize, String> {
        let v = self.get(name, default as u64);
        usize::try_from(v).map_err(|_| format!("--{name} {v} is too large"))
    }

    fn ms(&self, name: &str, default: u64) -> Duration {
        Duration::from_millis(self.get(name, default))
    }
}

/// Parses `std::env::args`.
pub fn parse() -> Result<Command, String> {
    parse_from(std::env::args_os().skip(1))
}

fn parse_from<I>(args: I) -> Result<Command, String>
where
    I: IntoIterator,
    I::Item: Into<std::ffi::OsString>,
{
    use lexopt::prelude::*;
    let err = |e: lexopt::Error| e.to_string();
    let mut parser = lexopt::Parser::from_args(args);
    let scenario: String = match parser.next().map_err(err)? {
        Some(Value(v)) => v.string().map_err(err)?,
        Some(Long("help")) | Some(Short('h')) | None => return Ok(Command::Help),
        Some(other) => return Err(other.unexpected().to_string()),
    };
    let mut chatd = None;
    let mut addr: Option<SocketAddr> = None;
    let mut given = HashMap::new();
    while let Some(arg) = parser.next().map_err(err)? {
        match arg {
            Long("help") | Short('h') => return Ok(Command::Help),
            Long("chatd") => chatd = Some(PathBuf::from(parser.value().map_err(err)?)),
            Long("addr") => addr = Some(parser.value().map_err(err)?.parse().map_err(err)?),
            Long(name) if SWITCHES.contains(&name) => {
                given.insert(name.to_string(), 1);
            }
            Long(name) => {
                let name = name.to_string();
                let value: u64 = parser.value().map_err(err)?.parse().map_err(err)?;
                given.insert(name, value);
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    let known: &[&str] = match scenario.as_str() {
        "capacity" => &["clients", "per-process", "idle-secs"],
        "capacity-child" | "crowd-child" => &["count"],
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
        "crowd" => &[
            "clients",
            "per-process",
            "line-bytes",
            "max-outbound-total",
            "no-total-flag",
            "after-secs",
        ],
        "churn" => &["secs", "idle-timeout", "in-flight"],
        "rooms" => &["clients", "rooms", "duration", "chat-ms", "move-ms", "seed"],
        other => return Err(format!("unknown scenario {other:?}")),
    };
    if let Some(bad) = given.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(format!("--{bad} is not an option of {scenario}"));
    }
    let n = Numbers { given };
    let scenario = match scenario.as_str() {
        "capacity-child" => {
            return Ok(Command::CapacityChild {
                addr: addr.ok_or("capacity-child needs --addr")?,
                count: n.usize("count", 1)?,
            });
        }
        "crowd-child" => {
            return Ok(Command::CrowdChild {
                addr: addr.ok_or("crowd-child needs --addr")?,
                count: n.usize("count", 1)?,
            });
        }
        "crowd" => Scenario::Crowd(crowd::Options {
            clients: n.usize("clients", 18_000)?.max(1),
            per_process: n.usize("per-process", 9_000)?.clamp(1, 19_000),
            line_bytes: n.usize("line-bytes", 4000)?.max(8),
            max_outbound_total: n.get("max-outbound-total", crowd::DEFAULT_TOTAL),
            no_total_flag: n.given.contains_key("no-total-flag"),
            after_secs: n.get("after-secs", 10),
        }),
        "churn" => Scenario::Churn(churn::Options {
            secs: n.get("secs", 20),
            idle_timeout: n.get("idle-timeout", 3600),
            in_flight: n.usize("in-flight", 16)?.clamp(1, 10_000),
        }),
        "rooms" => Scenario::Rooms(rooms::Options {
            clients: n.usize("clients", 10_000)?.clamp(1, 19_000),
            rooms: n.usize("rooms", 100)?,
            duration: Duration::from_secs(n.get("duration", 60)),
            chat_every: n.ms("chat-ms", 10_000).max(Duration::from_millis(1)),
            move_every: n.ms("move-ms", 5_000).max(Duration::from_millis(1)),
            seed: n.get("seed", 42),
        }),
        "capacity" => Scenario::Capacity(capacity::Options {
            clients: n.usize("clients", 19_000)?.max(1),
            per_process: n.usize("per-process", 9_500)?.clamp(1, 19_000),
            idle_secs: n.get("idle-secs", 10),
        }),
        "slow" => Scenario::Slow(slow::Options {
            non_readers: n.usize("non-readers", 1000)?,
            readers: n.usize("readers", 50)?,
            secs: n.get("secs", 20),
            line_bytes: n.usize("line-bytes", 1024)?.max(32),
            max_outbound: n.usize("max-outbound", 262_144)?,
            reader_rcvbuf: if n.given.contains_key("reader-rcvbuf") {
                Some(n.usize("reader-rcvbuf", 0)?)
            } else {
                None
            },
        }),
        "flood" => Scenario::Flood(flood::Options {
            observers: n.usize("observers", 20)?,
            bytes: n.get("mb", 100).saturating_mul(1_000_000),
            secs: n.get("secs", 20),
            line_bytes: n.usize("line-bytes", 1024)?.max(32),
            flood_rate: match n.given.get("flood-rate") {
                Some(&r) => Some(u32::try_from(r).map_err(|_| "--flood-rate is too large")?),
                None => None,
            },
            p99_limit: n.ms("p99-ms", 50),
        }),
        "soak" => Scenario::Soak(soak::Options {
            clients: n.usize("clients", 1000)?,
            duration: Duration::from_secs(n.get("duration", 60)),
            chat_every: n.ms("chat-ms", 5_000),
            rename_every: n.ms("rename-ms", 20_000),
            lifetime: n.ms("lifetime-ms", 20_000),
            offline: n.ms("offline-ms", 2_000),
            seed: n.get("seed", 42),
        }),
        _ => unreachable!("every name in `known` is handled"),
    };
    Ok(Command::Run { chatd, scenario })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_with_its_options() {
        let Ok(Command::Run { chatd, scenario }) = parse_from([
            "soak",
            "--duration",
            "10",
            "--clients",
            "200",
            "--chatd",
            "x",
        ]) else {
            panic!("soak parses");
        };
        assert_eq!(chatd, Some(PathBuf::from("x")));
        let Scenario::Soak(o) = scenario else {
            panic!("a soak");
        };
        assert_eq!((o.clients, o.duration), (200, Duration::from_secs(10)));
        assert_eq!(o.chat_every, Duration::from_secs(5));
    }

    #[test]
    fn options_of_another_scenario_are_refused() {
        let e = parse_from(["soak", "--mb", "1"]).expect_err("--mb is flood's");
        assert!(e.contains("not an option of soak"), "{e}");
        assert!(parse_from(["bogus"]).is_err());
        assert!(parse_from(["flood", "--mb", "lots"]).is_err());
    }

    #[test]
    fn help_and_the_hidden_child() {
        assert!(matches!(parse_from(["--help"]), Ok(Command::Help)));
        assert!(matches!(
            parse_from(Vec::<String>::new()),
            Ok(Command::Help)
        ));
        assert!(matches!(
            parse_from(["capacity-child", "--addr", "127.0.0.1:1", "--count", "3"]),
            Ok(Command::CapacityChild { count: 3, .. })
        ));
        assert!(parse_from(["capacity-child", "--count", "3"]).is_err());
        assert!(matches!(
            parse_from(["crowd-child", "--addr", "127.0.0.1:1", "--count", "2"]),
            Ok(Command::CrowdChild { count: 2, .. })
        ));
    }

    #[test]
    fn crowd_switch_and_defaults() {
        let Ok(Command::Run {
            scenario: Scenario::Crowd(o),
            ..
        }) = parse_from(["crowd", "--no-total-flag", "--clients", "2000"])
        else {
            panic!("crowd parses");
        };
        assert!(o.no_total_flag);
        assert_eq!((o.clients, o.per_process, o.line_bytes), (2000, 9000, 4000));
        assert_eq!(o.max_outbound_total, 256 << 20);
        let Ok(Command::Run {
            scenario: Scenario::Crowd(o),
            ..
        }) = parse_from(["crowd", "--max-outbound-total", "1000000"])
        else {
            panic!("crowd parses");
        };
        assert!(!o.no_total_flag);
        assert_eq!(o.max_outbound_total, 1_000_000);
        assert!(parse_from(["churn", "--no-total-flag"]).is_err());
    }

    #[test]
    fn churn_and_rooms_defaults() {
        let Ok(Command::Run {
            scenario: Scenario::Churn(o),
            ..
        }) = parse_from(["churn", "--secs", "5"])
        else {
            panic!("churn parses");
        };
        assert_eq!((o.secs, o.idle_timeout), (5, 3600));
        let Ok(Command::Run {
            scenario: Scenario::Rooms(o),
            ..
        }) = parse_from(["rooms", "--clients", "1000", "--rooms", "10"])
        else {
            panic!("rooms parses");
        };
        assert_eq!((o.clients, o.rooms), (1000, 10));
        assert_eq!(o.duration, Duration::from_secs(60));
    }
}
