//! chatd: a chat room on one thread, joined with plain `nc`.
//!
//! The crate is split so that everything that can be a pure data structure
//! is one, tested without sockets, and the I/O lives in two places only:
//! [`conn`] (one socket) and [`server`] (the mio loop that owns them all).
//!
//! ```text
//! bytes --framing--> lines --clean--> text --command--> Command
//!                                                        |
//!          room (names, presence, fan-out) <-------------+
//!                      |
//!          outbox (per connection) --server loop--> socket
//! ```

pub mod clean;
pub mod command;
pub mod config;
pub mod conn;
pub mod fdlimit;
pub mod flood;
pub mod framing;
pub mod names;
pub mod outbox;
pub mod presence;
pub mod room;
pub mod server;
pub mod session;
pub mod stream;
pub mod timer_wheel;
pub mod tls;

pub use config::Config;
pub use server::{Server, ShutdownHandle};
