//! A throwaway `redis-server` for the cluster scenarios (`chatload suite
//! --cluster`): started in a fresh temporary directory, on a Unix socket
//! there (or a free loopback port), with persistence off (`--save ''
//! --appendonly no`), and killed when dropped, so a run that fails half-way
//! leaves neither a process nor a file behind.
//!
//! Only the Debian package's `redis-server` binary is needed (found in
//! `PATH`, or given); the tool speaks to it once, a blocking `PING`, to know
//! it is ready. Everything else is chatd's business.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::procstat::{self, ProcSample};

/// The binary looked up in `PATH` when none is given.
pub const DEFAULT_BINARY: &str = "redis-server";
/// How long redis-server gets to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long it gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the Redis listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A Unix socket (in the Redis's own temporary directory).
    Unix(PathBuf),
    /// A TCP port on 127.0.0.1.
    Tcp(SocketAddr),
}

/// A running redis-server child process and its temporary directory.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    /// Its process id, for sampling its CPU in `/proc`.
    pub pid: i32,
    /// Where it listens.
    pub place: Place,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts `binary` (default: `redis-server` from `PATH`) on a Unix
    /// socket, or with `tcp` on a free port of 127.0.0.1, and waits until it
    /// answers `PING`.
    pub fn start(binary: Option<&Path>, tcp: bool) -> Result<RedisServer, String> {
        let binary = binary.unwrap_or(Path::new(DEFAULT_BINARY));
        let dir = scratch_dir()?;
        let place = if tcp {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port for redis-server: {e}"))?
                .port();
            Place::Tcp(SocketAddr::from(([127, 0, 0, 1], port)))
        } else {
            Place::Unix(dir.join("redis.sock"))
        };
        let mut command = Command::new(binary);
        command
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"));
        match &place {
            Place::Tcp(addr) => {
                command.args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()]);
            }
            Place::Unix(path) => {
                command
                    .args(["--port", "0", "--unixsocketperm", "700", "--unixsocket"])
                    .arg(path);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        procstat::die_with_parent(&mut command);
        let child = match command.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(if e.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "{} not found: the cluster scenarios need Redis \
                         (Debian: apt-get install redis-server), or give --redis-server PATH",
                        binary.display()
                    )
                } else {
                    format!("cannot start {}: {e}", binary.display())
                });
            }
        };
        let mut redis = RedisServer {
            pid: child.id() as i32,
            child: Some(child),
            place,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if redis.ping() {
                return Ok(redis);
            }
            let exited = redis
                .child
                .as_mut()
                .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
            if exited || Instant::now() >= deadline {
                return Err(format!(
                    "redis-server {} within {}s; its log:\n{}",
                    if exited {
                        "exited before answering PING"
                    } else {
                        "did not answer PING"
                    },
                    START_TIMEOUT.as_secs(),
                    redis.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `--cluster` URL that reaches it: `unix:///PATH` or
    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        match &self.place {
            Place::Unix(path) => format!("unix://{}", path.display()),
            Place::Tcp(addr) => format!("redis://{addr}"),
        }
    }

    /// Its CPU and memory now, from /proc (zeros if unreadable).
    pub fn sample(&self) -> ProcSample {
        procstat::sample(self.pid).unwrap_or_default()
    }

    /// One blocking `PING`; true on `+PONG`.
    pub fn ping(&self) -> bool {
        fn exchange(mut stream: impl Read + Write) -> bool {
            let mut reply = [0u8; 7];
            stream.write_all(b"PING\r\n").is_ok()
                && stream.read_exact(&mut reply).is_ok()
                && &reply == b"+PONG\r\n"
        }
        let timeout = Some(Duration::from_secs(1));
        match &self.place {
            Place::Unix(path) => UnixStream::connect(path)
                .is_ok_and(|s| s.set_read_timeout(timeout).is_ok() && exchange(s)),
            Place::Tcp(addr) => TcpStream::connect_timeout(addr, Duration::from_secs(1))
                .is_ok_and(|s| s.set_read_timeout(timeout).is_ok() && exchange(s)),
        }
    }

    /// The end of its log file, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The lines of its log that contain any of `words`, e.g. `output
    /// buffer` (Redis cut a subscriber that fell behind).
    pub fn log_lines_with(&self, words: &[&str]) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("redis.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| words.iter().any(|w| l.contains(w)))
            .map(String::from)
            .collect()
    }

    /// Whether `binary` (default: `redis-server` from `PATH`) runs at all,
    /// so a missing Redis is reported before anything else is started.
    pub fn check_binary(binary: Option<&Path>) -> Result<(), String> {
        let binary = binary.unwrap_or(Path::new(DEFAULT_BINARY));
        match Command::new(binary)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "{} --version failed ({})",
                binary.display(),
                out.status
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "{} not found: the cluster scenarios need Redis \
                 (Debian: apt-get install redis-server), or give --redis-server PATH",
                binary.display()
            )),
            Err(e) => Err(format!("cannot run {}: {e}", binary.display())),
        }
    }

    /// Stops it (SIGTERM, then SIGKILL if it lingers) and removes its
    /// directory; true if it exited by itself with status 0.
    pub fn stop(mut self) -> bool {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let mut clean = false;
        if let Ok(None) = child.try_wait() {
            // SAFETY: kill(2) on our own child's pid, which we have not reaped.
            unsafe {
                libc::kill(self.pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        clean = status.success();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    Err(_) => break,
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        clean
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// A fresh directory of this process's own under the temporary directory.
fn scratch_dir() -> Result<PathBuf, String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("chatload-redis-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(format!("no free directory name under {}", base.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let err = RedisServer::start(Some(Path::new("/nonexistent/redis-server")), false)
            .expect_err("no such binary");
        assert!(err.contains("apt-get install redis-server"), "{err}");
    }

    #[test]
    fn starts_answers_and_cleans_up() {
        // Without redis-server installed there is nothing to start.
        if Command::new(DEFAULT_BINARY)
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("redis-server not installed: skipped");
            return;
        }
        for tcp in [false, true] {
            let redis = RedisServer::start(None, tcp).expect("redis-server starts");
            assert!(redis.ping());
            let url = redis.url();
            assert!(url.starts_with(if tcp {
                "redis://127.0.0.1:"
            } else {
                "unix:///"
            }));
            let dir = redis.dir.clone();
            let pid = redis.pid;
            assert!(redis.stop(), "redis-server exits 0 on SIGTERM");
            assert!(!dir.exists());
            assert!(procstat::sample(pid).is_err(), "process {pid} is gone");
        }
    }
}
