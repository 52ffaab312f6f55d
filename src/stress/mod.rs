//! chatstress: bounded stress and soak scenarios against a chatd it starts
//! itself (issue points 2, 3, 4 and 7). Each scenario prints its figures
//! and returns an error if a check failed; the binary turns that into a
//! non-zero exit status. Traffic goes to 127.0.0.1 only.

pub mod capacity;
pub mod flood;
pub mod slow;
pub mod soak;

// Starting, watching, sampling and stopping chatd is chatload's code.
#[path = "../load/chatd.rs"]
mod chatd;
#[path = "../load/procstat.rs"]
mod procstat;

pub use chatd::Chatd;
pub use procstat::raise_nofile_limit;

use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

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

/// Starts `bin` on 127.0.0.1:0 with `args` (and those of
/// `CHATSTRESS_CHATD_ARGS`), and waits for its `listening on ADDR` line.
pub fn start_chatd(bin: &Path, args: &[String]) -> Result<Chatd, String> {
    let listen = ["--listen", "127.0.0.1:0"].map(String::from);
    Chatd::start(
        bin,
        listen
            .into_iter()
            .chain(args.iter().cloned())
            .chain(extra_args()),
    )
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
                    if let Ok(s) = procstat::sample(pid) {
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

    /// Sends `/who` and returns the user lines as sent (`  NAME`, with
    /// ` (you)` on our own), skipping whatever arrives before the header.
    pub fn who(&mut self) -> io::Result<Vec<String>> {
        self.send("/who")?;
        let header = loop {
            let line = self.line()?;
            if line.ends_with(" online:") {
                break line;
            }
        };
        let count: usize = header
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (0..count).map(|_| self.line()).collect()
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
