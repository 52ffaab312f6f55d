//! Starting and stopping a chatd under test.
//!
//! The suite and the smoke test measure a server they start themselves, on
//! a free port, with flood control and the idle timeout off (they would
//! otherwise measure the limits, not the server). The port is learned from
//! the `listening on ADDR` line chatd logs at start; a helper thread keeps
//! draining chatd's stderr afterwards, because a child blocked on a full
//! pipe would look exactly like a slow server.
//!
//! chatstress includes this file too (`#[path]`), with its own flags; the
//! items only one of the two tools uses are marked `allow(dead_code)`.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::procstat::{self, ProcSample};

/// How long chatd gets to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long chatd gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Log lines kept for error messages.
const TAIL_LINES: usize = 20;
/// Warning, error and panic lines kept for [`Chatd::show_warnings`].
const MAX_WARNINGS: usize = 2000;

/// The flags every chatd chatload measures gets.
#[allow(dead_code)] // chatload only
pub const BASE_ARGS: [&str; 6] = [
    "--listen",
    "127.0.0.1:0",
    "--flood-rate",
    "0",
    "--idle-timeout",
    "0",
];

/// What the stderr thread learned from the log.
#[derive(Debug, Default)]
struct LogWatch {
    /// Lines mentioning `too slow` (clients cut off for not reading).
    too_slow: AtomicUsize,
    /// Lines mentioning `panicked`.
    panics: AtomicUsize,
    /// Lines with `WARN`, `ERROR` or `panicked` (the first [`MAX_WARNINGS`]).
    warnings: Mutex<Vec<String>>,
    tail: Mutex<VecDeque<String>>,
}

/// A running chatd child process.
#[derive(Debug)]
pub struct Chatd {
    child: Child,
    pub addr: SocketAddr,
    pub pid: i32,
    log: Arc<LogWatch>,
}

/// The chatd to run: `explicit`, or the `chatd` next to this executable
/// (cargo builds both binaries into the same `target/<profile>` directory).
#[allow(dead_code)] // chatload only
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find own executable: {e}"))?
            .parent()
            .map(|dir| dir.join("chatd"))
            .ok_or("own executable has no directory")?,
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "chatd not found at {} (build it with `cargo build --release` or pass --chatd PATH)",
            path.display()
        ))
    }
}

impl Chatd {
    /// Starts `path` with `args` (chatload passes [`BASE_ARGS`]) and waits
    /// for its listening address.
    pub fn start<I, S>(path: &Path, args: I) -> Result<Chatd, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        let pid = child.id() as i32;
        let log = Arc::new(LogWatch::default());
        let (tx, rx) = mpsc::channel();
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("chatd stderr was not captured".into());
        };
        let watch = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut reader = BufReader::new(stderr);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                if line.contains("too slow") {
                    watch.too_slow.fetch_add(1, Ordering::Relaxed);
                }
                let panicked = line.contains("panicked");
                if panicked {
                    watch.panics.fetch_add(1, Ordering::Relaxed);
                }
                if (panicked || line.contains("WARN") || line.contains("ERROR"))
                    && let Ok(mut warnings) = watch.warnings.lock()
                    && warnings.len() < MAX_WARNINGS
                {
                    warnings.push(line.clone());
                }
                // Only the first listener is used: the sender goes after it.
                if let Some(addr) = listening_addr(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
                if let Ok(mut tail) = watch.tail.lock() {
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        });
        let mut chatd = Chatd {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pid,
            log,
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                chatd.addr = addr;
                Ok(chatd)
            }
            Err(_) => Err(format!(
                "chatd printed no `listening on ADDR` line within {}s; last log lines:\n{}",
                START_TIMEOUT.as_secs(),
                chatd.log_tail()
            )),
        }
    }

    /// How many `too slow` lines chatd has logged.
    pub fn too_slow_count(&self) -> usize {
        self.log.too_slow.load(Ordering::Relaxed)
    }

    /// How many `panicked` lines chatd has logged.
    #[allow(dead_code)] // chatstress only
    pub fn panic_count(&self) -> usize {
        self.log.panics.load(Ordering::Relaxed)
    }

    /// Prints up to `n` of the warnings chatd logged, those about `name`
    /// first.
    #[allow(dead_code)] // chatstress only
    pub fn show_warnings(&self, name: &str, n: usize) {
        let Ok(w) = self.log.warnings.lock() else {
            return;
        };
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
    #[allow(dead_code)] // chatstress only
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// chatd's CPU and memory now, from /proc (zeros if unreadable).
    #[allow(dead_code)] // chatstress only
    pub fn sample(&self) -> ProcSample {
        procstat::sample(self.pid).unwrap_or_default()
    }

    /// The last lines chatd logged.
    pub fn log_tail(&self) -> String {
        self.log
            .tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Stops chatd gracefully (SIGTERM), killing it if it lingers. Returns
    /// whether it exited by itself with status 0.
    pub fn stop(mut self) -> bool {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> bool {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.success();
        }
        // SAFETY: kill(2) on our own child's pid, which we have not reaped.
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
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

/// The address in a chatd log line `... listening on 127.0.0.1:41234`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let at = line.find("listening on ")?;
    line[at + "listening on ".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_from_the_log_line() {
        let line = "2026-01-01T00:00:00.000Z INFO [chatd::server] listening on 127.0.0.1:41234";
        assert_eq!(
            listening_addr(line),
            Some(SocketAddr::from(([127, 0, 0, 1], 41234)))
        );
        assert_eq!(listening_addr("INFO starting"), None);
    }
}
