//! A hashed timer wheel: the idle timeout costs O(users due), not O(users).
//!
//! Checking every connection's last activity each tick would make 20,000
//! idle users cost 20,000 comparisons ten times a second. Instead each
//! connection sits in exactly one slot, the one for the tick at which it
//! *might* be idle. Activity only stamps the connection; when the slot comes
//! due the server re-checks the stamp and either evicts the user or puts it
//! back at its new deadline. Deadlines further away than the wheel is wide
//! simply wait in their slot for another turn.
//!
//! The wheel is generic and does no I/O; it never decides anything itself,
//! it only hands back the entries whose deadline has come.

/// Ticks since the server started.
pub type Tick = u64;

/// Entries keyed by the tick at which they fall due.
#[derive(Debug)]
pub struct TimerWheel<T> {
    slots: Vec<Vec<(Tick, T)>>,
    /// Every tick before this one has been handed out by [`advance`](Self::advance).
    next_tick: Tick,
    len: usize,
}

impl<T> TimerWheel<T> {
    /// A wheel with `slots` slots (at least one). Wider wheels revisit
    /// far-away deadlines less often; the slot vectors cost nothing until used.
    pub fn new(slots: usize) -> Self {
        TimerWheel {
            slots: (0..slots.max(1)).map(|_| Vec::new()).collect(),
            next_tick: 0,
            len: 0,
        }
    }

    /// Schedules `item` for `deadline`. A deadline already passed is handed
    /// out by the next [`advance`](Self::advance).
    pub fn insert(&mut self, deadline: Tick, item: T) {
        let deadline = deadline.max(self.next_tick);
        let slot = self.slot_of(deadline);
        self.slots[slot].push((deadline, item));
        self.len += 1;
    }

    /// Moves time forward to `now` (inclusive) and appends to `due` every
    /// item whose deadline is at or before `now`. Never early: an item
    /// comes out only once its deadline tick has been reached.
    pub fn advance(&mut self, now: Tick, due: &mut Vec<T>) {
        if now < self.next_tick {
            return;
        }
        let ticks = now - self.next_tick + 1;
        let visits = ticks.min(self.slots.len() as Tick);
        for step in 0..visits {
            let slot = self.slot_of(self.next_tick + step);
            let entries = &mut self.slots[slot];
            let mut kept = 0;
            for i in 0..entries.len() {
                if entries[i].0 <= now {
                    continue;
                }
                entries.swap(kept, i);
                kept += 1;
            }
            for (_, item) in entries.drain(kept..) {
                due.push(item);
                self.len -= 1;
            }
            if entries.is_empty() && entries.capacity() > 64 {
                *entries = Vec::new();
            }
        }
        self.next_tick = now + 1;
    }

    /// How many items are scheduled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot_of(&self, tick: Tick) -> usize {
        (tick % self.slots.len() as Tick) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn items_come_out_at_their_tick_not_before() {
        let mut wheel = TimerWheel::new(8);
        wheel.insert(3, "a");
        wheel.insert(5, "b");
        let mut due = Vec::new();
        wheel.advance(2, &mut due);
        assert!(due.is_empty());
        wheel.advance(3, &mut due);
        assert_eq!(due, vec!["a"]);
        due.clear();
        wheel.advance(10, &mut due);
        assert_eq!(due, vec!["b"]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn deadlines_beyond_the_width_wait_for_their_turn() {
        let mut wheel = TimerWheel::new(4);
        wheel.insert(9, 1);
        let mut due = Vec::new();
        for now in 0..9 {
            wheel.advance(now, &mut due);
            assert!(due.is_empty(), "early at {now}");
        }
        wheel.advance(9, &mut due);
        assert_eq!(due, vec![1]);
    }

    #[test]
    fn past_deadlines_fire_on_next_advance() {
        let mut wheel = TimerWheel::new(4);
        let mut due = Vec::new();
        wheel.advance(20, &mut due);
        wheel.insert(3, 7);
        wheel.advance(21, &mut due);
        assert_eq!(due, vec![7]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..200).prop_map(Op::Insert),
            (0u64..40).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// The wheel hands out exactly what a naive list scan would, at the
        /// same moments: every item once, never before its deadline, and no
        /// later than the advance that reaches it.
        #[test]
        fn matches_a_naive_model(slots in 1usize..32, ops in proptest::collection::vec(op(), 0..200)) {
            let mut wheel = TimerWheel::new(slots);
            let mut model: Vec<(Tick, usize)> = Vec::new();
            let mut now: Tick = 0;
            let mut started = false;
            for (id, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert(delay) => {
                        let deadline = if started { now + delay } else { delay };
                        wheel.insert(deadline, id);
                        model.push((deadline.max(if started { now + 1 } else { 0 }), id));
                    }
                    Op::Advance(step) => {
                        now = if started { now + step } else { step };
                        started = true;
                        let mut due = Vec::new();
                        wheel.advance(now, &mut due);
                        due.sort_unstable();
                        let mut expected: Vec<usize> =
                            model.iter().filter(|(d, _)| *d <= now).map(|(_, id)| *id).collect();
                        expected.sort_unstable();
                        model.retain(|(d, _)| *d > now);
                        prop_assert_eq!(due, expected);
                        prop_assert_eq!(wheel.len(), model.len());
                    }
                }
            }
        }
    }
}
