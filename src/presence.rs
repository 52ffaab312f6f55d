//! Arrival and departure notices, batched so a connect storm stays cheap.
//!
//! Announcing each of 10,000 arrivals to everyone already there costs 50
//! million lines; Go's and tokio's chat examples drown in exactly that. So
//! notices are collected into a batch and flushed once per tick (and before
//! any user line reaches another user, so a newcomer's first message never
//! overtakes its arrival). A batch of at most three events is told one by
//! one; a larger one becomes a single `N users have …` line.
//!
//! Batches are kept per room (PROTOCOL.md v2: "a room's batch is what
//! happened in it since the last flush"); this module knows nothing of
//! rooms, the chat state keeps one batch in each.
//!
//! Who hears a notice is decided by event order alone: every event gets a
//! sequence number, every user remembers the number of its own arrival, and a
//! notice carries the bound `heard_by_joined_before`. That is all it takes to
//! say "those who were connected when it happened and still are" — the ones
//! who left are gone from the room anyway. The batch keeps at most three
//! events of each kind plus counters, so its memory is fixed however many
//! users come and go within one tick.

use crate::protocol;

/// Position of an event in the room's history; users are ordered by the
/// sequence number of their arrival.
pub type Seq = u64;

/// Up to this many events of one kind are announced one by one.
pub const ONE_BY_ONE_MAX: usize = 3;

/// A line to deliver to every user whose arrival precedes a bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The text, without newline.
    pub line: String,
    /// Delivered to users whose own arrival sequence number is below this.
    pub heard_by_joined_before: Seq,
    /// An `N users have left` line: not for any of the N, even one who
    /// came back before the flush (the room keeps who left in the batch).
    pub not_for_departed: bool,
}

/// One kind of event (arrivals or departures) within the current batch.
#[derive(Debug, Default)]
struct Tally {
    count: usize,
    first_seq: Seq,
    /// The first [`ONE_BY_ONE_MAX`] events: their sequence number and line.
    shown: Vec<(Seq, String)>,
}

impl Tally {
    fn record(&mut self, seq: Seq, line: impl FnOnce() -> String) {
        if self.count == 0 {
            self.first_seq = seq;
        }
        self.count += 1;
        if self.shown.len() < ONE_BY_ONE_MAX {
            self.shown.push((seq, line()));
        }
    }

    fn drain_into(&mut self, out: &mut Vec<Notice>, many: &str, many_bound: Seq) {
        if self.count > ONE_BY_ONE_MAX {
            out.push(Notice {
                line: protocol::many(self.count, many),
                heard_by_joined_before: many_bound,
                not_for_departed: many_bound == Seq::MAX,
            });
            self.shown.clear();
        } else {
            out.extend(self.shown.drain(..).map(|(seq, line)| Notice {
                line,
                heard_by_joined_before: seq,
                not_for_departed: false,
            }));
        }
        self.count = 0;
    }
}

/// Arrivals and departures since the last flush.
#[derive(Debug, Default)]
pub struct PresenceBatch {
    arrivals: Tally,
    departures: Tally,
}

impl PresenceBatch {
    /// An empty batch.
    pub fn new() -> Self {
        PresenceBatch::default()
    }

    /// `name` arrived as event `seq` (which is also its place in `who`).
    pub fn arrived(&mut self, seq: Seq, name: &str) {
        self.arrivals.record(seq, || protocol::arrived(name));
    }

    /// Someone left as event `seq`; `line` makes its one-by-one notice
    /// (`NAME has left …`), called only if the batch stays small.
    pub fn left(&mut self, seq: Seq, line: impl FnOnce() -> String) {
        self.departures.record(seq, line);
    }

    /// True when there is nothing to announce.
    pub fn is_empty(&self) -> bool {
        self.arrivals.count == 0 && self.departures.count == 0
    }

    /// Empties the batch into the notices to send, arrivals first.
    ///
    /// `N users have arrived` goes to everyone who is not among the N, that
    /// is everyone who arrived before the batch's first arrival;
    /// `N users have left` goes to everyone still connected.
    pub fn take_notices(&mut self, out: &mut Vec<Notice>) {
        let first_arrival = self.arrivals.first_seq;
        self.arrivals.drain_into(out, "arrived", first_arrival);
        self.departures.drain_into(out, "left", Seq::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notices(batch: &mut PresenceBatch) -> Vec<(String, Seq)> {
        let mut out = Vec::new();
        batch.take_notices(&mut out);
        out.into_iter()
            .map(|n| (n.line, n.heard_by_joined_before))
            .collect()
    }

    #[test]
    fn up_to_three_are_announced_one_by_one() {
        let mut batch = PresenceBatch::new();
        batch.arrived(10, "a");
        batch.arrived(11, "b");
        batch.left(12, || "c has left".into());
        batch.left(13, || "d has left (idle timeout)".into());
        assert_eq!(
            notices(&mut batch),
            vec![
                ("a has arrived".into(), 10),
                ("b has arrived".into(), 11),
                ("c has left".into(), 12),
                ("d has left (idle timeout)".into(), 13),
            ]
        );
        assert!(batch.is_empty());
        assert!(notices(&mut batch).is_empty());
    }

    #[test]
    fn more_than_three_become_one_line() {
        let mut batch = PresenceBatch::new();
        for seq in 20..25 {
            batch.arrived(seq, "x");
        }
        for seq in 25..29 {
            batch.left(seq, || "y has left (too slow)".into());
        }
        assert_eq!(
            notices(&mut batch),
            vec![
                ("5 users have arrived".into(), 20),
                ("4 users have left".into(), Seq::MAX),
            ]
        );
    }

    #[test]
    fn arrivals_go_before_departures_whatever_the_order() {
        let mut batch = PresenceBatch::new();
        batch.left(1, || "old has left".into());
        batch.arrived(2, "new");
        batch.left(3, || "new has left (bye now)".into());
        assert_eq!(
            notices(&mut batch),
            vec![
                ("new has arrived".into(), 2),
                ("old has left".into(), 1),
                ("new has left (bye now)".into(), 3),
            ]
        );
    }

    #[test]
    fn a_new_batch_starts_counting_afresh() {
        let mut batch = PresenceBatch::new();
        for seq in 0..4 {
            batch.arrived(seq, "x");
        }
        notices(&mut batch);
        batch.arrived(9, "z");
        assert_eq!(notices(&mut batch), vec![("z has arrived".into(), 9)]);
    }
}
