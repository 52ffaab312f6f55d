//! The `chatd` binary: flags become a [`Config`], logging starts, the
//! server runs. Everything else lives in the library so tests can run the
//! same server in-process.

use chatd::config::{self, Config};
use chatd::iplimit::Exempt;
use chatd::logging::LossyLogger;
use chatd::server::Server;
use log::LevelFilter;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
chatd: a chat room you join with `nc HOST PORT`

Usage: chatd [--listen ADDR]... [--tls-listen ADDR]... [--tls-cert FILE] [--tls-key FILE]
             [--idle-timeout SECS] [--max-line BYTES]
             [--max-clients N] [--max-outbound BYTES] [--max-outbound-total BYTES]
             [--flood-rate LINES_PER_S] [--flood-burst LINES] [--max-rooms N]
             [--history LINES] [--db PATH] [--ip-max-connections N]
             [--ip-connect-rate N] [--ip-exempt CIDR]... [--oper-password-file FILE]
             [--metrics ADDR] [--cluster URL] [--cluster-name NAME] [--reuse-port]
             [--log-level LEVEL]

Options:
  --listen ADDR             address to listen on, repeatable [default: 127.0.0.1:8000]
  --tls-listen ADDR         address to accept TLS connections on, repeatable [default: none]
  --tls-cert FILE           PEM certificate chain for TLS (SIGHUP reloads it)
  --tls-key FILE            PEM private key for TLS (SIGHUP reloads it)
  --idle-timeout SECS       disconnect users idle this long; 0 = never [default: 60]
  --max-line BYTES          longest accepted line [default: 4096]
  --max-clients N           refuse connections beyond N [default: open-file limit - 32]
  --max-outbound BYTES      cut off clients with more output queued [default: 262144]
  --max-outbound-total BYTES  stop reading input while all queues hold more [default: 268435456]
  --flood-rate LINES_PER_S  lines per second per client; 0 = no limit [default: 20]
  --flood-burst LINES       lines a client may send at once [default: 40]
  --max-rooms N             rooms that may exist at once, lobby included [default: 1000]
  --history LINES           lines of history replayed on entering a room; 0 = none [default: 20]
  --db PATH                 SQLite file for history and bans [default: history in memory]
  --ip-max-connections N    connections open at once per address (IPv6: /64); 0 = no limit [default: 16]
  --ip-connect-rate N       new connections per address per minute; 0 = no limit [default: 60]
  --ip-exempt CIDR          addresses limits and bans never apply to, repeatable; `none` for
                            no one [default: 127.0.0.0/8 and ::1/128]
  --oper-password-file FILE enables /oper with the first line of FILE as the password
  --metrics ADDR            serve Prometheus metrics over HTTP on ADDR [default: off]
  --cluster URL             link with the other chatd servers using this Redis
                            (redis://HOST:PORT or unix:///PATH) into one chat [default: alone]
  --cluster-name NAME       prefix of every Redis key and channel [default: chatd]
  --reuse-port              listen with SO_REUSEPORT, so several processes share one port
  --log-level LEVEL         error, warn, info, debug or trace [default: info, or RUST_LOG]
  --flush-window-us MICROS  under load, delay writes this long to batch lines; 0 = never [default: 2000]
  -h, --help                print this help
  -V, --version             print the version
";

/// The largest accepted values: far beyond any real use, small enough that
/// deadlines and sizes computed from them cannot overflow.
const MAX_IDLE_SECS: u64 = 10 * 365 * 24 * 3600;
const MAX_LINE: usize = 64 << 20;
const MAX_FLOOD: u32 = 1_000_000;
const MAX_WINDOW_US: u64 = 1_000_000;
const MAX_ROOMS: usize = 1_000_000;
const MAX_HISTORY: usize = 1000;

/// What the command line asked for.
enum Action {
    Run(Box<Config>, Option<LevelFilter>),
    Help,
    Version,
}

fn main() -> ExitCode {
    let (config, level) = match parse_args() {
        Ok(Action::Run(config, level)) => (*config, level),
        Ok(Action::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version) => {
            println!("chatd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("chatd: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = config.validate() {
        eprintln!("chatd: {error}");
        return ExitCode::from(2);
    }
    // A file-size limit (`ulimit -f`) must make database writes fail, which
    // chatd survives, rather than kill the process with SIGXFSZ.
    // SAFETY: setting a signal's disposition to "ignore" has no handler to
    // race with; nothing else in the process relies on SIGXFSZ.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    if let Err(error) = init_logging(level) {
        eprintln!("chatd: cannot start logging: {error}");
        return ExitCode::FAILURE;
    }
    match Server::bind(config).and_then(Server::run) {
        Ok(()) => {
            log::info!("bye");
            ExitCode::SUCCESS
        }
        Err(error) => {
            log::error!("{error}");
            // A flag or file that cannot work (a bad password file, a
            // refused combination) is a usage error, like a bad flag.
            if error.kind() == std::io::ErrorKind::InvalidInput {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Parses the command line (PROTOCOL.md's contract) into a [`Config`].
fn parse_args() -> Result<Action, lexopt::Error> {
    use lexopt::prelude::*;
    let mut config = Config {
        listen: Vec::new(),
        handle_signals: true,
        ..Config::default()
    };
    let mut level = None;
    let mut flood = config::DEFAULT_FLOOD;
    let mut exempt: Vec<String> = Vec::new();
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("listen") => {
                let text: String = parser.value()?.parse()?;
                config.listen.push(resolve(&text)?);
            }
            Long("tls-listen") => {
                let text: String = parser.value()?.parse()?;
                config.tls_listen.push(resolve(&text)?);
            }
            Long("tls-cert") => config.tls_cert = Some(parser.value()?.into()),
            Long("tls-key") => config.tls_key = Some(parser.value()?.into()),
            Long("idle-timeout") => {
                let secs = in_range(parser.value()?.parse()?, 0, MAX_IDLE_SECS, "--idle-timeout")?;
                config.idle_timeout = (secs > 0).then(|| Duration::from_secs(secs));
            }
            Long("max-line") => {
                config.max_line = in_range(parser.value()?.parse()?, 1, MAX_LINE, "--max-line")?
            }
            Long("max-clients") => {
                config.max_clients = Some(in_range(
                    parser.value()?.parse()?,
                    1,
                    usize::MAX,
                    "--max-clients",
                )?)
            }
            Long("max-outbound") => {
                config.max_outbound =
                    in_range(parser.value()?.parse()?, 1, usize::MAX, "--max-outbound")?
            }
            Long("max-outbound-total") => {
                config.max_outbound_total = in_range(
                    parser.value()?.parse()?,
                    1,
                    usize::MAX,
                    "--max-outbound-total",
                )?
            }
            Long("max-rooms") => {
                config.max_rooms = in_range(parser.value()?.parse()?, 1, MAX_ROOMS, "--max-rooms")?
            }
            Long("history") => {
                config.history = in_range(parser.value()?.parse()?, 0, MAX_HISTORY, "--history")?
            }
            Long("db") => config.db = Some(parser.value()?.into()),
            Long("ip-max-connections") => {
                config.ip_limits.max_connections = parser.value()?.parse()?
            }
            Long("ip-connect-rate") => config.ip_limits.connect_rate = parser.value()?.parse()?,
            Long("ip-exempt") => exempt.push(parser.value()?.parse::<String>()?),
            Long("oper-password-file") => config.oper_password_file = Some(parser.value()?.into()),
            Long("metrics") => {
                let text: String = parser.value()?.parse()?;
                config.metrics = Some(resolve(&text)?);
            }
            Long("flood-rate") => {
                flood.rate = in_range(parser.value()?.parse()?, 0, MAX_FLOOD, "--flood-rate")?
            }
            Long("flood-burst") => {
                flood.burst = in_range(parser.value()?.parse()?, 1, MAX_FLOOD, "--flood-burst")?
            }
            Long("flush-window-us") => {
                let micros = in_range(
                    parser.value()?.parse()?,
                    0,
                    MAX_WINDOW_US,
                    "--flush-window-us",
                )?;
                config.flush_window = Duration::from_micros(micros);
            }
            Long("cluster") => {
                let text: String = parser.value()?.parse()?;
                let url = chatd::cluster::ClusterUrl::parse(&text)
                    .map_err(|e| lexopt::Error::from(e.to_string()))?;
                config.cluster = Some(url);
            }
            Long("cluster-name") => config.cluster_name = parser.value()?.parse()?,
            Long("reuse-port") => config.reuse_port = true,
            Long("log-level") => {
                let text: String = parser.value()?.parse()?;
                level = Some(text.parse::<LevelFilter>().map_err(|_| {
                    lexopt::Error::from(format!(
                        "invalid --log-level {text:?} (error, warn, info, debug, trace)"
                    ))
                })?);
            }
            Short('h') | Long("help") => return Ok(Action::Help),
            Short('V') | Long("version") => return Ok(Action::Version),
            _ => return Err(arg.unexpected()),
        }
    }
    config.flood = flood;
    if !exempt.is_empty() {
        config.exempt = Exempt::from_flags(exempt.iter().map(String::as_str))
            .map_err(|msg| lexopt::Error::from(format!("--ip-exempt: {msg}")))?;
    }
    if config.listen.is_empty() && config.tls_listen.is_empty() {
        config.listen.push(resolve(config::DEFAULT_LISTEN)?);
    }
    Ok(Action::Run(Box::new(config), level))
}

/// Accepts `HOST:PORT` as well as literal addresses (`localhost:8000`).
fn resolve(text: &str) -> Result<SocketAddr, lexopt::Error> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("invalid address {text:?}").into())
}

/// Refuses values outside `min..=max`: a line, queue or room of 0 makes
/// no sense, and absurdly large ones would overflow time and size arithmetic.
fn in_range<T: PartialOrd + std::fmt::Display>(
    value: T,
    min: T,
    max: T,
    flag: &str,
) -> Result<T, lexopt::Error> {
    if value < min || value > max {
        return Err(format!("{flag} must be between {min} and {max}").into());
    }
    Ok(value)
}

/// Logs to stderr with timestamps; the flag wins over `RUST_LOG`, which wins
/// over `info`. mio's own trace lines are kept out below debug. A log
/// destination that fails loses lines instead of stopping the server
/// ([`LossyLogger`]).
fn init_logging(level: Option<LevelFilter>) -> Result<(), log::SetLoggerError> {
    let mut logger = simple_logger::SimpleLogger::new()
        .with_level(LevelFilter::Info)
        .env();
    if let Some(level) = level {
        logger = logger.with_level(level);
    }
    let logger = logger
        .with_module_level("mio", LevelFilter::Warn)
        .with_utc_timestamps();
    LossyLogger::new(logger).init()
}
