//! Every connection, and the backpressure that keeps their queues bounded.
//!
//! Connections live in one [`Slab`] keyed by the slot of their [`ConnId`];
//! a lookup with a stale id (a reused slot) finds nothing. This module is
//! the [`Outbound`] the chat queues its lines into: a line is copied into
//! the recipient's outbox and the recipient listed for the loop's flush, so
//! all lines queued in one iteration leave in one `write` per user.
//!
//! It also keeps the two numbers the loop's input gate reads before every
//! line it takes from anyone (PROTOCOL.md, `--max-outbound-total`):
//!
//! - the bytes queued in all outboxes together; past `--max-outbound-total`
//!   no input is taken until they drain below;
//! - whether a user whose queue is above the high-water mark (half of
//!   `--max-outbound`) still *holds the room*: reads at a healthy rate (see
//!   [`Conn::holds_room`]). While one does, no input is taken either, so a
//!   burst slows down to its readers instead of getting them cut. A user
//!   that stops or crawls stops holding, input goes on, and it is cut at
//!   `--max-outbound`.
//!
//! A user who must go (socket error, too slow) is marked leaving here and
//! listed in [`Conns::take_departures`]; the loop tells the chat, and
//! later reaps the connection after a last write of what was queued.

use crate::chat::{Leave, Outbound};
use crate::conn::Conn;
use crate::id::{ConnId, Generations};
use crate::outbox::{Flushed, Growth};
use crate::tuning::HIGH_WATER_DIVISOR;
use slab::Slab;
use std::io::{self, Write};
use std::time::Instant;

/// Beyond `--max-line`, the bytes one line may take in an outbox (the
/// sender's name, `: `, the newline), for the total gate's reserve.
const LINE_RESERVE: usize = 64;

/// The limits on queued output.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Per connection (`--max-outbound`): past it, a client is too slow.
    pub max_outbound: usize,
    /// All connections together (`--max-outbound-total`): past it, input waits.
    pub max_total: usize,
    /// The longest line (`--max-line`): what one more line may cost each
    /// recipient.
    pub max_line: usize,
}

/// All connections and their output lists.
#[derive(Debug)]
pub struct Conns {
    /// Every connection, including those leaving but not yet reaped.
    slab: Slab<Conn>,
    /// Generations for new connections' ids.
    generations: Generations,
    /// Connections with output queued since the last flush (each once).
    to_flush: Vec<ConnId>,
    /// Connections whose outbox passed the high-water mark (pruned lazily).
    backlogged: Vec<ConnId>,
    /// Connections whose outbox drained but still holds its buffer.
    retained: Vec<ConnId>,
    /// Connections that started leaving, with why, for the chat.
    departures: Vec<(ConnId, Leave)>,
    /// Connections that left and wait to be reaped.
    to_reap: Vec<ConnId>,
    /// Bytes queued in all outboxes, and what left them.
    totals: Totals,
    /// Lines queued to a recipient, one per recipient (a metric).
    deliveries: u64,
    /// Heap bytes of the framers: input read but not yet run as lines.
    inbound: usize,
    /// Output buffer bytes freed since the loop last returned memory to
    /// the system.
    freed: usize,
    /// Some user above the high-water mark still holds the room.
    readers_holding: bool,
    /// The queue limits.
    limits: QueueLimits,
    /// The loop iteration's time, so queueing a line reads no clock.
    now: Instant,
}

impl Conns {
    /// No connections yet.
    pub fn new(limits: QueueLimits) -> Conns {
        Conns {
            slab: Slab::new(),
            generations: Generations::default(),
            to_flush: Vec::new(),
            backlogged: Vec::new(),
            retained: Vec::new(),
            departures: Vec::new(),
            to_reap: Vec::new(),
            totals: Totals::default(),
            deliveries: 0,
            inbound: 0,
            freed: 0,
            readers_holding: false,
            limits,
            now: Instant::now(),
        }
    }

    /// Sets the time lines queued from now on are stamped with (the loop
    /// calls it once per iteration).
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// Connections held, including those leaving but not yet reaped.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// The id the next [`insert`](Self::insert) will use, to register the
    /// socket under its token before it moves in.
    pub fn next_id(&mut self) -> ConnId {
        // The generation is taken now; an id that is never inserted only
        // skips a number.
        ConnId::new(self.slab.vacant_key(), self.generations.take())
    }

    /// Adds a connection made for `id` (from [`next_id`](Self::next_id)).
    pub fn insert(&mut self, conn: Conn) {
        let id = conn.id;
        let slot = self.slab.insert(conn);
        debug_assert_eq!(slot, id.slot());
    }

    /// The connection `id`, if it is still there.
    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        self.slab.get(id.slot()).filter(|c| c.id == id)
    }

    /// The connection `id`, if it is still there, for changes.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        find(&mut self.slab, id)
    }

    /// Every connection's id (for shutdown and the stall check).
    pub fn ids(&self) -> Vec<ConnId> {
        self.slab.iter().map(|(_, c)| c.id).collect()
    }

    /// Bytes queued in all outboxes.
    pub fn queued_total(&self) -> usize {
        self.totals.queued
    }

    /// Lines queued to a recipient so far, one per recipient.
    pub fn deliveries(&self) -> u64 {
        self.deliveries
    }

    /// Bytes the kernel took from the outboxes so far.
    pub fn bytes_sent(&self) -> u64 {
        self.totals.sent
    }

    /// True while no input line may be taken from anyone: all queues
    /// together are past `--max-outbound-total`, or a user who is behind
    /// still reads at a healthy rate. O(1); checked before every line.
    pub fn input_blocked(&self) -> bool {
        self.readers_holding || self.over_total()
    }

    /// True while the queues together are past `--max-outbound-total`.
    ///
    /// What counts is memory: what the outboxes hold (their capacity, not
    /// only the bytes waiting in them), the input read but not yet run as
    /// lines, and room for one more line to every connection, since the
    /// gate is checked before a line and its fan-out (a 4 KB line to 18,000
    /// users is 72 MB) happens after. With nothing queued for anyone, input
    /// always goes on, so the gate can never hold the room for good.
    pub fn over_total(&self) -> bool {
        let reserve = (self.limits.max_line + LINE_RESERVE).saturating_mul(self.slab.len());
        self.totals.held > 0 && self.totals.held + self.inbound + reserve > self.limits.max_total
    }

    /// A framer's heap went from `before` to `after` bytes (the loop reads
    /// and frames input; this keeps the total it is judged by).
    pub fn framer_changed(&mut self, before: usize, after: usize) {
        self.inbound = self.inbound + after - before;
    }

    /// Marks `id` as leaving for `reason` (once): no more output is queued
    /// for it, the chat hears of it through [`take_departures`](Self::take_departures),
    /// and the loop reaps it. A too-slow client's queue is dropped at once.
    pub fn leave(&mut self, id: ConnId, reason: Leave) {
        let Some(conn) = find(&mut self.slab, id) else {
            return;
        };
        if !conn.is_present() {
            return;
        }
        if !reason.flush_on_close() {
            let pending = conn.outbox.pending();
            let heap = conn.outbox.heap_bytes();
            conn.outbox.discard();
            self.totals.queued -= pending;
            self.totals.held -= heap;
            self.freed += heap;
        }
        conn.leaving = Some(reason.clone());
        self.departures.push((id, reason));
        self.to_reap.push(id);
    }

    /// Connections that started leaving since the last call, with why.
    pub fn take_departures(&mut self, into: &mut Vec<(ConnId, Leave)>) {
        into.append(&mut self.departures);
    }

    /// Connections that left since the last call, to reap.
    pub fn take_reap_list(&mut self, into: &mut Vec<ConnId>) {
        into.append(&mut self.to_reap);
    }

    /// Removes a connection for good, returning it so the loop can make a
    /// last write, deregister and close it.
    pub fn remove(&mut self, id: ConnId) -> Option<Conn> {
        self.get(id)?;
        let conn = self.slab.remove(id.slot());
        self.inbound -= conn.framer.heap_bytes();
        self.totals.queued -= conn.outbox.pending();
        self.totals.held -= conn.outbox.heap_bytes();
        self.freed += conn.outbox.heap_bytes();
        Some(conn)
    }

    /// How many connections have output queued since the last flush.
    pub fn pending_flushes(&self) -> usize {
        self.to_flush.len()
    }

    /// Connections with output queued since the last call (each once).
    pub fn take_flush_list(&mut self, into: &mut Vec<ConnId>) {
        for &id in &self.to_flush {
            if let Some(conn) = self.slab.get_mut(id.slot()) {
                conn.flush_queued = false;
            }
        }
        into.append(&mut self.to_flush);
    }

    /// Writes `id`'s outbox as far as the kernel takes it; a socket error
    /// makes the user leave.
    pub fn flush(&mut self, id: ConnId, now: Instant) {
        let Some(conn) = find(&mut self.slab, id) else {
            return;
        };
        if conn.outbox.is_empty() && !conn.socket.wants_write() {
            return;
        }
        match write_out(conn, now, &mut self.totals) {
            Ok(Flushed::All) => {
                if !conn.buffer_retained && conn.outbox.heap_bytes() > 0 {
                    conn.buffer_retained = true;
                    self.retained.push(id);
                }
            }
            Ok(Flushed::Partly) => {}
            Err(error) => self.leave(id, Leave::Failed(error.to_string())),
        }
    }

    /// Recomputes whether a user who is behind still holds the room, after
    /// the loop's flush. Costs O(users behind).
    pub fn update_gate(&mut self, now: Instant) {
        let high_water = self.limits.max_outbound / HIGH_WATER_DIVISOR;
        let slab = &mut self.slab;
        let mut holding = false;
        self.backlogged.retain(|&id| {
            let Some(conn) = find(slab, id) else {
                return false;
            };
            if !conn.is_present() || conn.outbox.pending() <= high_water {
                conn.backlog_listed = false;
                return false;
            }
            holding |= conn.holds_room(now);
            true
        });
        self.readers_holding = holding;
    }

    /// Connections stuck with output queued — the kernel took nothing of it
    /// for `stall` — and not holding the room: while all queues are past
    /// `--max-outbound-total`, these are cut so they cannot stop everyone's
    /// input for good. O(connections); called once per tick, only then.
    pub fn stuck(&self, now: Instant, stall: std::time::Duration) -> Vec<ConnId> {
        self.slab
            .iter()
            .map(|(_, c)| c)
            .filter(|c| {
                c.is_present()
                    && !c.outbox.is_empty()
                    && now.saturating_duration_since(c.unstuck_at) >= stall
                    && !c.holds_room(now)
            })
            .map(|c| c.id)
            .collect()
    }

    /// Once per tick: frees the output buffers nobody used for a tick, so
    /// only busy connections hold one. Costs O(recently busy users).
    pub fn release_unused_buffers(&mut self) {
        let slab = &mut self.slab;
        let freed = &mut self.freed;
        let held = &mut self.totals.held;
        self.retained.retain(|&id| {
            let Some(conn) = find(slab, id) else {
                return false;
            };
            let heap = conn.outbox.heap_bytes();
            let released = conn.outbox.release_if_unused();
            if released {
                conn.buffer_retained = false;
                *freed += heap;
                *held -= heap;
            }
            !released
        });
    }

    /// Output buffer bytes freed since the last call.
    pub fn take_freed(&mut self) -> usize {
        std::mem::take(&mut self.freed)
    }

    /// Queues `lines` for one present user under `limit`; a user who cannot
    /// take them leaves as too slow.
    fn queue_lines<S: AsRef<str>>(&mut self, id: ConnId, lines: &[S], limit: usize) {
        let Some(conn) = find(&mut self.slab, id) else {
            return;
        };
        if !conn.is_present() {
            return;
        }
        let now = self.now;
        let was_empty = conn.outbox.is_empty();
        for line in lines {
            let max_total = self.limits.max_total;
            if let Err(reason) = push(conn, line.as_ref(), limit, now, &mut self.totals, max_total)
            {
                self.leave(id, reason);
                return;
            }
        }
        self.deliveries += lines.len() as u64;
        if was_empty {
            conn.unstuck_at = now;
        }
        if !conn.flush_queued {
            conn.flush_queued = true;
            self.to_flush.push(id);
        }
        let high_water = self.limits.max_outbound / HIGH_WATER_DIVISOR;
        if !conn.backlog_listed && conn.outbox.pending() > high_water {
            conn.backlog_listed = true;
            conn.fell_behind(now);
            self.backlogged.push(id);
            // A user who just fell behind holds the room until the loop
            // looks again after its flush: stop input between lines, not
            // between loop passes.
            self.readers_holding = true;
        }
    }
}

impl Outbound for Conns {
    fn line(&mut self, to: ConnId, line: &str) {
        self.queue_lines(to, &[line], self.limits.max_outbound);
    }

    /// A reply goes in whole even past `--max-outbound` when nothing else is
    /// queued for the user (a 20,000-user `who` is larger than the default
    /// limit), so the bound per user is the limit plus one such reply.
    fn block(&mut self, to: ConnId, lines: &[String]) {
        let idle = self.get(to).is_some_and(|c| c.outbox.is_empty());
        let limit = if idle {
            usize::MAX
        } else {
            self.limits.max_outbound
        };
        self.queue_lines(to, lines, limit);
    }
}

/// Bytes in the outboxes, kept up to date by every push, write and discard.
#[derive(Debug, Default)]
struct Totals {
    /// Queued in all outboxes now.
    queued: usize,
    /// Held by all outboxes now (their capacity, at least `queued`).
    held: usize,
    /// Taken by the kernel so far.
    sent: u64,
}

/// The connection `id` in `slab`, unless its slot now holds another.
fn find(slab: &mut Slab<Conn>, id: ConnId) -> Option<&mut Conn> {
    slab.get_mut(id.slot()).filter(|c| c.id == id)
}

/// Appends `line` to one outbox under `limit`.
///
/// `--max-outbound` is for clients too slow to read, not for output the
/// loop simply has not written yet: when a push would pass `limit`, the
/// outbox is first written to the socket (as the end of the iteration would
/// do) and only what the kernel refuses counts. The error says why the user
/// must go: still over the limit, or the socket failed.
fn push(
    conn: &mut Conn,
    line: &str,
    limit: usize,
    now: Instant,
    totals: &mut Totals,
    max_total: usize,
) -> Result<(), Leave> {
    let capacity = conn.outbox.heap_bytes();
    let growth = if totals.held > max_total / 2 {
        Growth::Frugal
    } else {
        Growth::Double
    };
    let mut result = conn.outbox.push_line_with(line.as_bytes(), limit, growth);
    if result.is_err() {
        if let Err(error) = write_out(conn, now, totals) {
            return Err(Leave::Failed(error.to_string()));
        }
        result = conn.outbox.push_line_with(line.as_bytes(), limit, growth);
    }
    totals.held = totals.held + conn.outbox.heap_bytes() - capacity;
    if result.is_err() {
        return Err(Leave::TooSlow);
    }
    totals.queued += line.len() + 1;
    Ok(())
}

/// Writes as much of `conn`'s outbox as the kernel takes, keeping the
/// total and the connection's progress up to date.
fn write_out(conn: &mut Conn, now: Instant, totals: &mut Totals) -> io::Result<Flushed> {
    let before = conn.outbox.pending();
    let mut result = conn.outbox.flush_to(&mut conn.socket);
    if conn.socket.wants_write() {
        // TLS records the socket refused earlier (a plain stream has none).
        result = match conn.socket.flush() {
            Ok(()) => result,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Flushed::Partly),
            Err(e) => Err(e),
        };
    }
    let written = before - conn.outbox.pending();
    totals.queued -= written;
    totals.sent += written as u64;
    conn.note_progress(written, now);
    result
}
