//! The room: who is here, what they are called, and who hears what.
//!
//! Every connection lives in one [`Slab`], keyed by its mio token, so a
//! readiness event finds its user in O(1) and a broadcast is a walk over one
//! dense array. A broadcast formats its line once and copies the bytes into
//! each recipient's outbox; normally nothing is written here (the exception:
//! an outbox about to pass `--max-outbound` is written out first, so only a
//! client that really does not read is cut off). The server loop flushes
//! the outboxes listed in [`Room::take_flush_list`] before it sleeps, so all
//! lines queued in one iteration leave in one `write` per user.
//!
//! Users leave in two steps: [`Room::leave`] takes them out of the room at
//! once (name freed, departure batched, no more lines queued for them) and
//! the server later reaps the connection, after a last flush of what was
//! already queued (the `Bye`, the idle notice).

use crate::conn::{Conn, Leave};
use crate::names;
use crate::presence::{Notice, PresenceBatch, Seq};
use log::{info, warn};
use slab::Slab;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The outcome of a rename request, for the reply to the requester.
#[derive(Debug, PartialEq, Eq)]
pub enum Rename {
    /// Done; everyone was told.
    Done,
    /// The new name is the current one, same case.
    Unchanged,
    /// Someone else has it (compared without case).
    Taken,
    /// It breaks the name rules.
    Invalid,
}

/// All users and their shared state.
#[derive(Debug)]
pub struct Room {
    conns: Slab<Conn>,
    /// Case-folded name → slab key, for O(1) rename checks and `/msg`.
    by_name: HashMap<String, usize>,
    presence: PresenceBatch,
    /// The next event sequence number (arrivals and departures).
    next_seq: Seq,
    /// Who has output waiting, for the loop's flush and its input gate.
    queued: Queued,
    /// Users who left and wait to be reaped.
    to_reap: Vec<usize>,
    /// Users whose outbox drained but still holds its buffer.
    retained: Vec<usize>,
    /// Users cut off during the current fan-out, and why.
    overflowed: Vec<(usize, Leave)>,
    /// Reused for presence flushes, so they do not allocate.
    notices: Vec<Notice>,
    max_outbound: usize,
}

impl Room {
    /// An empty room whose users may each have `max_outbound` bytes queued.
    pub fn new(max_outbound: usize) -> Self {
        Room {
            conns: Slab::new(),
            by_name: HashMap::new(),
            presence: PresenceBatch::new(),
            next_seq: 0,
            queued: Queued {
                to_flush: Vec::new(),
                backlogged: Vec::new(),
                high_water: max_outbound / 2,
            },
            to_reap: Vec::new(),
            retained: Vec::new(),
            overflowed: Vec::new(),
            notices: Vec::new(),
            max_outbound,
        }
    }

    /// Connections held, including those leaving but not yet reaped.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True when nobody is connected.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The key the next [`join`](Self::join) will use (to register the
    /// socket under it before it is moved in).
    pub fn next_key(&self) -> usize {
        self.conns.vacant_key()
    }

    /// Adds a user built by `make` from its arrival sequence number, greets
    /// it and batches its arrival. Returns its key.
    pub fn join(&mut self, make: impl FnOnce(Seq) -> Conn) -> usize {
        let seq = self.take_seq();
        let key = self.conns.insert(make(seq));
        let name = self.conns[key].name.clone();
        self.by_name.insert(names::fold(&name), key);
        self.presence.arrived(seq, &name);
        self.send(key, &format!("You are {name}"));
        key
    }

    /// The user under `key`, if there is one.
    pub fn get(&self, key: usize) -> Option<&Conn> {
        self.conns.get(key)
    }

    /// The user under `key`, if there is one, for changes.
    pub fn get_mut(&mut self, key: usize) -> Option<&mut Conn> {
        self.conns.get_mut(key)
    }

    /// Every connection's key (for shutdown).
    pub fn keys(&self) -> Vec<usize> {
        self.conns.iter().map(|(key, _)| key).collect()
    }

    /// The key of the user called `name` (any case).
    pub fn find(&self, name: &str) -> Option<usize> {
        self.by_name.get(&names::fold(name)).copied()
    }

    /// Present users, oldest connection first: (key, name).
    pub fn roster(&self) -> Vec<(usize, &str)> {
        let mut users: Vec<(Seq, usize, &str)> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.is_present())
            .map(|(key, conn)| (conn.joined, key, conn.name.as_str()))
            .collect();
        users.sort_unstable_by_key(|&(joined, _, _)| joined);
        users
            .into_iter()
            .map(|(_, key, name)| (key, name))
            .collect()
    }

    /// Queues `line` for one user. A user whose outbox overflows is cut off.
    pub fn send(&mut self, key: usize, line: &str) {
        self.queue_lines(key, &[line], self.max_outbound);
    }

    /// Queues a multi-line reply (`who`) for one user. If nothing else is
    /// queued for the user the reply goes in whole even past
    /// `--max-outbound` (a 20,000-user list is larger than the default
    /// limit), so the bound per user is the limit plus one such reply.
    pub fn send_block(&mut self, key: usize, lines: &[String]) {
        let idle = self.conns.get(key).is_some_and(|c| c.outbox.is_empty());
        let limit = if idle { usize::MAX } else { self.max_outbound };
        self.queue_lines(key, lines, limit);
    }

    /// Queues a user-caused `line` for every present user, after announcing
    /// any pending arrivals and departures so the line cannot overtake them.
    pub fn broadcast(&mut self, line: &str) {
        self.flush_presence();
        self.fan_out(line, Seq::MAX);
    }

    /// Sends the batched arrival and departure notices.
    pub fn flush_presence(&mut self) {
        if self.presence.is_empty() {
            return;
        }
        let mut notices = std::mem::take(&mut self.notices);
        self.presence.take_notices(&mut notices);
        for notice in notices.drain(..) {
            self.fan_out(&notice.line, notice.heard_by_joined_before);
        }
        self.notices = notices;
    }

    /// Takes `key` out of the room: name freed, departure batched, nothing
    /// more queued for it. The connection stays until reaped.
    pub fn leave(&mut self, key: usize, reason: Leave) {
        if !self.conns.get(key).is_some_and(Conn::is_present) {
            return;
        }
        let seq = self.take_seq();
        let conn = &mut self.conns[key];
        match reason {
            Leave::TooSlow => {
                warn!(
                    "{} ({}) too slow: {} bytes queued, over --max-outbound {}; disconnected",
                    conn.name,
                    conn.peer,
                    conn.outbox.pending(),
                    self.max_outbound
                );
                conn.outbox.discard();
            }
            Leave::Shutdown => {}
            _ => info!("{} ({}) left: {reason}", conn.name, conn.peer),
        }
        if reason != Leave::Shutdown {
            self.presence.left(seq, &conn.name, reason.notice_reason());
        }
        let folded = names::fold(&conn.name);
        conn.leaving = Some(reason);
        if self.by_name.get(&folded) == Some(&key) {
            self.by_name.remove(&folded);
        }
        self.to_reap.push(key);
    }

    /// Renames `key` to `new` if the rules allow, telling everyone.
    pub fn rename(&mut self, key: usize, new: &str) -> Rename {
        let Some(conn) = self.conns.get(key) else {
            return Rename::Invalid;
        };
        if conn.name == new {
            return Rename::Unchanged;
        }
        if names::validate(new).is_err() {
            return Rename::Invalid;
        }
        let folded = names::fold(new);
        if matches!(self.by_name.get(&folded), Some(&owner) if owner != key) {
            return Rename::Taken;
        }
        let old = std::mem::replace(&mut self.conns[key].name, new.to_string());
        self.by_name.remove(&names::fold(&old));
        self.by_name.insert(folded, key);
        info!("{old} is now known as {new}");
        self.broadcast(&format!("{old} is now known as {new}"));
        Rename::Done
    }

    /// How many users have output queued since the last flush.
    pub fn pending_flushes(&self) -> usize {
        self.queued.to_flush.len()
    }

    /// Users with output queued since the last call (each listed once).
    pub fn take_flush_list(&mut self, into: &mut Vec<usize>) {
        for &key in &self.queued.to_flush {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.flush_queued = false;
            }
        }
        into.append(&mut self.queued.to_flush);
    }

    /// Users who left since the last call.
    pub fn take_reap_list(&mut self, into: &mut Vec<usize>) {
        into.append(&mut self.to_reap);
    }

    /// True if a user who is reading (the kernel took some of their output
    /// within `recent`) has had more than half of `--max-outbound` queued
    /// for less than `hold`.
    ///
    /// The loop then stops taking input until they catch up: without that,
    /// a sender faster than its readers would get readers who do read cut
    /// off as too slow. A client that does not read at all makes no
    /// progress and stops counting after `recent`; one that reads but stays
    /// behind (a slow link in a busy room) stops counting after `hold`.
    /// Either is then cut at the limit as PROTOCOL.md says, so no client can
    /// hold the room back for long. Costs O(users behind).
    pub fn readers_behind(&mut self, now: Instant, recent: Duration, hold: Duration) -> bool {
        let conns = &mut self.conns;
        let high_water = self.queued.high_water;
        let mut behind = false;
        self.queued.backlogged.retain(|&key| {
            let Some(conn) = conns.get_mut(key) else {
                return false;
            };
            if !conn.is_present() || conn.outbox.pending() <= high_water {
                conn.backlog_listed = false;
                return false;
            }
            behind |= now.saturating_duration_since(conn.last_progress) < recent
                && now.saturating_duration_since(conn.behind_since) < hold;
            true
        });
        behind
    }

    /// Notes that `key`'s outbox was written out and still holds memory.
    pub fn drained(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.buffer_retained
            && conn.outbox.heap_bytes() > 0
        {
            conn.buffer_retained = true;
            self.retained.push(key);
        }
    }

    /// Once per tick: frees the output buffers nobody used for a tick, so
    /// only busy connections hold one. Costs O(recently busy users).
    pub fn release_unused_buffers(&mut self) {
        let conns = &mut self.conns;
        self.retained.retain(|&key| {
            let Some(conn) = conns.get_mut(key) else {
                return false;
            };
            let released = conn.outbox.release_if_unused();
            if released {
                conn.buffer_retained = false;
            }
            !released
        });
    }

    /// Removes a connection for good (after it left), returning it so the
    /// server can deregister and close its socket.
    pub fn remove(&mut self, key: usize) -> Option<Conn> {
        // A stale key left in `retained` is harmless: the next tick finds
        // the slot empty, or a newer connection whose buffer it may free.
        let conn = self.conns.try_remove(key)?;
        let folded = names::fold(&conn.name);
        if self.by_name.get(&folded) == Some(&key) {
            self.by_name.remove(&folded);
        }
        Some(conn)
    }

    /// Queues `line` for every present user who joined before `joined_before`;
    /// those who overflow are cut off afterwards.
    fn fan_out(&mut self, line: &str, joined_before: Seq) {
        for (key, conn) in self.conns.iter_mut() {
            if conn.joined < joined_before
                && conn.is_present()
                && let Err(reason) = queue(conn, key, line, self.max_outbound, &mut self.queued)
            {
                self.overflowed.push((key, reason));
            }
        }
        let mut overflowed = std::mem::take(&mut self.overflowed);
        for (key, reason) in overflowed.drain(..) {
            self.leave(key, reason);
        }
        self.overflowed = overflowed;
    }

    /// Queues `lines` for one present user, in order, under `limit`; a
    /// user who cannot take them is cut off.
    fn queue_lines<S: AsRef<str>>(&mut self, key: usize, lines: &[S], limit: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.is_present() {
            return;
        }
        for line in lines {
            if let Err(reason) = queue(conn, key, line.as_ref(), limit, &mut self.queued) {
                self.leave(key, reason);
                return;
            }
        }
    }

    fn take_seq(&mut self) -> Seq {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

/// Appends `line` to one outbox and lists the user for flushing.
///
/// `--max-outbound` is for clients too slow to read, not for output the
/// loop simply has not written yet: when a push would pass `limit`, the
/// outbox is first written to the socket (as the end of the iteration would
/// do) and only what the kernel refuses counts. The error says why the user
/// must go: still over the limit, or the socket failed.
fn queue(
    conn: &mut Conn,
    key: usize,
    line: &str,
    limit: usize,
    queued: &mut Queued,
) -> Result<(), Leave> {
    if conn.outbox.push_line(line.as_bytes(), limit).is_err() {
        if let Err(error) = conn.write_out(Instant::now()) {
            return Err(Leave::Failed(error.to_string()));
        }
        if conn.outbox.push_line(line.as_bytes(), limit).is_err() {
            return Err(Leave::TooSlow);
        }
    }
    if !conn.flush_queued {
        conn.flush_queued = true;
        queued.to_flush.push(key);
    }
    if !conn.backlog_listed && conn.outbox.pending() > queued.high_water {
        conn.backlog_listed = true;
        conn.behind_since = Instant::now();
        queued.backlogged.push(key);
    }
    Ok(())
}

/// The room's lists of users with output waiting.
#[derive(Debug)]
struct Queued {
    /// Users with output queued since the last flush (each listed once).
    to_flush: Vec<usize>,
    /// Users whose outbox passed `high_water` (pruned lazily).
    backlogged: Vec<usize>,
    /// Half of `--max-outbound`: past it, a reader counts as falling behind.
    high_water: usize,
}
