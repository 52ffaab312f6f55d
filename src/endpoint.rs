//! The `--metrics ADDR` listener and its HTTP connections, on the chat's
//! own event loop.
//!
//! A scrape is one short HTTP exchange ([`crate::http::MetricsConn`]); this
//! module only accepts them, keeps each in a slab under a token of the
//! [`HTTP_GENERATION`], arms its 5 s deadline on
//! the server's timer wheel, and drops it when it is done or late. What
//! goes into the answer is the server's business: it passes a `render`
//! function when a request wants the metrics, so a scrape reads counters
//! the server keeps anyway and costs nothing between scrapes.

use crate::http::{MetricsConn, Progress};
use crate::id::{ConnId, HTTP_GENERATION};
use crate::timer_wheel::TimerId;
use log::{debug, warn};
use mio::net::TcpListener;
use mio::{Interest, Registry, Token};
use slab::Slab;
use std::io;

/// One scrape in progress.
#[derive(Debug)]
struct Scrape {
    /// The HTTP exchange.
    conn: MetricsConn,
    /// Its deadline on the server's wheel (removed when it ends first).
    timer: Option<TimerId>,
}

/// The metrics listener and the scrapes in progress.
#[derive(Debug)]
pub struct Endpoint {
    /// The `--metrics` listener.
    listener: TcpListener,
    /// Scrapes in progress, keyed by the slot of their token.
    scrapes: Slab<Scrape>,
    /// The rendered metrics, kept between scrapes so rendering does not
    /// allocate once warm.
    body: Vec<u8>,
}

/// The most scrapes served at once; more wait in the listen backlog.
pub const MAX_SCRAPES: usize = 64;

impl Endpoint {
    /// Serves scrapes on `listener` (already bound and registered).
    pub fn new(listener: TcpListener) -> Endpoint {
        Endpoint {
            listener,
            scrapes: Slab::new(),
            body: Vec::new(),
        }
    }

    /// The listener, to register it.
    pub fn listener_mut(&mut self) -> &mut TcpListener {
        &mut self.listener
    }

    /// Accepts waiting scrapes (until `WouldBlock` or [`MAX_SCRAPES`]),
    /// arming each one's deadline with `arm`.
    pub fn accept_all(&mut self, registry: &Registry, mut arm: impl FnMut(usize) -> TimerId) {
        while self.scrapes.len() < MAX_SCRAPES {
            match self.listener.accept() {
                Ok((mut socket, peer)) => {
                    let key = self.scrapes.vacant_key();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(error) = registry.register(&mut socket, token(key), interest) {
                        warn!("metrics {peer}: could not register: {error}");
                        continue;
                    }
                    debug!("metrics request from {peer}");
                    self.scrapes.insert(Scrape {
                        conn: MetricsConn::new(socket),
                        timer: Some(arm(key)),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("metrics accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Drives scrape `key` on a readiness event; `render` fills the body
    /// when the request wants the metrics. Returns the deadline to remove
    /// when the scrape ended.
    pub fn event(
        &mut self,
        registry: &Registry,
        key: usize,
        readable: bool,
        writable: bool,
        scratch: &mut [u8],
        render: impl FnOnce(&mut Vec<u8>),
    ) -> Option<TimerId> {
        let scrape = self.scrapes.get_mut(key)?;
        let mut progress = Progress::Pending;
        if readable {
            progress = scrape.conn.on_readable(scratch);
        }
        if progress == Progress::Pending && writable {
            progress = scrape.conn.on_writable();
        }
        if progress == Progress::WantsMetrics {
            self.body.clear();
            render(&mut self.body);
            progress = scrape.conn.send_metrics(&self.body);
        }
        if progress == Progress::Close {
            return self.close(registry, key);
        }
        None
    }

    /// Scrape `key`'s deadline came: drop it, whatever its state.
    pub fn expire(&mut self, registry: &Registry, key: usize) {
        if let Some(scrape) = self.scrapes.get_mut(key) {
            scrape.timer = None;
            debug!("metrics request timed out");
        }
        self.close(registry, key);
    }

    /// Deregisters and drops scrape `key`; returns its deadline, if armed.
    fn close(&mut self, registry: &Registry, key: usize) -> Option<TimerId> {
        let mut scrape = self.scrapes.try_remove(key)?;
        let _ = registry.deregister(scrape.conn.socket_mut());
        scrape.timer
    }
}

/// The token of scrape `key`.
pub fn token(key: usize) -> Token {
    ConnId::new(key, HTTP_GENERATION).token()
}
