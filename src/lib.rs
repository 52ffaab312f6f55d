//! chatd: a chat server on one thread, joined with plain `nc` (or TLS).
//!
//! The crate is split so that everything that can be a pure data structure
//! is one, tested without sockets, and the I/O lives in few places:
//! [`stream`] (one connection's bytes, plain or TLS), [`conn`] and
//! [`conns`] (connections and their queues), [`store`] (the SQLite file),
//! [`endpoint`] (metrics over HTTP), [`cluster`] (the Redis link) and
//! [`server`] (the mio loop that owns them all).
//!
//! ```text
//! bytes --framing--> lines --clean--> text --command--> Command
//!                                                        |
//!   chat (users, names, rooms, presence, history) <------+
//!          |  lines (Outbound)          | effects (disconnect, charge)
//!          v                            v
//!   conns: outbox per connection   server loop --> sockets, timers
//! ```

pub mod chat;
pub mod clean;
pub mod cluster;
pub mod command;
pub mod config;
pub mod conn;
pub mod conns;
pub mod endpoint;
pub mod fdlimit;
pub mod flood;
pub mod flush;
pub mod framing;
pub mod history;
pub mod http;
pub mod id;
pub mod iplimit;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod oper;
pub mod outbox;
pub mod presence;
pub mod protocol;
pub mod rooms;
pub mod server;
pub mod store;
pub mod stream;
pub mod timer_wheel;
pub mod tls;
pub mod tuning;
pub mod wakeups;

pub use config::Config;
pub use server::{Server, ShutdownHandle};
