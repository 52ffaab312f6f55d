//! A TLS handshake storm beside a measured session (`--tls-storm N`).
//!
//! chatd does every handshake's crypto on its one loop thread, so a crowd of
//! TLS clients arriving at once delays everyone else's lines by the time
//! their handshakes take. To measure that, the session's own swarm keeps
//! chatting and timing its lines while a second swarm, on a thread of its
//! own (its own mio loop, so neither loop waits for the other), opens N TLS
//! connections all at once partway through the step and holds them until
//! the step ends.
//!
//! The storm's clients are real users: each reads what it is sent, and, once
//! its handshake is done, moves to a room of its own ([`STORM_ROOM`]), so
//! the measured room's fan-out stays what it was and the difference between
//! a run with and without the storm is the arrivals' cost (handshake,
//! welcome, one `/join`), not a room eleven times the size.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::swarm::{ConnectReport, Swarm, SwarmConfig};
use crate::procstat;
use crate::tls::TlsClient;

/// The room the storm's clients join once connected.
pub const STORM_ROOM: &str = "storm";

/// What the storm does.
#[derive(Debug, Clone)]
pub struct StormPlan {
    /// chatd's TLS listener.
    pub addr: SocketAddr,
    /// The TLS client configuration.
    pub tls: TlsClient,
    /// Connections opened at once.
    pub clients: usize,
    /// How long after [`Storm::start`] they are opened.
    pub after: Duration,
    /// Bound on the storm's connect phase.
    pub timeout: Duration,
    /// The server's pid, to read its CPU time around the storm.
    pub pid: Option<i32>,
}

/// What the storm saw.
#[derive(Debug, Clone, Default)]
pub struct StormReport {
    /// Clients asked for.
    pub clients: usize,
    /// Seconds after the start that the connects were opened.
    pub started_s: f64,
    /// The connect phase (every handshake completed, or failed).
    pub connect: ConnectReport,
    /// Server CPU seconds during the connect phase (the handshakes and
    /// whatever else the server did meanwhile), when its pid is known.
    pub server_cpu_s: Option<f64>,
}

/// A storm under way on its own thread.
#[derive(Debug)]
pub struct Storm {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<StormReport, String>>,
}

impl Storm {
    /// Starts the thread; the connects open `plan.after` from now.
    pub fn start(plan: StormPlan) -> Storm {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || run(&plan, &stop))
        };
        Storm { stop, thread }
    }

    /// Closes the storm's connections and returns what it saw.
    pub fn finish(self) -> Result<StormReport, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "the storm's thread panicked".to_string())?
    }
}

fn server_cpu(pid: Option<i32>) -> Option<f64> {
    pid.and_then(procstat::cpu_ns).map(|ns| ns as f64 / 1e9)
}

fn run(plan: &StormPlan, stop: &AtomicBool) -> Result<StormReport, String> {
    let start = Instant::now();
    let mut swarm = Swarm::new(SwarmConfig {
        addr: plan.addr,
        name_first: false,
        no_self_echo: false,
        check_order: false,
        progress: false,
        tls: Some(plan.tls.clone()),
        join_room: Some(STORM_ROOM.to_string()),
    })
    .map_err(|e| format!("cannot create the storm's poll: {e}"))?;
    while start.elapsed() < plan.after {
        if stop.load(Ordering::Relaxed) {
            return Err("the step ended before the storm started".into());
        }
        std::thread::sleep((plan.after - start.elapsed()).min(Duration::from_millis(10)));
    }
    let started_s = start.elapsed().as_secs_f64();
    let cpu_before = server_cpu(plan.pid);
    let connect = swarm.connect(plan.clients, 0, plan.clients, plan.timeout);
    let cpu_after = server_cpu(plan.pid);
    swarm.idle_until(stop);
    Ok(StormReport {
        clients: plan.clients,
        started_s,
        connect,
        server_cpu_s: cpu_before.zip(cpu_after).map(|(b, a)| a - b),
    })
}
