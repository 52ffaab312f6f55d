//! Connections whose reading is suspended, and when to resume them.
//!
//! The loop stops reading a connection early for three reasons, each with
//! its own list: it is out of flood tokens (resume when the next token is
//! due), it had its [`LINES_PER_TURN`](crate::tuning::LINES_PER_TURN) lines
//! this turn (resume in the *next* loop iteration, so the others' events
//! and the flush come first), or the input gate is closed (resume when it
//! opens). A connection is on at most one list at a time — the loop keeps
//! a `parked` flag on it — and ids are generational, so a connection that
//! closed while parked is simply not found when its turn comes.
//!
//! Pure bookkeeping: no sockets, the time is passed in.

use crate::id::ConnId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// The three wake-up lists.
#[derive(Debug, Default)]
pub struct Wakeups {
    /// Waiting for a flood token: (when, who).
    flood: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Waiting for the input gate to open.
    gated: Vec<ConnId>,
    /// Had their lines this turn, parked during this iteration.
    next_turn: Vec<ConnId>,
    /// Parked during the previous iteration: their turn is now.
    this_turn: Vec<ConnId>,
}

impl Wakeups {
    /// Parks `id` until its next flood token, due `at`.
    pub fn until_token(&mut self, id: ConnId, at: Instant) {
        self.flood.push(Reverse((at, id)));
    }

    /// Parks `id` until the input gate opens.
    pub fn until_gate_opens(&mut self, id: ConnId) {
        self.gated.push(id);
    }

    /// Parks `id` until the next loop iteration.
    pub fn until_next_turn(&mut self, id: ConnId) {
        self.next_turn.push(id);
    }

    /// Starts a loop iteration: those parked for their next turn during the
    /// previous one become due.
    pub fn begin_iteration(&mut self) {
        debug_assert!(self.this_turn.is_empty());
        std::mem::swap(&mut self.this_turn, &mut self.next_turn);
    }

    /// Moves into `due` every connection to resume now: this iteration's
    /// turns, the flood wake-ups whose time came, and, if the gate is open,
    /// everyone it held back. Whoever is parked again while they run goes
    /// on a list for later, never into this call's result, so a
    /// connection runs at most one turn per iteration.
    pub fn take_due(&mut self, now: Instant, gate_open: bool, due: &mut Vec<ConnId>) {
        due.append(&mut self.this_turn);
        while let Some(Reverse((at, id))) = self.flood.peek().copied() {
            if at > now {
                break;
            }
            self.flood.pop();
            due.push(id);
        }
        if gate_open {
            due.append(&mut self.gated);
        }
    }

    /// True if someone waits for the next iteration (the poll must not sleep).
    pub fn turns_pending(&self) -> bool {
        !self.next_turn.is_empty()
    }

    /// True if someone waits for the input gate.
    pub fn gated(&self) -> bool {
        !self.gated.is_empty()
    }

    /// When the next flood token is due, if anyone waits for one.
    pub fn next_token(&self) -> Option<Instant> {
        self.flood.peek().map(|Reverse((at, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(n: usize) -> ConnId {
        ConnId::new(n, 0)
    }

    #[test]
    fn a_turn_over_waits_for_the_next_iteration_not_this_one() {
        // The bug this prevents: a connection that used its 64 lines was
        // resumed by the same iteration's wake-up pass, so it ran 128
        // lines before the flush.
        let mut wakeups = Wakeups::default();
        let now = Instant::now();
        let mut due = Vec::new();
        wakeups.begin_iteration();
        wakeups.until_next_turn(id(1));
        wakeups.take_due(now, true, &mut due);
        assert!(due.is_empty(), "not in the iteration that parked it");
        assert!(wakeups.turns_pending());
        wakeups.begin_iteration();
        wakeups.take_due(now, true, &mut due);
        assert_eq!(due, vec![id(1)]);
        assert!(!wakeups.turns_pending());
    }

    #[test]
    fn flood_wake_ups_come_in_time_order_and_not_before() {
        let mut wakeups = Wakeups::default();
        let now = Instant::now();
        wakeups.until_token(id(2), now + Duration::from_millis(20));
        wakeups.until_token(id(1), now + Duration::from_millis(10));
        assert_eq!(wakeups.next_token(), Some(now + Duration::from_millis(10)));
        let mut due = Vec::new();
        wakeups.take_due(now, true, &mut due);
        assert!(due.is_empty());
        wakeups.take_due(now + Duration::from_millis(15), true, &mut due);
        assert_eq!(due, vec![id(1)]);
        due.clear();
        wakeups.take_due(now + Duration::from_millis(25), true, &mut due);
        assert_eq!(due, vec![id(2)]);
    }

    #[test]
    fn the_gated_wait_for_the_gate() {
        let mut wakeups = Wakeups::default();
        let now = Instant::now();
        wakeups.until_gate_opens(id(3));
        let mut due = Vec::new();
        wakeups.take_due(now, false, &mut due);
        assert!(due.is_empty());
        assert!(wakeups.gated());
        wakeups.take_due(now, true, &mut due);
        assert_eq!(due, vec![id(3)]);
        assert!(!wakeups.gated());
    }
}
