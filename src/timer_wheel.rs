//! A hashed timer wheel: deadlines cost O(entries due), not O(connections).
//!
//! Checking every connection's last activity each tick would make 20,000
//! idle users cost 20,000 comparisons ten times a second. Instead each
//! deadline sits in exactly one slot, the one for the tick at which it
//! *might* be due. For the idle timeout, activity only stamps the
//! connection; when the slot comes due the server re-checks the stamp and
//! either evicts the user or puts it back at its new deadline. Deadlines
//! further away than the wheel is wide simply wait in their slot for
//! another turn.
//!
//! An entry can also be taken out before it is due ([`TimerWheel::remove`],
//! O(1)): a connection that closes removes its deadlines at once, so the
//! wheel's memory is bounded by the deadlines of the connections open now,
//! not by the connect rate times the timeout. Entries live in one slab and
//! each slot is a doubly linked list through it; an entry is about 40 bytes
//! for a 16-byte item, and the slab keeps its peak size (bounded by the
//! number of connections the server admits) for reuse.
//!
//! The wheel is generic and does no I/O; it never decides anything itself,
//! it only hands back the entries whose deadline has come.

use slab::Slab;

/// Ticks since the server started.
pub type Tick = u64;

/// No entry (an empty slot, or the end of a slot's list).
const NIL: u32 = u32::MAX;

/// Names one scheduled entry, for [`TimerWheel::remove`]. Carries a
/// generation, so removing an entry that already fired can never remove
/// the entry that reused its place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerId {
    key: u32,
    generation: u32,
}

/// One scheduled item, linked into its slot's list.
#[derive(Debug)]
struct Entry<T> {
    deadline: Tick,
    item: T,
    generation: u32,
    prev: u32,
    next: u32,
}

/// Entries keyed by the tick at which they fall due.
#[derive(Debug)]
pub struct TimerWheel<T> {
    /// The first entry of each slot's list, or [`NIL`].
    heads: Vec<u32>,
    /// Every scheduled entry.
    entries: Slab<Entry<T>>,
    /// Every tick before this one has been handed out by [`advance`](Self::advance).
    next_tick: Tick,
    /// The generation of the next inserted entry.
    next_generation: u32,
}

impl<T> TimerWheel<T> {
    /// A wheel with `slots` slots (at least one). Wider wheels revisit
    /// far-away deadlines less often; a slot costs four bytes.
    pub fn new(slots: usize) -> Self {
        TimerWheel {
            heads: vec![NIL; slots.max(1)],
            entries: Slab::new(),
            next_tick: 0,
            next_generation: 0,
        }
    }

    /// Schedules `item` for `deadline`. A deadline already passed is handed
    /// out by the next [`advance`](Self::advance).
    pub fn insert(&mut self, deadline: Tick, item: T) -> TimerId {
        let deadline = deadline.max(self.next_tick);
        let slot = self.slot_of(deadline);
        let head = self.heads[slot];
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let key = self.entries.insert(Entry {
            deadline,
            item,
            generation,
            prev: NIL,
            next: head,
        }) as u32;
        if head != NIL {
            self.entries[head as usize].prev = key;
        }
        self.heads[slot] = key;
        TimerId { key, generation }
    }

    /// Takes a scheduled entry out before it is due; `None` if it already
    /// fired or was removed.
    pub fn remove(&mut self, id: TimerId) -> Option<T> {
        let entry = self.entries.get(id.key as usize)?;
        if entry.generation != id.generation {
            return None;
        }
        Some(self.unlink(id.key))
    }

    /// Moves time forward to `now` (inclusive) and appends to `due` every
    /// item whose deadline is at or before `now`. Never early: an item
    /// comes out only once its deadline tick has been reached.
    pub fn advance(&mut self, now: Tick, due: &mut Vec<T>) {
        if now < self.next_tick {
            return;
        }
        let ticks = now - self.next_tick + 1;
        let visits = ticks.min(self.heads.len() as Tick);
        for step in 0..visits {
            let slot = self.slot_of(self.next_tick + step);
            let mut key = self.heads[slot];
            while key != NIL {
                let entry = &self.entries[key as usize];
                let next = entry.next;
                if entry.deadline <= now {
                    due.push(self.unlink(key));
                }
                key = next;
            }
        }
        self.next_tick = now + 1;
    }

    /// How many items are scheduled.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes entry `key` out of its slot's list and the slab.
    fn unlink(&mut self, key: u32) -> T {
        let entry = self.entries.remove(key as usize);
        if entry.prev == NIL {
            let slot = self.slot_of(entry.deadline);
            self.heads[slot] = entry.next;
        } else {
            self.entries[entry.prev as usize].next = entry.next;
        }
        if entry.next != NIL {
            self.entries[entry.next as usize].prev = entry.prev;
        }
        entry.item
    }

    fn slot_of(&self, tick: Tick) -> usize {
        (tick % self.heads.len() as Tick) as usize
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

    #[test]
    fn removed_entries_never_fire_and_free_their_memory() {
        let mut wheel = TimerWheel::new(8);
        let a = wheel.insert(3, "a");
        let b = wheel.insert(3, "b");
        let c = wheel.insert(3, "c");
        assert_eq!(wheel.remove(b), Some("b"));
        assert_eq!(wheel.remove(b), None, "twice is nothing");
        assert_eq!(wheel.len(), 2);
        let mut due = Vec::new();
        wheel.advance(3, &mut due);
        due.sort_unstable();
        assert_eq!(due, vec!["a", "c"]);
        assert_eq!(wheel.remove(a), None, "already fired");
        assert_eq!(wheel.remove(c), None, "already fired");
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_stale_id_cannot_remove_the_entry_that_reused_its_place() {
        let mut wheel = TimerWheel::new(8);
        let old = wheel.insert(1, 1);
        let mut due = Vec::new();
        wheel.advance(1, &mut due);
        let new = wheel.insert(5, 2);
        assert_eq!(wheel.remove(old), None);
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.remove(new), Some(2));
    }

    #[test]
    fn churn_keeps_the_wheel_as_small_as_what_is_open() {
        // A connection that closes removes its idle deadline: a million
        // connects within one timeout leave nothing behind.
        let mut wheel = TimerWheel::new(1024);
        for i in 0..1_000_000u64 {
            let id = wheel.insert(36_000 + i % 1000, i);
            assert_eq!(wheel.remove(id), Some(i));
        }
        assert!(wheel.is_empty());
        assert!(
            wheel.entries.capacity() <= 16,
            "slab grew to {}",
            wheel.entries.capacity()
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Advance(u64),
        Remove(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..200).prop_map(Op::Insert),
            (0u64..40).prop_map(Op::Advance),
            (0usize..400).prop_map(Op::Remove),
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
            let mut ids: Vec<(usize, TimerId)> = Vec::new();
            let mut now: Tick = 0;
            let mut started = false;
            for (id, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert(delay) => {
                        let deadline = if started { now + delay } else { delay };
                        ids.push((id, wheel.insert(deadline, id)));
                        model.push((deadline.max(if started { now + 1 } else { 0 }), id));
                    }
                    Op::Remove(pick) => {
                        if ids.is_empty() {
                            continue;
                        }
                        let (id, timer) = ids[pick % ids.len()];
                        let scheduled = model.iter().any(|(_, m)| *m == id);
                        prop_assert_eq!(wheel.remove(timer).is_some(), scheduled);
                        model.retain(|(_, m)| *m != id);
                        prop_assert_eq!(wheel.len(), model.len());
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
