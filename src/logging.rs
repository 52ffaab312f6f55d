//! Logging that can fail without taking the server with it.
//!
//! chatd logs through `log` and `simple_logger`, whose format operators
//! and scripts already read (`listening on ADDR`). But `simple_logger`
//! writes with `eprintln!`, which panics when stderr fails: a log pipe
//! whose reader went away (`chatd 2>&1 | tee log` when tee dies, a log
//! shipper that restarts) or a full disk would kill the server and drop
//! every user. PROTOCOL.md says the opposite: "a log destination that
//! fails never stops or slows the server: the lines are lost instead".
//!
//! `simple_logger` cannot be told to ignore write errors, so
//! [`LossyLogger`] wraps it: each record is written inside
//! `catch_unwind`, and a failed write silences logging for
//! [`LOG_RETRY`] (one second), so a broken destination costs one caught
//! panic per second, not one per line. The panic hook stays quiet about
//! exactly these panics (it could not print them anyway). Writing to a
//! closed pipe gives `EPIPE` rather than killing the process because Rust
//! programs start with SIGPIPE ignored.

use crate::tuning::LOG_RETRY;
use log::{LevelFilter, Log, Metadata, Record, SetLoggerError};
use simple_logger::SimpleLogger;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Instant;

/// The start of the panic message `eprintln!` gives when stderr fails.
const STDERR_FAILURE: &str = "failed printing to stderr";

/// A `simple_logger` whose write failures lose lines instead of panicking.
pub struct LossyLogger {
    /// The logger that formats and writes.
    inner: SimpleLogger,
    /// Until when logging is silenced after a failed write.
    silenced_until: Mutex<Option<Instant>>,
}

impl LossyLogger {
    /// Wraps `inner`.
    pub fn new(inner: SimpleLogger) -> LossyLogger {
        LossyLogger {
            inner,
            silenced_until: Mutex::new(None),
        }
    }

    /// Installs this logger (and the quiet panic hook) as the process's.
    pub fn init(self) -> Result<(), SetLoggerError> {
        let level: LevelFilter = self.inner.max_level();
        log::set_boxed_logger(Box::new(self))?;
        log::set_max_level(level);
        let default_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.starts_with(STDERR_FAILURE) {
                default_hook(info);
            }
        }));
        Ok(())
    }

    fn silenced(&self, now: Instant) -> bool {
        self.silenced_until
            .lock()
            .map(|until| until.is_some_and(|t| now < t))
            .unwrap_or(false)
    }

    fn silence(&self, now: Instant) {
        if let Ok(mut until) = self.silenced_until.lock() {
            *until = Some(now + LOG_RETRY);
        }
    }
}

impl Log for LossyLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        let now = Instant::now();
        if self.silenced(now) {
            return;
        }
        if panic::catch_unwind(AssertUnwindSafe(|| self.inner.log(record))).is_err() {
            self.silence(now);
        }
    }

    fn flush(&self) {
        let _lost = panic::catch_unwind(AssertUnwindSafe(|| self.inner.flush()));
    }
}
