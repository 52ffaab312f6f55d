//! Starting, watching and stopping the chatd under test.
//!
//! Every tool measures a server it starts itself, on 127.0.0.1 port 0 so
//! runs never collide; the port is learned from the log line PROTOCOL.md
//! promises for scripts. A helper thread keeps draining chatd's stderr for
//! the whole run, because a child blocked on a full pipe would look exactly
//! like a slow server, and on the way it counts what the tools check: `too
//! slow` cut-offs, panics, warnings.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::procstat::{self, ProcSample};

/// How long chatd gets to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long chatd gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Log lines kept for error messages.
const TAIL_LINES: usize = 20;
/// Warning, error and panic lines kept for [`Chatd::show_warnings`].
const MAX_WARNINGS: usize = 2000;

/// Flags that turn chatd's per-user limits off (flood control and the idle
/// timeout), for runs that measure the server rather than its limits.
pub const UNTHROTTLED: [&str; 4] = ["--flood-rate", "0", "--idle-timeout", "0"];

/// What the stderr thread learned from the log.
#[derive(Debug, Default)]
struct LogWatch {
    /// Lines mentioning `too slow` (clients cut off for not reading).
    too_slow: AtomicUsize,
    /// Lines mentioning `panicked`.
    panics: AtomicUsize,
    /// Lines with `WARN`, `ERROR` or `panicked` (the first [`MAX_WARNINGS`]).
    warnings: Mutex<Vec<String>>,
    /// The last [`TAIL_LINES`] lines, for error messages.
    tail: Mutex<VecDeque<String>>,
    /// The address of `metrics listening on ADDR`, once logged.
    metrics: Mutex<Option<SocketAddr>>,
    /// The address of the first `tls listening on ADDR`, once logged.
    tls: Mutex<Option<SocketAddr>>,
    /// Every plain `listening on ADDR`, in the order logged (the order of
    /// the `--listen` flags).
    listeners: Mutex<Vec<SocketAddr>>,
}

/// A running chatd child process.
#[derive(Debug)]
pub struct Chatd {
    child: Child,
    /// The address chatd logged it listens on (its first plain listener).
    pub addr: SocketAddr,
    /// Its process id, for sampling it in `/proc`.
    pub pid: i32,
    log: Arc<LogWatch>,
}

/// The chatd to run: `explicit`, or the `chatd` next to this executable
/// (the workspace builds the server and the tools into the same
/// `target/<profile>` directory).
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
    /// Starts `path` listening on 127.0.0.1 port 0, with `args` after that
    /// (e.g. [`UNTHROTTLED`]), and waits for its listening address.
    pub fn start<I, S>(path: &Path, args: I) -> Result<Chatd, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Chatd::start_on(path, &["127.0.0.1:0"], args)
    }

    /// Starts `path` with one `--listen ADDR` per entry of `listen` (at
    /// least one), then `args`, and waits for its first listening address
    /// ([`addr`](Self::addr)); [`listen_addrs`](Self::listen_addrs) has the
    /// others. The child is killed if this process dies (see
    /// [`procstat::die_with_parent`]).
    pub fn start_on<I, S>(path: &Path, listen: &[&str], args: I) -> Result<Chatd, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(path);
        for addr in listen {
            command.args(["--listen", addr]);
        }
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        procstat::die_with_parent(&mut command);
        let mut child = command
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
                // PROTOCOL.md, --max-outbound: "a client whose output queued
                // in the server ... exceeds this is disconnected as too slow,
                // with a warning in the log containing `too slow`".
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
                // The first listener is the chat address: the sender goes
                // after it; the others are kept for listen_addrs.
                if let Some(addr) = listening_addr(&line) {
                    if let Ok(mut all) = watch.listeners.lock() {
                        all.push(addr);
                    }
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                if let Some(addr) = metrics_addr(&line)
                    && let Ok(mut metrics) = watch.metrics.lock()
                {
                    metrics.get_or_insert(addr);
                }
                if let Some(addr) = tls_addr(&line)
                    && let Ok(mut tls) = watch.tls.lock()
                {
                    tls.get_or_insert(addr);
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
    pub fn panic_count(&self) -> usize {
        self.log.panics.load(Ordering::Relaxed)
    }

    /// Prints up to `n` of the warnings chatd logged, those about `name`
    /// first.
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

    /// The warning, error and panic lines chatd logged (the first
    /// thousands).
    pub fn warning_lines(&self) -> Vec<String> {
        self.log
            .warnings
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
    }

    /// The address of chatd's metrics endpoint (`--metrics ADDR`), waiting
    /// up to `timeout` for its log line; `None` if it never came.
    pub fn metrics_addr(&self, timeout: Duration) -> Option<SocketAddr> {
        wait_for(&self.log.metrics, timeout)
    }

    /// The address of chatd's first TLS listener (`--tls-listen ADDR`),
    /// waiting up to `timeout` for its log line; `None` if it never came.
    pub fn tls_addr(&self, timeout: Duration) -> Option<SocketAddr> {
        wait_for(&self.log.tls, timeout)
    }

    /// The addresses of chatd's plain listeners, in the order of the
    /// `--listen` flags, once it has logged `n` of them (waiting up to
    /// `timeout`); `None` if fewer came.
    pub fn listen_addrs(&self, n: usize, timeout: Duration) -> Option<Vec<SocketAddr>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(all) = self.log.listeners.lock().ok().filter(|a| a.len() >= n) {
                return Some(all.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// chatd's CPU and memory now, from /proc (zeros if unreadable).
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
    /// whether it exited by itself with status 0, as PROTOCOL.md requires:
    /// "SIGINT and SIGTERM shut it down gracefully ... and it exits 0".
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

/// The address in `slot` once the log thread has put one there, waiting up
/// to `timeout`.
fn wait_for(slot: &Mutex<Option<SocketAddr>>, timeout: Duration) -> Option<SocketAddr> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(addr) = slot.lock().ok().and_then(|m| *m) {
            return Some(addr);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The address in a chatd log line `... listening on 127.0.0.1:41234`.
///
/// PROTOCOL.md: "At start the server logs a line containing `listening on
/// ADDR` for each listener, with the real bound address, so that scripts can
/// start it on port 0 and read the port (v2: `tls listening on ADDR` for TLS
/// listeners and `metrics listening on ADDR` for the metrics listener)". The
/// chat address is the first plain listener's, so those two are skipped
/// here ([`tls_addr`] and [`metrics_addr`] read them).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    const MARK: &str = "listening on ";
    let at = line.find(MARK)?;
    let before = line[..at].trim_end();
    if before.ends_with("tls") || before.ends_with("metrics") {
        return None;
    }
    line[at + MARK.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The address in a chatd log line `... metrics listening on ADDR`
/// (PROTOCOL.md, as quoted above).
fn metrics_addr(line: &str) -> Option<SocketAddr> {
    addr_after(line, "metrics listening on ")
}

/// The address in a chatd log line `... tls listening on ADDR`
/// (PROTOCOL.md, as quoted above).
fn tls_addr(line: &str) -> Option<SocketAddr> {
    addr_after(line, "tls listening on ")
}

fn addr_after(line: &str, mark: &str) -> Option<SocketAddr> {
    let at = line.find(mark)?;
    line[at + mark.len()..]
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
        assert_eq!(listening_addr("INFO tls listening on 127.0.0.1:1"), None);
        assert_eq!(
            listening_addr("INFO metrics listening on 127.0.0.1:1"),
            None
        );
        assert_eq!(
            metrics_addr("INFO [chatd::server] metrics listening on 127.0.0.1:9"),
            Some(SocketAddr::from(([127, 0, 0, 1], 9)))
        );
        assert_eq!(metrics_addr(line), None);
        assert_eq!(
            tls_addr("INFO [chatd::server] tls listening on 127.0.0.1:8443"),
            Some(SocketAddr::from(([127, 0, 0, 1], 8443)))
        );
        assert_eq!(tls_addr(line), None);
        assert_eq!(tls_addr("INFO metrics listening on 127.0.0.1:1"), None);
    }
}
