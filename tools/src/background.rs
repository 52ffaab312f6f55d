//! A thread that repeats some measurement until told to stop: what
//! [`RssSampler`](crate::procstat::RssSampler) and
//! [`Scraper`](crate::metrics::Scraper) are built on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A thread running a loop that checks its stop flag; stopped and joined
/// by [`stop`](Self::stop) or on drop.
#[derive(Debug)]
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts `body` on a thread of its own; it should return soon after
    /// the flag it is given turns true.
    pub fn spawn(body: impl FnOnce(&AtomicBool) + Send + 'static) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || body(&flag));
        Background {
            stop,
            thread: Some(thread),
        }
    }

    /// Tells the thread to stop and waits for it (once; later calls do
    /// nothing).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}
