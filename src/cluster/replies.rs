//! Which reply answers which request: a FIFO of the caller's tags.
//!
//! Redis answers the commands of one connection in the order it received
//! them, exactly one reply each (outside pub/sub). So matching replies to
//! requests needs no ids on the wire: each command sent pushes its tag,
//! each reply pops the oldest. The queue also knows when its oldest
//! request was sent, which is how a Redis that stopped answering is told
//! from a slow one.

use std::collections::VecDeque;
use std::time::Instant;

/// One request waiting for its reply.
#[derive(Debug)]
struct Waiting<T> {
    /// What the caller (or the link itself) will be told the reply is for.
    tag: T,
    /// When the request was queued.
    sent: Instant,
}

/// Requests sent on one connection and not answered yet, oldest first.
#[derive(Debug)]
pub struct Replies<T> {
    /// The waiting requests, in the order they were sent.
    waiting: VecDeque<Waiting<T>>,
}

impl<T> Default for Replies<T> {
    fn default() -> Self {
        Replies {
            waiting: VecDeque::new(),
        }
    }
}

impl<T> Replies<T> {
    /// Nothing waiting.
    pub fn new() -> Replies<T> {
        Replies::default()
    }

    /// A request tagged `tag` was sent at `now`.
    pub fn sent(&mut self, tag: T, now: Instant) {
        self.waiting.push_back(Waiting { tag, sent: now });
    }

    /// The tag of the request a reply just received answers, or `None` if
    /// nothing was waiting (a reply to nothing: Redis is confused, or we are).
    pub fn answered(&mut self) -> Option<T> {
        self.waiting.pop_front().map(|waiting| waiting.tag)
    }

    /// When the oldest request still waiting was sent.
    pub fn oldest(&self) -> Option<Instant> {
        self.waiting.front().map(|waiting| waiting.sent)
    }

    /// Requests waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Every waiting tag, oldest first, leaving the queue empty: the
    /// requests a lost connection will never answer.
    pub fn unanswered(&mut self) -> impl Iterator<Item = T> + '_ {
        self.waiting.drain(..).map(|waiting| waiting.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn replies_answer_requests_in_the_order_they_were_sent() {
        let start = Instant::now();
        let mut replies = Replies::new();
        assert_eq!(replies.oldest(), None);
        replies.sent("set", start);
        replies.sent("get", start + Duration::from_millis(5));
        replies.sent("incr", start + Duration::from_millis(9));
        assert_eq!(replies.oldest(), Some(start));
        assert_eq!(replies.answered(), Some("set"));
        assert_eq!(replies.oldest(), Some(start + Duration::from_millis(5)));
        assert_eq!(replies.answered(), Some("get"));
        assert_eq!(replies.len(), 1);
        assert_eq!(replies.answered(), Some("incr"));
        assert_eq!(replies.answered(), None);
        assert!(replies.is_empty());
    }

    #[test]
    fn a_lost_connection_hands_back_every_waiting_tag() {
        let now = Instant::now();
        let mut replies = Replies::new();
        for tag in 1..=3 {
            replies.sent(tag, now);
        }
        assert_eq!(replies.answered(), Some(1));
        assert_eq!(replies.unanswered().collect::<Vec<_>>(), vec![2, 3]);
        assert!(replies.is_empty());
        assert_eq!(replies.oldest(), None);
    }
}
