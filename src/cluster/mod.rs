//! The link between a chatd process and Redis, for `--cluster`: transport
//! only, no chat semantics.
//!
//! Several chatd processes become one chat by talking through one Redis
//! (PROTOCOL.md, "Several servers, one chat"). This module is the wire
//! between one process and that Redis: RESP2 over two non-blocking sockets
//! on the server's own `mio::Poll` — no async runtime, no thread — so the
//! chat stays single-threaded and a slow or absent Redis can only ever
//! cost it bounded memory and one refused `connect` a second. What is
//! published, stored and subscribed to, and what an outage means for the
//! users, is the caller's business.
//!
//! | module | one idea |
//! |---|---|
//! | [`url`] | `--cluster URL`: `redis://HOST:PORT` or `unix:///PATH` |
//! | [`codec`] | RESP2 frames in and out of byte buffers (`redis-protocol`) |
//! | [`output`] | the bounded queue of bytes for Redis |
//! | [`conn`] | one non-blocking connection: socket, input, output |
//! | [`replies`] | which reply answers which request |
//! | [`pubsub`] | subscriptions wanted, and what the subscriber receives |
//! | [`backoff`] | the waits between connection attempts |
//! | [`down`] | why the link went down |
//! | [`link`] | the two connections as one link: states, events, timers |
//! | [`tuning`] | every bound and period, with its reason |
//!
//! # Driving it from a mio loop
//!
//! The link takes two tokens from the server (any two the server does not
//! use otherwise) and a clone of its registry. Then, in each iteration:
//!
//! ```text
//! poll(timeout = min(server's own, link.deadline() - now,
//!                    zero if link.has_unread_input()))
//!   events:   link.owns(token)?  -> link.on_event(&event, now)
//!   wake-ups: link.has_unread_input()? -> link.continue_reading(now)
//!   timers:   now >= link.deadline()?  -> link.on_timer(now)
//!             (or simply on every 100 ms tick: early calls are harmless,
//!              and no deadline of the link minds being 100 ms late)
//!   chat:     link.command(tag, &[b"PUBLISH", ch, line], now)?,
//!             link.subscribe(ch, now), ...
//!   flush:    link.flush(now)
//!   after every call above: while let Some(ev) = link.next_event() { ... }
//!             Up / Down { reason, unanswered } / Reply { tag, frame } /
//!             Message { channel, payload }
//! ```
//!
//! A server using its timer wheel instead of the deadline re-reads
//! [`Link::deadline`] after every call into the link (a failure moves it
//! to the next attempt, an attempt to the end of the handshake) and
//! schedules one wheel entry for it.
//!
//! ```no_run
//! use chatd::cluster::{ClusterUrl, Link, LinkEvent};
//! use mio::{Events, Poll, Token};
//! use std::time::{Duration, Instant};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut poll = Poll::new()?;
//! let url = ClusterUrl::parse("redis://127.0.0.1:6379")?;
//! let mut link: Link<u64> = Link::new(url, poll.registry(), Token(1), Token(2), Instant::now())?;
//! link.subscribe(b"chatd:room:lobby", Instant::now());
//! let mut events = Events::with_capacity(64);
//! loop {
//!     let now = Instant::now();
//!     let timeout = if link.has_unread_input() {
//!         Duration::ZERO
//!     } else {
//!         link.deadline().map_or(Duration::from_secs(1), |at| at.saturating_duration_since(now))
//!     };
//!     poll.poll(&mut events, Some(timeout))?;
//!     let now = Instant::now();
//!     for event in events.iter() {
//!         link.on_event(event, now);
//!     }
//!     link.continue_reading(now);
//!     link.on_timer(now);
//!     while let Some(event) = link.next_event() {
//!         match event {
//!             LinkEvent::Up => {
//!                 let _ = link.command(1, &[b"PUBLISH", b"chatd:room:lobby", b"hi"], now);
//!             }
//!             LinkEvent::Down { reason, unanswered } => {
//!                 eprintln!("Redis unreachable ({reason}); {} requests lost", unanswered.len())
//!             }
//!             LinkEvent::Reply { tag, frame } => println!("{tag}: {frame:?}"),
//!             LinkEvent::Message { channel, payload } => println!("{channel:?}: {payload:?}"),
//!         }
//!     }
//!     link.flush(now);
//! }
//! # }
//! ```

pub mod backoff;
pub mod codec;
pub mod conn;
pub mod down;
pub mod link;
pub mod output;
pub mod pubsub;
pub mod replies;
pub mod tuning;
pub mod url;

pub use down::LinkDown;
pub use link::{Link, LinkEvent, NotSent};
pub use redis_protocol::resp2::types::OwnedFrame;
pub use url::{ClusterUrl, UrlError};
