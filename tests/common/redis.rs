//! A real `redis-server` per test, for the cluster tests: started on a free
//! TCP port on 127.0.0.1 or on a Unix socket in a directory of its own,
//! with no persistence; stopped, killed, restarted at the same place,
//! paused (SIGSTOP) and resumed (SIGCONT) at the test's command, and killed
//! when dropped. Nothing is shared between tests.
//!
//! Without `redis-server` a test calls [`redis_available`], which prints a
//! loud `DID NOT RUN` and lets it pass, except under `CI`, where it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The redis-server binary (Debian's package puts it here, and in PATH).
pub const REDIS_SERVER: &str = "redis-server";

/// How long Redis may take to start answering, or to exit when told to.
const PATIENCE: Duration = Duration::from_secs(10);

/// True if redis-server can be run; otherwise says so loudly (and fails
/// under CI, where it must be installed).
pub fn redis_available(test: &str) -> bool {
    if Command::new(REDIS_SERVER)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "redis-server is required in CI (apt-get install redis-server)"
    );
    eprintln!("\n!!! {test} DID NOT RUN: `redis-server` is not installed !!!\n");
    false
}

/// Where a test's Redis listens.
#[derive(Debug, Clone)]
pub enum Place {
    /// 127.0.0.1 and this port.
    Port(u16),
    /// This Unix socket.
    Socket(PathBuf),
}

impl Place {
    /// The `--cluster` URL for this place: `redis://127.0.0.1:PORT` or
    /// `unix:///PATH`.
    pub fn url(&self) -> String {
        match self {
            Place::Port(port) => format!("redis://127.0.0.1:{port}"),
            Place::Socket(path) => format!("unix://{}", path.display()),
        }
    }
}

/// A port nobody listens on right now (bound, read and released; a Redis
/// that then finds it taken is moved to another, see [`Redis::start`]).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A Redis reply, as far as the tests read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$...` (bytes, lossily as text) or `None` for the null bulk string.
    Bulk(Option<String>),
    /// `*...` or `None` for the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The strings of an array of bulk strings (`KEYS`, `PUBSUB CHANNELS`).
    pub fn strings(&self) -> Vec<String> {
        match self {
            Reply::Array(Some(items)) => items
                .iter()
                .map(|item| match item {
                    Reply::Bulk(Some(text)) | Reply::Status(text) => text.clone(),
                    other => panic!("not a string: {other:?}"),
                })
                .collect(),
            other => panic!("not an array: {other:?}"),
        }
    }
}

/// A redis-server child process, killed when dropped. Its directory (the
/// socket, `redis.log`) is removed on drop unless the test failed.
pub struct Redis {
    child: Option<Child>,
    place: Place,
    dir: PathBuf,
}

impl Redis {
    /// A Redis on a free TCP port, answering `PING`.
    pub fn on_free_port() -> Redis {
        let mut redis = Redis::at(Place::Port(free_port()), scratch_dir());
        redis.start();
        redis
    }

    /// A Redis on a Unix socket in a fresh directory, answering `PING`.
    pub fn on_unix_socket() -> Redis {
        let mut redis = Redis::not_started_on_unix_socket();
        redis.start();
        redis
    }

    /// The place and directory of a Redis on a Unix socket, not started
    /// (for a client that must find no Redis at first): [`Redis::start`]
    /// runs it.
    pub fn not_started_on_unix_socket() -> Redis {
        let dir = scratch_dir();
        Redis::at(Place::Socket(dir.join("redis.sock")), dir)
    }

    /// A Redis that will listen at `place`, keeping its files in `dir`;
    /// not started.
    pub fn at(place: Place, dir: PathBuf) -> Redis {
        Redis {
            child: None,
            place,
            dir,
        }
    }

    /// Runs redis-server at this place and waits until it answers `PING`.
    /// On a TCP port that turned out to be taken by someone else at the
    /// first start, a new free port is chosen (a restart keeps its port).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let first = !self.dir.join("redis.log").exists();
        for _attempt in 0..5 {
            let child = self.spawn();
            self.child = Some(child);
            if self.wait_until_it_answers() {
                return;
            }
            let port_lost = matches!(self.place, Place::Port(_)) && first;
            self.kill();
            if !port_lost {
                break;
            }
            self.place = Place::Port(free_port());
        }
        panic!(
            "redis-server did not start at {:?}; its log:\n{}",
            self.place,
            self.log()
        );
    }

    fn spawn(&self) -> Child {
        let mut command = Command::new(REDIS_SERVER);
        command.args(["--save", "", "--appendonly", "no", "--daemonize", "no"]);
        command.args(["--protected-mode", "no", "--loglevel", "warning"]);
        command.arg("--dir").arg(&self.dir);
        command.arg("--logfile").arg(self.dir.join("redis.log"));
        match &self.place {
            Place::Port(port) => {
                command.args(["--bind", "127.0.0.1", "--port", &port.to_string()]);
            }
            Place::Socket(path) => {
                let _ = std::fs::remove_file(path);
                command.args(["--port", "0", "--unixsocket"]).arg(path);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts")
    }

    /// Waits (bounded) for `PING` to be answered; false if the process
    /// exited (say its port was taken) or the wait ran out.
    fn wait_until_it_answers(&mut self) -> bool {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if self.ping() {
                // On a port, the one answering may be another test's Redis.
                return self.answering_pid() == self.pid();
            }
            let child = self.child.as_mut().expect("started");
            if child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// The `--cluster` URL of this Redis.
    pub fn url(&self) -> String {
        self.place.url()
    }

    /// Where it listens.
    pub fn place(&self) -> &Place {
        &self.place
    }

    /// Its directory (socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().expect("try_wait").is_none())
    }

    /// Redis's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Sends `signal` to the running redis-server.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid().expect("redis-server is running") as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// SIGSTOP: Redis keeps its sockets (the kernel still completes
    /// connections into its backlog) but reads and answers nothing.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// A clean stop: SIGTERM (and SIGCONT, in case it was paused), then the
    /// process reaped; SIGKILL if it has not exited within the patience.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
            libc::kill(pid, libc::SIGCONT);
        }
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if child.try_wait().expect("try_wait").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL, and the process reaped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A new redis-server at the same place (the old one killed first);
    /// it starts empty.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// One blocking `PING` from outside, answered `+PONG` within 1 s.
    pub fn ping(&self) -> bool {
        self.command(&["PING"]) == Some(Reply::Status("PONG".into()))
    }

    /// The process id of the Redis answering at this place (`INFO server`).
    fn answering_pid(&self) -> Option<u32> {
        let Some(Reply::Bulk(Some(info))) = self.command(&["INFO", "server"]) else {
            return None;
        };
        info.lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }

    /// One command on a fresh connection, with its reply; `None` if Redis
    /// cannot be reached or does not answer within 1 s.
    pub fn command(&self, args: &[&str]) -> Option<Reply> {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let timeout = Some(Duration::from_secs(1));
        match &self.place {
            Place::Port(port) => {
                let stream = TcpStream::connect(("127.0.0.1", *port)).ok()?;
                stream.set_read_timeout(timeout).ok()?;
                exchange(stream, request.as_bytes())
            }
            Place::Socket(path) => {
                let stream = UnixStream::connect(path).ok()?;
                stream.set_read_timeout(timeout).ok()?;
                exchange(stream, request.as_bytes())
            }
        }
    }
}

/// Writes `request` and reads one reply.
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> Option<Reply> {
    stream.write_all(request).ok()?;
    read_reply(&mut BufReader::new(stream))
}

/// One RESP2 reply.
fn read_reply(reader: &mut impl BufRead) -> Option<Reply> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).ok()?;
    if !line.ends_with(b"\r\n") {
        return None;
    }
    line.truncate(line.len() - 2);
    let (&kind, rest) = line.split_first()?;
    let text = String::from_utf8_lossy(rest).into_owned();
    Some(match kind {
        b'+' => Reply::Status(text),
        b'-' => Reply::Error(text),
        b':' => Reply::Integer(text.parse().ok()?),
        b'$' => {
            let len: i64 = text.parse().ok()?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut bytes = vec![0; len as usize + 2];
                reader.read_exact(&mut bytes).ok()?;
                bytes.truncate(len as usize);
                Reply::Bulk(Some(String::from_utf8_lossy(&bytes).into_owned()))
            }
        }
        b'*' => {
            let len: i64 = text.parse().ok()?;
            if len < 0 {
                Reply::Array(None)
            } else {
                let items: Option<Vec<Reply>> = (0..len).map(|_| read_reply(reader)).collect();
                Reply::Array(Some(items?))
            }
        }
        _ => return None,
    })
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A fresh directory under the system's temporary directory (short, so a
/// Unix socket path in it stays within `sun_path`'s 108 bytes).
fn scratch_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "chatd-redis-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}
