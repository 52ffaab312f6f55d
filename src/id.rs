//! Connection ids that carry a generation.
//!
//! Connections live in a slab, and a slab reuses the slot of a closed
//! connection for the next one. Anything that remembers a connection past
//! the moment it was looked up — a flood wake-up, a timer, a room's member
//! list, a mio event for a socket that closed in the same poll batch — must
//! not be taken for the slot's next occupant. So an id is the slot *and* a
//! generation number, and a lookup with a stale id finds nothing.
//!
//! The id is also the connection's mio token: the slot in the low 32 bits,
//! the generation in the high 32. Generations [`SERVER_GENERATION`] and
//! [`HTTP_GENERATION`] are never given to a chat connection, so the server's
//! own tokens (listeners, signals, the waker, metrics requests) cannot
//! collide with one.

use mio::Token;

/// The generation of the server's own tokens (listeners, signals, waker).
pub const SERVER_GENERATION: u32 = u32::MAX;

/// The generation of metrics (HTTP) connections' tokens.
pub const HTTP_GENERATION: u32 = u32::MAX - 1;

/// The generation of the ids a cluster server gives the users of the other
/// servers (see [`crate::chat::cluster`]): never a connection's, so a line
/// queued to one of them reaches no socket.
pub const REMOTE_GENERATION: u32 = u32::MAX - 2;

/// One chat connection, for as long as it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// The slot in the connection slab.
    slot: u32,
    /// Which occupant of the slot this is.
    generation: u32,
}

impl ConnId {
    /// The id for `slot`'s occupant number `generation`.
    pub fn new(slot: usize, generation: u32) -> ConnId {
        ConnId {
            slot: slot as u32,
            generation,
        }
    }

    /// The slab slot.
    pub fn slot(self) -> usize {
        self.slot as usize
    }

    /// The generation.
    pub fn generation(self) -> u32 {
        self.generation
    }

    /// The id of remote user number `n` (see [`REMOTE_GENERATION`]).
    pub fn remote(n: u32) -> ConnId {
        ConnId {
            slot: n,
            generation: REMOTE_GENERATION,
        }
    }

    /// True for a user of another cluster server.
    pub fn is_remote(self) -> bool {
        self.generation == REMOTE_GENERATION
    }

    /// The id as one number (the token's value), as the cluster names it.
    pub fn as_u64(self) -> u64 {
        u64::from(self.generation) << 32 | u64::from(self.slot)
    }

    /// The id [`as_u64`](Self::as_u64) gave.
    pub fn from_u64(raw: u64) -> ConnId {
        ConnId {
            slot: raw as u32,
            generation: (raw >> 32) as u32,
        }
    }

    /// The mio token the connection's socket is registered under.
    pub fn token(self) -> Token {
        Token((u64::from(self.generation) << 32 | u64::from(self.slot)) as usize)
    }

    /// The id a token stands for (which may be a server token: check the
    /// generation, or look it up).
    pub fn from_token(token: Token) -> ConnId {
        let raw = token.0 as u64;
        ConnId {
            slot: raw as u32,
            generation: (raw >> 32) as u32,
        }
    }
}

/// Hands out generations: every new connection gets the next one, skipping
/// the generations reserved for the server's own tokens.
#[derive(Debug, Default)]
pub struct Generations {
    next: u32,
}

impl Generations {
    /// The generation for the next connection.
    pub fn take(&mut self) -> u32 {
        let generation = self.next;
        self.next = if self.next >= REMOTE_GENERATION - 1 {
            0
        } else {
            self.next + 1
        };
        generation
    }
}

/// The token of a server-owned source: listeners, signals and the like.
pub fn server_token(index: usize) -> Token {
    ConnId::new(index, SERVER_GENERATION).token()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let id = ConnId::new(12345, 678);
        assert_eq!(ConnId::from_token(id.token()), id);
        assert_eq!(id.slot(), 12345);
        assert_eq!(id.generation(), 678);
    }

    #[test]
    fn generations_skip_the_reserved_ones() {
        let mut generations = Generations {
            next: REMOTE_GENERATION - 2,
        };
        assert_eq!(generations.take(), REMOTE_GENERATION - 2);
        assert_eq!(generations.take(), REMOTE_GENERATION - 1);
        assert_eq!(generations.take(), 0);
    }

    #[test]
    fn server_tokens_never_look_like_connections() {
        let token = server_token(3);
        assert_eq!(ConnId::from_token(token).generation(), SERVER_GENERATION);
    }
}
