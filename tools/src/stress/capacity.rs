//! `chatstress capacity`: N simultaneous idle connections (default 19,000)
//! all receive one broadcast; then the server's RSS per connection and its
//! CPU use while they sit idle are measured.
//!
//! The client sockets live in child processes (`chatstress capacity-child`),
//! each holding at most `--per-process` (default 9,500) so that no process
//! needs more than its 20,000 descriptors. Parent and children talk over
//! the children's stdin/stdout, one command or report per line.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Checks, Outcome, start_chatd};
use crate::procstat;
use crate::report::mib;

/// `chatstress capacity`'s numbers.
#[derive(Debug)]
pub struct Options {
    /// Connections in all (at least 1).
    pub clients: usize,
    /// Most connections one child process holds.
    pub per_process: usize,
    /// How long the idle CPU is measured.
    pub idle_secs: u64,
}

/// One child process holding connections, and the pipes to command it
/// (`capacity` and `crowd` spread their clients over these).
pub(super) struct Worker {
    pub(super) child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts `chatstress KIND --addr ADDR --count N` (a hidden child
    /// scenario) with piped stdin and stdout.
    pub(super) fn spawn(kind: &str, addr: SocketAddr, count: usize) -> io::Result<Worker> {
        let me = std::env::current_exe()?;
        let mut child = Command::new(me)
            .args([kind, "--addr", &addr.to_string(), "--count"])
            .arg(count.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("child's pipes were not captured"));
        };
        let stdout = BufReader::new(stdout);
        Ok(Worker {
            child,
            stdin,
            stdout,
        })
    }

    /// Sends the child one command line.
    pub(super) fn tell(&mut self, command: &str) -> io::Result<()> {
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()
    }

    /// Reads the child's next report line.
    pub(super) fn report(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err(io::Error::other("worker exited"));
        }
        Ok(line.trim().to_string())
    }
}

/// How many clients each child holds: `n` in all, at most `per_process`
/// each.
pub(super) fn counts(n: usize, per_process: usize) -> Vec<usize> {
    let per = per_process.max(1);
    (0..n.div_ceil(per)).map(|i| per.min(n - i * per)).collect()
}

/// Starts the child processes (`chatstress KIND`) that hold `n`
/// connections to `addr` between them, at most `per_process` each.
pub(super) fn spawn_workers(
    kind: &str,
    addr: SocketAddr,
    n: usize,
    per_process: usize,
) -> Result<Vec<Worker>, String> {
    counts(n, per_process)
        .into_iter()
        .map(|count| Worker::spawn(kind, addr, count).map_err(|e| e.to_string()))
        .collect()
}

/// Reads one `WORD COUNT` report from every worker; returns the sum.
pub(super) fn gather(workers: &mut [Worker], word: &str) -> Result<usize, String> {
    let mut sum = 0;
    for w in workers {
        let r = w.report().map_err(|e| format!("worker: {e}"))?;
        sum += r
            .strip_prefix(word)
            .and_then(|c| c.trim().parse::<usize>().ok())
            .ok_or_else(|| format!("worker: {r}"))?;
    }
    Ok(sum)
}

/// Runs the scenario against a fresh chatd at `chatd`.
pub fn run(chatd: &Path, opts: Options) -> Outcome {
    let n = opts.clients;
    println!(
        "capacity: {n} connections, at most {} per client process",
        opts.per_process
    );
    // Idle timeout well past the run, so nobody is kicked while measured.
    let server = start_chatd(chatd, &["--idle-timeout", "600"])?;
    std::thread::sleep(Duration::from_millis(200));
    let base = server.sample();
    println!("  server RSS at start: {}", mib(base.rss));

    let started = Instant::now();
    let mut workers = spawn_workers("capacity-child", server.addr, n, opts.per_process)?;
    let connected = gather(&mut workers, "ready")?;
    println!(
        "  {connected} connected and greeted in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let full = server.sample();

    // One broadcast from the first connection; every connection expects it
    // (PROTOCOL.md: "chat line | everyone in the room, sender included |
    // `NAME: TEXT`").
    let probe = format!("capacity probe {}", std::process::id());
    let sent = Instant::now();
    workers[0]
        .tell(&format!("send {probe}"))
        .map_err(|e| e.to_string())?;
    for w in &mut workers {
        w.tell(&format!("expect {probe}"))
            .map_err(|e| e.to_string())?;
    }
    let received = gather(&mut workers, "got")?;
    let fanout = sent.elapsed();
    println!(
        "  broadcast reached {received}/{n} connections in {:.0} ms",
        fanout.as_secs_f64() * 1000.0
    );

    // Idle: let the post-broadcast work settle for one second, then measure.
    std::thread::sleep(Duration::from_secs(1));
    let idle_start = server.sample();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(opts.idle_secs));
    let idle_end = server.sample();
    let idle_cpu = (idle_end.cpu_s - idle_start.cpu_s) / t0.elapsed().as_secs_f64();
    let per_conn = idle_end.rss.saturating_sub(base.rss) as f64 / n as f64;
    println!(
        "  server RSS: start {}, all connected {}, after broadcast and {} s idle {} (peak {})",
        mib(base.rss),
        mib(full.rss),
        opts.idle_secs,
        mib(idle_end.rss),
        mib(idle_end.hwm)
    );
    println!("  RSS per idle connection: {per_conn:.0} bytes");
    println!(
        "  server CPU while {n} users idle for {} s: {:.2}% of one core",
        opts.idle_secs,
        idle_cpu * 100.0
    );

    let mut checks = Checks::default();
    let mut server = server;
    checks.check(
        connected == n,
        format!("{connected}/{n} connections greeted"),
    );
    checks.check(received == n, format!("{received}/{n} got the broadcast"));
    checks.check(
        per_conn <= 2048.0,
        format!("{per_conn:.0} B RSS per idle connection <= 2048"),
    );
    checks.check(
        idle_cpu < 0.01,
        format!("idle CPU {:.2}% < 1% of a core", idle_cpu * 100.0),
    );
    checks.server_healthy(&mut server);
    for w in &mut workers {
        let _ = w.tell("quit");
    }
    for mut w in workers {
        let _ = w.child.wait();
    }
    checks.stop_server(server)
}

/// The child side: holds `count` connections, obeys its parent.
pub fn child(addr: SocketAddr, count: usize) -> Outcome {
    let mut readers = greeted_connections(addr, count)?;
    let mut out = io::stdout().lock();
    writeln!(out, "ready {count}").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    for command in io::stdin().lock().lines() {
        let command = command.map_err(|e| e.to_string())?;
        if let Some(text) = command.strip_prefix("send ") {
            readers[0]
                .stream
                .write_all(format!("{text}\n").as_bytes())
                .map_err(|e| e.to_string())?;
        } else if let Some(text) = command.strip_prefix("expect ") {
            let suffix = format!(": {text}");
            let mut got = 0;
            for r in &mut readers {
                loop {
                    match r.line() {
                        Ok(line) if line.ends_with(&suffix) => {
                            got += 1;
                            break;
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
            writeln!(out, "got {got}").map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
        } else if command == "quit" {
            break;
        }
    }
    Ok(())
}

/// What a child process holds for its parent: `count` connections to
/// `addr` (this process's descriptor limit raised first), reads bounded by
/// 60 s, every greeting read.
pub(super) fn greeted_connections(addr: SocketAddr, count: usize) -> Result<Vec<Pending>, String> {
    procstat::raise_nofile_limit();
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let stream = connect_retrying(addr).map_err(|e| format!("connect #{i}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        clients.push(Pending::new(stream));
    }
    // Every connection's first line is its greeting (PROTOCOL.md: "connect |
    // the newcomer | `You are NAME`").
    for (i, c) in clients.iter_mut().enumerate() {
        let line = c.line().map_err(|e| format!("greeting #{i}: {e}"))?;
        if !line.starts_with("You are ") {
            return Err(format!("greeting #{i}: {line:?}"));
        }
    }
    Ok(clients)
}

/// Connects, retrying a few times: a burst of 9,500 connects may overrun
/// the listen backlog for a moment.
fn connect_retrying(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut tries = 0;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(s) => return Ok(s),
            Err(e) if tries < 5 => {
                tries += 1;
                eprintln!("chatstress child: connect failed ({e}), retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A socket with a tiny line buffer of its own (a BufReader per socket
/// would cost 8 KiB each).
pub(super) struct Pending {
    pub(super) stream: TcpStream,
    buf: Vec<u8>,
}

impl Pending {
    fn new(stream: TcpStream) -> Pending {
        Pending {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next line, without its `\n`; blocks (the socket has a read
    /// timeout).
    pub(super) fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                return Ok(String::from_utf8_lossy(&line[..nl]).into_owned());
            }
            let mut chunk = [0u8; 512];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
