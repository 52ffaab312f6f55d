//! Why the link is down: one reason, kept for the caller's log line.
//!
//! Every failure of either connection — a refused connect, a reset, Redis
//! closing, a reply that does not parse, a queue past its bound, a reply
//! that never comes — ends the same way: both connections are closed, the
//! requests still waiting are handed back unanswered, and reconnection
//! starts. Only the reason differs, so it is a value, not a control path.

use super::tuning::{INPUT_LIMIT, OUTPUT_LIMIT};
use std::fmt;
use std::io;

/// Why a connection to Redis failed (and with it the link).
#[derive(Debug)]
pub enum LinkDown {
    /// A socket call failed: connect refused, reset, unreachable, or the
    /// host name did not resolve.
    Io(io::Error),
    /// Redis closed the connection (end of stream).
    Closed,
    /// More than [`OUTPUT_LIMIT`] bytes were waiting for Redis to read
    /// them: it stopped reading or cannot keep up.
    OutputFull,
    /// An incomplete reply passed [`INPUT_LIMIT`] bytes.
    InputTooLarge,
    /// Redis sent bytes that are not RESP2, an error where the handshake
    /// needed an answer (`-LOADING`, `-NOAUTH`), or a reply to nothing.
    Protocol(String),
    /// The handshake or a reply took too long: Redis is stopped or swamped.
    Timeout,
}

impl fmt::Display for LinkDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkDown::Io(error) => write!(f, "{error}"),
            LinkDown::Closed => f.write_str("Redis closed the connection"),
            LinkDown::OutputFull => write!(
                f,
                "Redis is not reading ({} MiB queued for it)",
                OUTPUT_LIMIT >> 20
            ),
            LinkDown::InputTooLarge => {
                write!(f, "a reply from Redis is over {} MiB", INPUT_LIMIT >> 20)
            }
            LinkDown::Protocol(what) => write!(f, "protocol error: {what}"),
            LinkDown::Timeout => f.write_str("Redis did not answer in time"),
        }
    }
}

impl std::error::Error for LinkDown {}

impl From<io::Error> for LinkDown {
    fn from(error: io::Error) -> Self {
        LinkDown::Io(error)
    }
}
