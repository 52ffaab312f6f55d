//! What every integration test needs: a real server on a free loopback port
//! and a line-oriented client with time-bounded reads.
//!
//! Reads wait for a line (never a fixed sleep) but give up after
//! [`READ_TIMEOUT`], so a broken server fails a test instead of hanging it.
//!
//! Beside them: [`lines`] (the line client, shared with the TLS user of
//! `tests/tls_support`), [`proc`] (chatd as a process), [`http`] (the
//! metrics page), [`calendar`] (UTC dates, an oracle independent of the
//! server), [`redis`] (a real `redis-server` per test, for clusters) and
//! [`tempdir`].

#![allow(dead_code)]

pub mod calendar;
pub mod http;
pub mod lines;
pub mod proc;
pub mod redis;
pub mod tempdir;

use chatd::{Config, Server, ShutdownHandle};
pub use lines::{LineClient, READ_TIMEOUT};
use socket2::{Domain, Socket, Type};
use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A server running in-process on its own thread; shut down on drop.
pub struct TestServer {
    /// The first plain listener's address.
    pub addr: SocketAddr,
    /// Every plain listener's address, in `config.listen` order.
    pub addrs: Vec<SocketAddr>,
    /// Every TLS listener's address, in `config.tls_listen` order.
    pub tls_addrs: Vec<SocketAddr>,
    /// The metrics address, when the config asked for one.
    pub metrics: Option<SocketAddr>,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl TestServer {
    /// Starts a server with `config` (its listen address is forced to
    /// 127.0.0.1:0).
    pub fn start(mut config: Config) -> TestServer {
        config.listen = vec!["127.0.0.1:0".parse().unwrap()];
        TestServer::start_as_configured(config)
    }

    /// Starts a server listening exactly where `config` says (several
    /// listeners, IPv6, ...).
    pub fn start_as_configured(config: Config) -> TestServer {
        let server = Server::bind(config).expect("server binds");
        let addrs = server.local_addrs().to_vec();
        let tls_addrs = server.tls_addrs().to_vec();
        let metrics = server.metrics_addr();
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        TestServer {
            addr: addrs[0],
            addrs,
            tls_addrs,
            metrics,
            handle,
            thread: Some(thread),
        }
    }

    /// Starts a server with `config` on a plain and a TLS listener, both
    /// on 127.0.0.1 port 0 (`config.tls_cert` and `tls_key` must name good
    /// files); returns it and the TLS address.
    pub fn start_with_tls(mut config: Config) -> (TestServer, SocketAddr) {
        config.listen = vec!["127.0.0.1:0".parse().unwrap()];
        config.tls_listen = vec!["127.0.0.1:0".parse().unwrap()];
        let server = TestServer::start_as_configured(config);
        let tls = server.tls_addrs[0];
        (server, tls)
    }

    /// A server with the default config on a free port.
    pub fn default_config() -> TestServer {
        TestServer::start(Config::ephemeral())
    }

    /// Connects a client and reads its `You are NAME` greeting.
    pub fn join(&self) -> Client {
        Client::join(self.addr)
    }

    /// Connects a client, reads its greeting and waits until `watcher` has
    /// seen it arrive.
    pub fn join_seen_by(&self, watcher: &mut Client) -> Client {
        let client = self.join();
        watcher.skip_until(&format!("{} has arrived", client.name));
        client
    }

    /// Asks the server to shut down and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown_and_join();
    }

    fn shutdown_and_join(&mut self) {
        self.handle.shutdown();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread").expect("server ran");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() && !std::thread::panicking() {
            self.shutdown_and_join();
        }
    }
}

/// One user on a real TCP connection.
pub type Client = LineClient<TcpStream>;

/// The read errors that end a plain connection.
const TCP_ENDS: &[io::ErrorKind] = &[io::ErrorKind::ConnectionReset];

impl LineClient<TcpStream> {
    /// Connects without reading anything.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// Wraps an already connected stream (say one from
    /// [`connect_with_recv_buffer`]) without reading anything.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let name = stream.local_addr().unwrap().to_string();
        LineClient::new(stream, name, "", TCP_ENDS)
    }

    /// Connects and checks the greeting `You are ADDR`.
    pub fn join(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr);
        client.expect_greeting();
        client
    }

    /// Half-closes: the server sees EOF, we can still read.
    pub fn shutdown_write(&mut self) {
        self.stream().shutdown(std::net::Shutdown::Write).unwrap();
    }

    /// Reads everything until EOF (bounded by the read timeout).
    pub fn read_to_end(&mut self) -> String {
        let mut rest = String::new();
        let _ = self.reader.read_to_string(&mut rest);
        rest
    }

    /// Takes the name `new` (`/nick NEW`): this client, then each of
    /// `heard_by` (the rest of its room), read `OLD is now known as NEW`
    /// next; `name` follows the change.
    pub fn rename(&mut self, new: &str, heard_by: &mut [&mut Client]) {
        self.send(&format!("/nick {new}"));
        let notice = format!("{} is now known as {new}", self.name);
        self.expect(&notice);
        for other in heard_by.iter_mut() {
            other.expect(&notice);
        }
        self.name = new.to_string();
    }

    /// Sends `who` and returns the listed names (with ` (you)` kept),
    /// skipping whatever comes before the reply.
    pub fn who(&mut self) -> Vec<String> {
        self.send("/who");
        let header = loop {
            let line = self.line();
            if is_who_head(&line) {
                break line;
            }
        };
        let count: usize = header.split(' ').next().unwrap().parse().unwrap();
        self.who_lines(count)
    }
}

/// Connects with `SO_RCVBUF` set to `bytes` before the handshake: a small
/// buffer makes a reader the server's output piles up for, a large one a
/// reader that never falls behind. Reads nothing.
pub fn connect_with_recv_buffer(addr: SocketAddr, bytes: usize) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    socket.into()
}

/// Polls `condition` until it holds or `limit` passes (for state that is not
/// announced by a line, such as the server's CPU time).
pub fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

/// The real `chatd` binary, started from a prepared command (so a test can
/// wrap it, e.g. in `prlimit`); its log is kept for the test to search, and
/// it is killed on drop if still running.
pub struct RealServer {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Path of the binary under test.
pub const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

impl RealServer {
    /// `chatd --listen 127.0.0.1:0 ARGS`.
    pub fn start(args: &[&str]) -> RealServer {
        let mut command = std::process::Command::new(CHATD);
        command.args(args);
        RealServer::spawn(command)
    }

    /// Runs `command` (which must end up running chatd) with
    /// `--listen 127.0.0.1:0` added, and reads the bound address from the
    /// `listening on ADDR` log line.
    pub fn spawn(mut command: std::process::Command) -> RealServer {
        RealServer::watch(proc::spawn_listening(&mut command))
    }

    /// `chatd ARGS` with no `--listen` added: ARGS say where it listens
    /// (say a fixed port shared with `--reuse-port`).
    pub fn start_as_given(args: &[&str]) -> RealServer {
        let mut command = std::process::Command::new(CHATD);
        command.args(args);
        RealServer::watch(proc::spawn_as_given(&mut command))
    }

    /// Drains the log of a started chatd and reads the bound address from
    /// its first `listening on ADDR` line.
    fn watch(mut child: std::process::Child) -> RealServer {
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = std::sync::Arc::clone(&log);
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some((_, addr)) = line.split_once("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(READ_TIMEOUT)
            .expect("chatd logs `listening on ADDR`")
            .parse()
            .expect("a socket address");
        RealServer { child, addr, log }
    }

    /// The process id, for signals and /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How many log lines so far contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.iter().filter(|line| line.contains(needle)).count()
    }

    /// The whole log so far, for failure messages.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        // SAFETY: kill only sends a signal to our own child process.
        let sent = unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM delivered");
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + READ_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "chatd did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True for the head of a `who` reply: `N users in #ROOM:` or `1 user in #ROOM:`.
pub fn is_who_head(line: &str) -> bool {
    let mut words = line.split(' ');
    let count_ok = words.next().is_some_and(|n| n.parse::<usize>().is_ok());
    let noun_ok = matches!(words.next(), Some("user" | "users"));
    let in_ok = words.next() == Some("in");
    let room_ok = words
        .next()
        .is_some_and(|r| r.starts_with('#') && r.ends_with(':'));
    count_ok && noun_ok && in_ok && room_ok && words.next().is_none()
}

impl RealServer {
    /// The first log line containing `needle`, waiting for it (bounded by
    /// [`READ_TIMEOUT`]).
    pub fn wait_log(&self, needle: &str) -> String {
        let mut found = None;
        let seen = wait_for(READ_TIMEOUT, || {
            let log = self.log.lock().unwrap();
            found = log.iter().find(|line| line.contains(needle)).cloned();
            found.is_some()
        });
        assert!(
            seen,
            "no log line containing {needle:?}:\n{}",
            self.log_text()
        );
        found.unwrap()
    }

    /// The address of the `tls listening on ADDR` log line.
    pub fn tls_addr(&self) -> SocketAddr {
        let line = self.wait_log("tls listening on ");
        let (_, addr) = line.split_once("tls listening on ").unwrap();
        addr.trim().parse().expect("a socket address")
    }
}

/// A TCP connection to `server` from the local address `source` (port
/// chosen by the kernel): tests that ban or limit tell users apart by
/// address (Linux routes all of 127.0.0.0/8 to `lo`).
pub fn stream_from(source: &str, server: SocketAddr) -> TcpStream {
    let source = SocketAddr::new(source.parse::<IpAddr>().expect("an IP address"), 0);
    let socket = Socket::new(Domain::for_address(server), Type::STREAM, None).expect("socket");
    socket
        .bind(&source.into())
        .unwrap_or_else(|e| panic!("bind to {source}: {e}"));
    socket
        .connect(&server.into())
        .unwrap_or_else(|e| panic!("connect from {source} to {server}: {e}"));
    socket.into()
}

/// Connects from `source` and reads the greeting `You are ADDR:PORT`.
pub fn join_from(source: &str, server: SocketAddr) -> Client {
    let mut client = Client::from_stream(stream_from(source, server));
    client.expect_greeting();
    client
}

/// Connects from `source` and expects exactly `line`, then EOF.
pub fn expect_refused(source: &str, server: SocketAddr, line: &str) {
    let mut client = Client::from_stream(stream_from(source, server));
    client.expect(line);
    client.expect_eof();
}
