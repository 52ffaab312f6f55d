//! chatstress: bounded stress and soak scenarios against a chatd it starts
//! itself (issue points 2, 3, 4 and 7). Each scenario prints its figures
//! and returns an error if a check failed; the binary turns that into a
//! non-zero exit status. Traffic goes to 127.0.0.1 only.

pub mod capacity;
pub mod flood;
pub mod slow;
pub mod soak;

use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a scenario returns: Ok, or the list of failed checks.
pub type Outcome = Result<(), String>;

/// Collects failed checks so a scenario can report all of them.
#[derive(Default)]
pub struct Checks {
    failed: Vec<String>,
}

impl Checks {
    /// Records and prints one check.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        println!("  [{}] {what}", if ok { "ok" } else { "FAIL" });
        if !ok {
            self.failed.push(what);
        }
    }

    /// Ok if every check passed.
    pub fn outcome(self) -> Outcome {
        if self.failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} check(s) failed: {}",
                self.failed.len(),
                self.failed.join("; ")
            ))
        }
    }
}

/// The chatd next to this executable, unless `--chatd PATH` said otherwise.
pub fn default_chatd() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("chatstress"));
    me.with_file_name("chatd")
}

/// Extra chatd flags from `CHATSTRESS_CHATD_ARGS` (space-separated), for
/// experiments with flags the scenarios do not set.
fn extra_args() -> Vec<String> {
    std::env::var("CHATSTRESS_CHATD_ARGS")
        .map(|a| a.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// A chatd child process with its stderr watched.
pub struct Chatd {
    child: Child,
    pub pid: i32,
    pub addr: SocketAddr,
    /// Warnings and errors seen in the log (at most 200 kept).
    pub warnings: Arc<Mutex<Vec<String>>>,
    /// Count of log lines containing `too slow`.
    pub too_slow: Arc<AtomicU64>,
    /// Count of log lines containing `panicked`.
    pub panics: Arc<AtomicU64>,
    _log: JoinHandle<()>,
}

impl Chatd {
    /// Starts `bin` on 127.0.0.1:0 with `args`, and waits for its
    /// `listening on ADDR` line.
    pub fn start(bin: &PathBuf, args: &[String]) -> io::Result<Chatd> {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .args(extra_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot start {}: {e}", bin.display()))
            })?;
        let pid = child.id() as i32;
        let stderr = child.stderr.take().expect("piped stderr");
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let too_slow = Arc::new(AtomicU64::new(0));
        let panics = Arc::new(AtomicU64::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let log = {
            let (warnings, too_slow, panics) = (
                Arc::clone(&warnings),
                Arc::clone(&too_slow),
                Arc::clone(&panics),
            );
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(at) = line.find("listening on ")
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(line[at + 13..].trim().to_string());
                    }
                    if line.contains("too slow") {
                        too_slow.fetch_add(1, Ordering::Relaxed);
                    }
                    if line.contains("panicked") {
                        panics.fetch_add(1, Ordering::Relaxed);
                    }
                    if line.contains("WARN") || line.contains("ERROR") || line.contains("panicked")
                    {
                        let mut w = warnings.lock().unwrap();
                        if w.len() < 2000 {
                            w.push(line);
                        }
                    }
                }
            })
        };
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| io::Error::other("chatd did not log `listening on ADDR` within 10 s"))?;
        let addr = addr
            .parse()
            .map_err(|_| io::Error::other(format!("bad listen address {addr:?}")))?;
        Ok(Chatd {
            child,
            pid,
            addr,
            warnings,
            too_slow,
            panics,
            _log: log,
        })
    }

    /// Prints up to `n` of the warnings seen, those about `name` first.
    pub fn show_warnings(&self, name: &str, n: usize) {
        let w = self.warnings.lock().unwrap();
        for line in w
            .iter()
            .filter(|l| l.contains(name))
            .chain(w.iter().filter(|l| !l.contains(name)))
            .take(n)
        {
            println!("  chatd: {line}");
        }
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Current counters from /proc.
    pub fn sample(&self) -> ProcSample {
        ProcSample::read(self.pid).unwrap_or_default()
    }

    /// SIGTERM, then wait (at most 5 s) and return whether it exited 0.
    pub fn stop(mut self) -> bool {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Chatd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU and memory of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// utime + stime, seconds.
    pub cpu_s: f64,
    /// VmRSS, bytes.
    pub rss: u64,
    /// VmHWM (peak RSS), bytes.
    pub hwm: u64,
}

impl ProcSample {
    /// Reads /proc/PID/stat and /proc/PID/status.
    pub fn read(pid: i32) -> io::Result<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
        let mut fields = after.split_whitespace();
        let utime: u64 = fields.nth(11).and_then(|f| f.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l[key.len()..].split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Ok(ProcSample {
            cpu_s: (utime + stime) as f64 / hz,
            rss: kib("VmRSS:") * 1024,
            hwm: kib("VmHWM:") * 1024,
        })
    }
}

/// Samples a process's RSS every `every` until stopped; keeps the peak.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: i32, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(s) = ProcSample::read(pid) {
                        peak.fetch_max(s.rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(every);
                }
            })
        };
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Highest VmRSS sampled so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak()
    }
}

/// Raises this process's soft open-file limit to the hard one.
pub fn raise_nofile() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
    }
    rl.rlim_cur
}

/// A blocking line client: connects, reads its greeting.
pub struct LineClient {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
    pub name: String,
}

impl LineClient {
    pub fn join(addr: SocketAddr, timeout: Duration) -> io::Result<LineClient> {
        Self::join_with(addr, timeout, None)
    }

    /// Like [`join`](Self::join), with SO_RCVBUF set before connecting.
    pub fn join_with(
        addr: SocketAddr,
        timeout: Duration,
        rcvbuf: Option<usize>,
    ) -> io::Result<LineClient> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size)?;
        }
        socket.connect(&addr.into())?;
        let writer: TcpStream = socket.into();
        writer.set_read_timeout(Some(timeout))?;
        let name = writer.local_addr()?.to_string();
        let mut client = LineClient {
            reader: BufReader::new(writer.try_clone()?),
            writer,
            name,
        };
        let greeting = client.line()?;
        if greeting != format!("You are {}", client.name) {
            return Err(io::Error::other(format!(
                "unexpected greeting {greeting:?}"
            )));
        }
        Ok(client)
    }

    /// One line without its newline; EOF is an error.
    pub fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        if line.ends_with('\n') {
            line.pop();
        }
        Ok(line)
    }

    pub fn send(&mut self, line: &str) -> io::Result<()> {
        use std::io::Write;
        self.writer.write_all(format!("{line}\n").as_bytes())
    }
}

/// A small fast PRNG (xorshift64*), so no dependency is needed.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed with the given mean.
    pub fn exp(&mut self, mean: Duration) -> Duration {
        let u = self.unit().max(1e-12);
        mean.mul_f64(-u.ln()).min(mean * 20)
    }
}

/// Percentile (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Position of the first `\n` in `bytes`, eight bytes at a time (the
/// readers of the heavy scenarios must cost less per byte than chatd).
pub fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = 0x0a0a_0a0a_0a0a_0a0a;
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let word = u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap()) ^ NL;
        let found = word.wrapping_sub(ONES) & !word & HIGHS;
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    bytes[i..].iter().position(|&b| b == b'\n').map(|p| i + p)
}
