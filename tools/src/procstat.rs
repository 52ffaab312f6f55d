//! What the server costs, read from `/proc` (Linux only).
//!
//! CPU comes from `/proc/PID/stat` (utime + stime, in clock ticks of
//! `sysconf(_SC_CLK_TCK)`), memory from `/proc/PID/status` (`VmRSS`, and
//! `VmHWM`, the peak, which catches a spike between two samples). Sampling
//! another process this way costs it nothing, unlike an in-process profiler.
//! [`RssSampler`] polls it from a thread to catch a peak as it happens. The
//! tools' own open-file limit is raised here too, since it is the same kind
//! of process plumbing.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::background::Background;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// User + system CPU time, in seconds.
    pub cpu_s: f64,
    /// Resident set size now, in bytes.
    pub rss: u64,
    /// Peak resident set size so far, in bytes.
    pub hwm: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: i32) -> io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let ticks = parse_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc stat"))?;
    Ok(ProcSample {
        cpu_s: ticks as f64 / clock_ticks_per_second() as f64,
        rss: status_kib(&status, "VmRSS:").unwrap_or(0) * 1024,
        hwm: status_kib(&status, "VmHWM:").unwrap_or(0) * 1024,
    })
}

/// CPU time a process has used, in nanoseconds: the sum over its threads
/// of `/proc/PID/task/TID/schedstat`'s first field (time on a CPU). Unlike
/// `stat`'s utime + stime, which count in clock ticks (10 ms at the usual
/// 100 Hz), this resolves a phase of a few hundred milliseconds, such as
/// the server's CPU over a few thousand TLS handshakes. Threads that have
/// exited are not counted, so use it for a process whose threads live as
/// long as the measurement (chatd has one); `None` if unreadable.
pub fn cpu_ns(pid: i32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        total += schedstat_ns(&std::fs::read_to_string(path).ok()?)?;
    }
    Some(total)
}

/// The calling thread's CPU time in nanoseconds (its `schedstat`), e.g. a
/// client loop's own cost; `None` if unreadable.
pub fn thread_cpu_ns() -> Option<u64> {
    schedstat_ns(&std::fs::read_to_string("/proc/thread-self/schedstat").ok()?)
}

/// The first field of a `schedstat` line: nanoseconds on a CPU.
fn schedstat_ns(line: &str) -> Option<u64> {
    line.split_whitespace().next()?.parse().ok()
}

/// CPU seconds the whole machine has been busy since boot, all cores
/// together: the `cpu` line of `/proc/stat` without `idle` and `iowait`.
/// The difference over a step, less what the processes of the run used,
/// is what everything else took meanwhile (other processes, and interrupt
/// work charged to no process); `None` if unreadable.
pub fn machine_busy_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy(stat.lines().next()?).map(|t| t as f64 / clock_ticks_per_second() as f64)
}

/// Busy ticks from `/proc/stat`'s `cpu` line: every field but idle (4th)
/// and iowait (5th); guest time is already inside user time, so the
/// fields after steal are left out.
fn parse_machine_busy(line: &str) -> Option<u64> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    Some(v.iter().sum::<u64>() - v[3] - v[4])
}

/// How many descriptors a process has open (entries of `/proc/PID/fd`):
/// for a server, listeners and a few fixed ones plus one per connection,
/// so it tells when every client of a crowd has really been closed.
pub fn open_fds(pid: i32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Clock ticks per second, as `/proc` counts CPU time.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 on error.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// utime + stime from a `/proc/PID/stat` line. The command name (field 2)
/// is in parentheses and may contain spaces, so fields are counted from
/// the last `)`: after it come state (field 3) ... utime (14), stime (15).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The value of a `KEY:  1234 kB` line of `/proc/PID/status`, in KiB.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit, so thousands
/// of client sockets fit; returns the (soft, hard) limits now in force.
pub fn raise_nofile_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return (0, 0);
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: raised is a valid rlimit; lowering nothing, raising soft to hard.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}

/// Makes the child get SIGKILL if this process dies first (Linux
/// `PR_SET_PDEATHSIG`), so even a chatload killed with SIGKILL, whose Drop
/// guards never run, leaves no server behind. The signal follows the
/// thread that spawned the child: spawn from a thread that outlives it.
pub fn die_with_parent(command: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only prctl(2) and getppid(2), both async-signal-safe; it allocates
    // nothing and takes no lock.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl: then we are orphaned
            // already and must not run on.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Samples a process's RSS from a thread of its own every `every` until
/// finished, keeping the peak: `VmHWM` alone would not say *when* memory
/// peaked, and the tools compare it against bounds during a run.
#[derive(Debug)]
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    thread: Background,
}

impl RssSampler {
    /// Starts sampling `pid` every `every`.
    pub fn start(pid: i32, every: Duration) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&peak);
        let thread = Background::spawn(move |stop| {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(s) = sample(pid) {
                    seen.fetch_max(s.rss, Ordering::Relaxed);
                }
                std::thread::sleep(every);
            }
        });
        RssSampler { peak, thread }
    }

    /// Highest VmRSS sampled so far, in bytes.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Stops the sampling thread; returns the peak.
    pub fn finish(mut self) -> u64 {
        self.thread.stop();
        self.peak()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_name_with_spaces() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
    }

    #[test]
    fn own_process_can_be_sampled() {
        let s = sample(std::process::id() as i32).expect("own /proc entry");
        assert!(s.rss > 0 && s.hwm >= s.rss);
    }

    #[test]
    fn sampler_sees_own_rss() {
        let sampler = RssSampler::start(std::process::id() as i32, Duration::from_millis(1));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sampler.peak() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(sampler.finish() > 0);
    }

    #[test]
    fn cpu_in_nanoseconds() {
        assert_eq!(schedstat_ns("396882 462925 8\n"), Some(396_882));
        assert_eq!(schedstat_ns(""), None);
        let before = thread_cpu_ns().expect("own schedstat");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let after = thread_cpu_ns().expect("own schedstat");
        assert!(after > before, "{before} -> {after}");
        assert!(cpu_ns(std::process::id() as i32).expect("own tasks") >= after - before);
        assert_eq!(cpu_ns(-1), None);
    }

    #[test]
    fn machine_busy_time() {
        assert_eq!(
            parse_machine_busy("cpu  10 1 5 1000 7 2 3 4 50 0"),
            Some(10 + 1 + 5 + 2 + 3 + 4)
        );
        assert_eq!(parse_machine_busy("cpu0 1 2 3 4 5"), None);
        assert!(machine_busy_s().expect("/proc/stat") > 0.0);
    }

    #[test]
    fn own_descriptors_are_counted() {
        // stdin, stdout, stderr at least; other tests open and close
        // files meanwhile, so no exact count.
        assert!(open_fds(std::process::id() as i32).expect("own fds") >= 3);
        assert!(open_fds(-1).is_err());
    }

    #[test]
    fn status_values_in_kib() {
        assert_eq!(
            status_kib("VmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n", "VmRSS:"),
            Some(1024)
        );
    }
}
