//! The server as a process: starting it, running it to its exit at start,
//! its memory from /proc, signals, a log pipe the test can close, and the
//! test's own descriptor limit.

use super::{CHATD, READ_TIMEOUT, RealServer};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Starts `command` (chatd) with `--listen 127.0.0.1:0` added, no stdin or
/// stdout, and its stderr (the log) piped.
pub fn spawn_listening(command: &mut Command) -> Child {
    spawn_as_given(command.args(["--listen", "127.0.0.1:0"]))
}

/// Starts `command` (chatd) as it is, no stdin or stdout, and its stderr
/// (the log) piped.
pub fn spawn_as_given(command: &mut Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chatd starts")
}

/// Runs `command` (chatd, no stdin or stdout) expecting it to exit at
/// start; returns its status and everything it wrote to stderr. A server
/// still running after [`READ_TIMEOUT`] (it accepted what it should have
/// refused) is killed and fails the test.
pub fn run_to_exit(command: &mut Command) -> (ExitStatus, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chatd starts");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let end = Instant::now() + READ_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            let log = reader.join().unwrap_or_default();
            panic!("{command:?} was still running after {READ_TIMEOUT:?}; log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, reader.join().expect("stderr reader"))
}

/// The first word after `key` on the line of `/proc/PID/FILE` that starts
/// with it (`status` and `VmRSS:`, `limits` and `Max file size`).
pub fn proc_word(pid: u32, file: &str, key: &str) -> String {
    let path = format!("/proc/{pid}/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let line = text
        .lines()
        .find(|line| line.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in {path}"));
    line[key.len()..]
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value after {key} in {path}"))
        .to_string()
}

/// A field of /proc/PID/status given in kB (`VmRSS`, `VmHWM`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let kib: u64 = proc_word(pid, "status", &format!("{field}:"))
        .parse()
        .expect("a number of kB");
    kib * 1024
}

/// Resident memory now.
pub fn rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS")
}

/// Peak resident memory since the process started.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM")
}

/// CPU time (user + system) the process has used so far, from the
/// `utime` and `stime` fields of /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Duration {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // Fields after the command name (in parentheses, which may hold
    // spaces): state is field 3, utime 14 and stime 15.
    let (_, after_name) = text.rsplit_once(')').expect("a command name");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(per_second > 0, "_SC_CLK_TCK");
    Duration::from_micros(ticks * 1_000_000 / per_second as u64)
}

/// `bytes` in MiB, for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit, and checks
/// that leaves at least `needed` descriptors (a test with thousands of
/// client sockets in one process needs that).
pub fn raise_nofile(needed: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur >= needed as libc::rlim_t,
        "this test needs {needed} descriptors; the hard RLIMIT_NOFILE is {} \
         (raise it, e.g. `ulimit -Hn 4096`)",
        limit.rlim_max
    );
}

impl RealServer {
    /// `chatd --listen 127.0.0.1:0 ARGS` with stderr to a pipe that the
    /// test holds: it is read up to the `listening on ADDR` line and then
    /// left alone, so the test can close it (drop the reader) while the
    /// server runs. The returned server keeps no log.
    pub fn start_holding_log(args: &[&str]) -> (RealServer, BufReader<ChildStderr>) {
        let mut child = spawn_listening(Command::new(CHATD).args(args));
        let stderr = child.stderr.take().expect("stderr is piped");
        // Read on a helper thread so a server that never logs fails the
        // test after READ_TIMEOUT instead of hanging it; the reader comes
        // back with the address, positioned after the `listening on` line.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut log = BufReader::new(stderr);
            let mut line = String::new();
            while log.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some((_, addr)) = line.split_once("listening on ") {
                    let addr = addr.trim().to_string();
                    let _ = tx.send((addr, log));
                    return;
                }
                line.clear();
            }
        });
        let (addr, log) = rx
            .recv_timeout(READ_TIMEOUT)
            .expect("chatd logs `listening on ADDR`");
        let addr = addr.parse().expect("a socket address");
        let server = RealServer {
            child,
            addr,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        (server, log)
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill only sends a signal to our own child process.
        let sent = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "signal {signal} delivered");
    }

    /// The exit status if the server has exited, without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }
}
