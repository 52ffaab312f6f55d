//! History: what each room remembers, and how it is shown.
//!
//! PROTOCOL.md ("History (v2)") asks every room to remember its chat lines
//! and actions exactly as they were broadcast (`NAME: TEXT`, `* NAME TEXT`),
//! with the UTC time they were sent, and to replay them as a block:
//!
//! ```text
//! 2 lines of history:
//! [13:04] alice: hi
//! [13:05] * bob waves
//! End of history
//! ```
//!
//! This module is pure (no I/O, no clock: the caller passes "now" in unix
//! seconds), so every rule is pinned by a test with an injected time.
//!
//! # Memory bounds
//!
//! A room keeps its last [`LINES_PER_ROOM`] lines, and all rooms together
//! at most [`MAX_BYTES`], counting each line's text plus [`LINE_OVERHEAD`]
//! and each remembered room's name plus [`ROOM_OVERHEAD`]. Past the total,
//! lines are forgotten oldest first from the room that has been empty the
//! longest; occupied rooms come last, and among them the oldest line goes
//! first. Finding that room must not cost a scan of every room on each
//! push, so the rooms holding lines sit in an ordered set keyed by their
//! rank (empty since when, or occupied with its oldest line from when); the
//! server reports occupancy with [`History::room_emptied`]
//! and [`History::room_occupied`].
//!
//! # With a database (`--db`)
//!
//! Memory is then a cache of the newest lines of the database
//! (`crate::store`). The server's part of the contract:
//!
//! - on entering a room that is not [`is_loaded`](History::is_loaded), load
//!   it with [`replace_room`](History::replace_room) from the store's newest
//!   [`per_room`](History::per_room) lines (the store's answer includes lines
//!   not yet written, so nothing is lost);
//! - to answer "the last N lines", use [`last`](History::last) when
//!   [`covers`](History::covers) says memory has them all, and ask the
//!   store otherwise.
//!
//! A room whose lines were all forgotten while it was empty is dropped
//! from memory altogether, so it is loaded again on its next entry.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::protocol;
use slab::Slab;

/// Lines each room keeps in memory (PROTOCOL.md: "the last 1000 lines of
/// each room"). Also the largest N of `/history N`.
pub const LINES_PER_ROOM: usize = 1000;

/// Bytes all rooms' history may take together (PROTOCOL.md: "at most
/// 64 MiB in all"), as counted by [`History::bytes`].
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// What a line costs beyond the bytes of its text: the 24-byte [`Line`] in
/// its room's deque (with room for the deque's growth slack), and the
/// allocator's header and rounding for the text's own heap block.
pub const LINE_OVERHEAD: usize = 64;

/// What a remembered room costs beyond its name (which is kept twice: in
/// the room and in the name index): the room's state, its slab slot, its
/// index entry and its entry in the eviction order.
pub const ROOM_OVERHEAD: usize = 256;

/// Seconds in a day; a line younger than this shows its time only.
pub const DAY: i64 = 86_400;

/// One remembered line: the text exactly as broadcast and when it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When the line was sent, in UTC unix seconds.
    pub at: i64,
    /// The line as everyone received it (`NAME: TEXT` or `* NAME TEXT`).
    pub text: Box<str>,
}

impl Line {
    /// A line sent at `at` (unix seconds).
    pub fn new(at: i64, text: impl Into<Box<str>>) -> Self {
        Line {
            at,
            text: text.into(),
        }
    }

    /// What this line counts toward [`History::bytes`].
    pub fn cost(&self) -> usize {
        self.text.len() + LINE_OVERHEAD
    }
}

/// Where a room stands in the eviction order: the smallest rank loses its
/// oldest line first. Empty rooms sort before occupied ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// Nobody has been in the room since `since` (unix seconds): the room
    /// empty the longest goes first.
    Empty {
        /// When the last user left.
        since: i64,
    },
    /// Someone is in the room: the room with the oldest line goes first.
    Occupied {
        /// When the room's oldest remembered line was sent.
        oldest: i64,
    },
}

/// One room's memory.
#[derive(Debug)]
struct RoomLines {
    /// The room's key (lower case, no `#`), to unindex it when forgotten.
    name: String,
    /// Oldest first, at most `per_room`.
    lines: VecDeque<Line>,
    /// `Some(t)` when the room has had nobody in it since `t`.
    empty_since: Option<i64>,
    /// Set by [`History::replace_room`]: memory holds the store's newest
    /// lines for this room.
    loaded: bool,
    /// Older lines than the ones held may exist: some were forgotten here,
    /// or the load may not have held them all.
    trimmed: bool,
}

/// The in-memory history of every room.
#[derive(Debug)]
pub struct History {
    /// Lines kept per room.
    per_room: usize,
    /// The bound on [`History::bytes`].
    max_bytes: usize,
    /// Lines and rooms, counted as documented on [`History::bytes`].
    bytes: usize,
    /// Every remembered room.
    rooms: Slab<RoomLines>,
    /// Room key → slab key.
    index: HashMap<String, usize>,
    /// Every room holding at least one line, by rank: the first one loses
    /// a line when memory is over its bound.
    order: BTreeSet<(Rank, usize)>,
}

/// An empty deque, for [`History::last`] on an unknown room.
static NO_LINES: VecDeque<Line> = VecDeque::new();

impl History {
    /// Empty history keeping `per_room` lines per room and `max_bytes` in
    /// all (the server uses [`LINES_PER_ROOM`] and [`MAX_BYTES`]).
    pub fn new(per_room: usize, max_bytes: usize) -> Self {
        History {
            per_room,
            max_bytes,
            bytes: 0,
            rooms: Slab::new(),
            index: HashMap::new(),
            order: BTreeSet::new(),
        }
    }

    /// Lines kept per room: how many to load from the store into a room.
    pub fn per_room(&self) -> usize {
        self.per_room
    }

    /// Remembers `text`, broadcast to `room` at `at` (unix seconds). The
    /// room's oldest line goes past `per_room`, and other rooms' lines go
    /// past the byte bound (see the module documentation).
    pub fn push(&mut self, room: &str, at: i64, text: &str) {
        if self.per_room == 0 {
            return;
        }
        let id = self.room_id(room);
        let old = self.rank(id);
        let per_room = self.per_room;
        let r = &mut self.rooms[id];
        let line = Line::new(at, text);
        self.bytes += line.cost();
        r.lines.push_back(line);
        while r.lines.len() > per_room {
            if let Some(gone) = r.lines.pop_front() {
                self.bytes -= gone.cost();
            }
            r.trimmed = true;
        }
        self.rerank(id, old);
        self.evict();
    }

    /// The last `n` lines of `room` (fewer if it has fewer), oldest first.
    pub fn last(
        &self,
        room: &str,
        n: usize,
    ) -> impl ExactSizeIterator<Item = &Line> + DoubleEndedIterator {
        let lines = match self.index.get(room) {
            Some(&id) => &self.rooms[id].lines,
            None => &NO_LINES,
        };
        lines.range(lines.len().saturating_sub(n)..)
    }

    /// Lines remembered for `room`.
    pub fn len(&self, room: &str) -> usize {
        self.index
            .get(room)
            .map_or(0, |&id| self.rooms[id].lines.len())
    }

    /// True when [`last`](Self::last)`(room, n)` is the whole answer: memory
    /// holds `n` lines of the room, or never lost any older one. When false,
    /// a store (if there is one) may hold older lines.
    pub fn covers(&self, room: &str, n: usize) -> bool {
        self.index.get(room).is_none_or(|&id| {
            let r = &self.rooms[id];
            r.lines.len() >= n || !r.trimmed
        })
    }

    /// True when `room` was loaded with [`replace_room`](Self::replace_room)
    /// and has not been forgotten since.
    pub fn is_loaded(&self, room: &str) -> bool {
        self.index
            .get(room)
            .is_some_and(|&id| self.rooms[id].loaded)
    }

    /// Replaces what `room` remembers by `lines` (oldest first; only the
    /// last `per_room` are kept) and marks it loaded. Meant for a room's
    /// first entry after a restart, with the store's newest
    /// [`per_room`](Self::per_room) lines: if that many are given, older
    /// ones are assumed to exist in the store. The room counts as occupied
    /// (someone is entering it).
    pub fn replace_room(&mut self, room: &str, lines: Vec<Line>) {
        let id = self.room_id(room);
        let old = self.rank(id);
        let per_room = self.per_room;
        let r = &mut self.rooms[id];
        let removed: usize = r.lines.iter().map(Line::cost).sum();
        r.trimmed = lines.len() >= per_room;
        let skip = lines.len().saturating_sub(per_room);
        r.lines = lines.into_iter().skip(skip).collect();
        r.loaded = true;
        r.empty_since = None;
        let added: usize = r.lines.iter().map(Line::cost).sum();
        self.bytes = self.bytes - removed + added;
        self.rerank(id, old);
        self.evict();
    }

    /// The last user left `room` at `now` (unix seconds): its lines are now
    /// among the first to be forgotten. A room with no lines is forgotten
    /// at once.
    pub fn room_emptied(&mut self, room: &str, now: i64) {
        let Some(&id) = self.index.get(room) else {
            return;
        };
        let old = self.rank(id);
        let r = &mut self.rooms[id];
        r.empty_since = Some(now);
        if r.lines.is_empty() {
            self.forget(id);
        } else {
            self.rerank(id, old);
        }
    }

    /// Someone entered `room`: its lines are kept as long as possible.
    pub fn room_occupied(&mut self, room: &str) {
        let Some(&id) = self.index.get(room) else {
            return;
        };
        let old = self.rank(id);
        self.rooms[id].empty_since = None;
        self.rerank(id, old);
    }

    /// Memory counted toward the bound: each line's text plus
    /// [`LINE_OVERHEAD`], each remembered room's name twice plus
    /// [`ROOM_OVERHEAD`].
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Rooms remembered (with lines, or loaded, or occupied).
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// The slab key of `room`, remembering it (occupied, not loaded) if new.
    fn room_id(&mut self, room: &str) -> usize {
        if let Some(&id) = self.index.get(room) {
            return id;
        }
        let id = self.rooms.insert(RoomLines {
            name: room.to_owned(),
            lines: VecDeque::new(),
            empty_since: None,
            loaded: false,
            trimmed: false,
        });
        self.index.insert(room.to_owned(), id);
        self.bytes += room_cost(room);
        id
    }

    /// The room's place in the eviction order; `None` when it has no lines.
    fn rank(&self, id: usize) -> Option<Rank> {
        let r = &self.rooms[id];
        let oldest = r.lines.front()?;
        Some(match r.empty_since {
            Some(since) => Rank::Empty { since },
            None => Rank::Occupied { oldest: oldest.at },
        })
    }

    /// Moves the room in the eviction order after a change (`old` is its
    /// rank before the change). O(log rooms), and nothing when unchanged.
    fn rerank(&mut self, id: usize, old: Option<Rank>) {
        let new = self.rank(id);
        if new == old {
            return;
        }
        if let Some(old) = old {
            self.order.remove(&(old, id));
        }
        if let Some(new) = new {
            self.order.insert((new, id));
        }
    }

    /// Forgets lines until the bound holds: O(log rooms) per line.
    fn evict(&mut self) {
        while self.bytes > self.max_bytes {
            let Some(&(rank, id)) = self.order.first() else {
                break; // only empty rooms' overhead is left
            };
            let r = &mut self.rooms[id];
            if let Some(gone) = r.lines.pop_front() {
                self.bytes -= gone.cost();
            }
            r.trimmed = true;
            if r.lines.is_empty() {
                self.order.remove(&(rank, id));
                if r.empty_since.is_some() {
                    self.forget(id);
                } else {
                    r.lines = VecDeque::new();
                }
                continue;
            }
            // Give memory back as the deque empties (amortised O(1)).
            if r.lines.len() <= r.lines.capacity() / 4 {
                let keep = r.lines.len() * 2;
                r.lines.shrink_to(keep);
            }
            self.rerank(id, Some(rank));
        }
    }

    /// Drops a room with no lines from memory. It must not be in `order`.
    fn forget(&mut self, id: usize) {
        let r = self.rooms.remove(id);
        debug_assert!(r.lines.is_empty());
        self.index.remove(&r.name);
        self.bytes -= room_cost(&r.name);
    }
}

/// What a remembered room counts toward [`History::bytes`].
fn room_cost(name: &str) -> usize {
    ROOM_OVERHEAD + 2 * name.len()
}

/// The history block for `lines` (oldest first) at `now` (unix seconds):
/// `N lines of history:` (`1 line of history:`), then `[TIME] LINE` for
/// each, then `End of history`. No lines give no block (an empty vector):
/// entering a room without history shows nothing, and `/history` answers
/// [`protocol::no_history`] instead.
pub fn block<'a>(lines: impl IntoIterator<Item = &'a Line>, now: i64) -> Vec<String> {
    let lines = lines.into_iter();
    let mut out = Vec::with_capacity(lines.size_hint().0 + 2);
    out.push(String::new());
    for line in lines {
        out.push(protocol::history_line(
            &format_time(line.at, now),
            &line.text,
        ));
    }
    let n = out.len() - 1;
    if n == 0 {
        return Vec::new();
    }
    out[0] = protocol::history_head(n);
    out.push(protocol::END_OF_HISTORY.to_owned());
    out
}

/// A line's TIME in a history block: `HH:MM` if it was sent less than 24
/// hours from `now` (a line stamped slightly in the future, after the clock
/// was set back, counts as recent too), otherwise `YYYY-MM-DD HH:MM`. UTC,
/// truncated to the minute.
pub fn format_time(at: i64, now: i64) -> String {
    let age = i128::from(now) - i128::from(at);
    if age.abs() < i128::from(DAY) {
        let (hour, minute) = time_of_day(at);
        format!("{hour:02}:{minute:02}")
    } else {
        format_until(at)
    }
}

/// `YYYY-MM-DD HH:MM`, UTC, truncated to the minute (for `/bans`; the caller
/// appends ` UTC`). Years before 0 or after 9999 print as many digits as
/// they need.
pub fn format_until(at: i64) -> String {
    let (year, month, day) = civil_from_days(at.div_euclid(DAY));
    let (hour, minute) = time_of_day(at);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}")
}

/// Hour and minute (UTC) of a unix time.
fn time_of_day(at: i64) -> (i64, i64) {
    let secs = at.rem_euclid(DAY);
    (secs / 3600, secs % 3600 / 60)
}

/// Unix seconds of `t`, rounded down (toward the past, also before 1970).
pub fn unix_time(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            -secs - i64::from(d.subsec_nanos() > 0)
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`). `month` is 1–12, `day` 1–31.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (month + 9) % 12; // March = 0 … February = 11
    let doy = (153 * mp + 2) / 5 + day - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date (year, month 1–12, day 1–31) of a day
/// counted from 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in range by construction; the fallbacks are never taken.
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    /// Unix seconds of a UTC date and time, through the function under test
    /// (itself checked against known values below).
    fn utc(year: i64, month: u32, day: u32, hour: i64, minute: i64, second: i64) -> i64 {
        days_from_civil(year, month, day) * DAY + hour * 3600 + minute * 60 + second
    }

    fn texts<'a>(lines: impl Iterator<Item = &'a Line>) -> Vec<&'a str> {
        lines.map(|l| &*l.text).collect()
    }

    /// Recomputes every derived field and compares.
    fn check(h: &History) {
        let mut bytes = 0;
        let mut order = BTreeSet::new();
        for (id, r) in &h.rooms {
            assert!(r.lines.len() <= h.per_room);
            assert_eq!(h.index.get(&r.name), Some(&id));
            bytes += room_cost(&r.name) + r.lines.iter().map(Line::cost).sum::<usize>();
            if let Some(rank) = h.rank(id) {
                order.insert((rank, id));
            }
        }
        assert_eq!(h.index.len(), h.rooms.len());
        assert_eq!(h.bytes, bytes);
        assert_eq!(h.order, order);
        assert!(h.bytes <= h.max_bytes || h.order.is_empty());
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 1, 1), 19_723);
        assert_eq!(civil_from_days(19_723 + 59), (2024, 2, 29));
        assert_eq!(days_from_civil(0, 3, 1), -719_468);
        // 2^31 seconds: where a signed 32-bit time_t ends.
        assert_eq!(format_until(1 << 31), "2038-01-19 03:14");
        assert_eq!(format_until(0), "1970-01-01 00:00");
        assert_eq!(format_until(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(format_until(-1), "1969-12-31 23:59");
        assert_eq!(format_until(253_402_300_799), "9999-12-31 23:59");
    }

    #[test]
    fn leap_years() {
        let feb_len = |y| days_from_civil(y, 3, 1) - days_from_civil(y, 2, 1);
        assert_eq!(feb_len(2024), 29); // divisible by 4
        assert_eq!(feb_len(2023), 28);
        assert_eq!(feb_len(1900), 28); // by 100, not 400
        assert_eq!(feb_len(2100), 28);
        assert_eq!(feb_len(2000), 29); // by 400
        assert_eq!(feb_len(2400), 29);
        let d = days_from_civil(2000, 2, 29);
        assert_eq!(civil_from_days(d), (2000, 2, 29));
        assert_eq!(civil_from_days(d + 1), (2000, 3, 1));
        let d = days_from_civil(2100, 2, 28);
        assert_eq!(civil_from_days(d + 1), (2100, 3, 1));
        assert_eq!(
            format_until(utc(2024, 2, 29, 23, 59, 59)),
            "2024-02-29 23:59"
        );
        assert_eq!(
            format_until(utc(2024, 2, 29, 23, 59, 59) + 1),
            "2024-03-01 00:00"
        );
        let year_len = |y| days_from_civil(y + 1, 1, 1) - days_from_civil(y, 1, 1);
        assert_eq!(year_len(2024), 366);
        assert_eq!(year_len(2100), 365);
        assert_eq!(year_len(2000), 366);
    }

    #[test]
    fn civil_round_trip_and_successive_days() {
        // About ±2200 years around 1970, and the far years of i64 time.
        let mut prev = civil_from_days(-800_001);
        for z in -800_000..800_000 {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z, "{y}-{m}-{d}");
            let next_ok = (y, m, d) == (prev.0, prev.1, prev.2 + 1)
                || (d == 1
                    && ((y, m) == (prev.0, prev.1 + 1) || (y, m, prev.1) == (prev.0 + 1, 1, 12)));
            assert!(next_ok, "{prev:?} then {y}-{m}-{d}");
            prev = (y, m, d);
        }
        for z in [i64::MAX / DAY, i64::MIN / DAY, 1 << 40, -(1 << 40)] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        // Extreme times format without panicking.
        assert!(!format_time(i64::MIN, i64::MAX).is_empty());
        assert!(!format_time(i64::MAX, i64::MIN).is_empty());
    }

    #[test]
    fn time_within_24_hours_then_date() {
        let now = utc(2025, 6, 15, 13, 30, 20);
        assert_eq!(format_time(now, now), "13:30");
        assert_eq!(format_time(utc(2025, 6, 15, 13, 4, 59), now), "13:04"); // truncated
        // Boundary: 24 h minus a second is recent, exactly 24 h is not.
        assert_eq!(format_time(now - DAY + 1, now), "13:30");
        assert_eq!(format_time(now - DAY, now), "2025-06-14 13:30");
        // Three days ago.
        assert_eq!(format_time(now - 3 * DAY - 600, now), "2025-06-12 13:20");
        // A little in the future (clock set back): still recent.
        assert_eq!(format_time(now + 59, now), "13:31");
        assert_eq!(format_time(now + 2 * DAY, now), "2025-06-17 13:30");
    }

    #[test]
    fn time_across_midnight_and_new_year() {
        let now = utc(2025, 1, 1, 0, 0, 30);
        assert_eq!(format_time(utc(2024, 12, 31, 23, 59, 59), now), "23:59");
        assert_eq!(format_time(utc(2024, 12, 31, 0, 0, 31), now), "00:00");
        assert_eq!(
            format_time(utc(2024, 12, 31, 0, 0, 30), now),
            "2024-12-31 00:00"
        );
        assert_eq!(
            format_time(utc(2024, 12, 29, 18, 7, 0), now),
            "2024-12-29 18:07"
        );
    }

    #[test]
    fn year_2038_and_later() {
        let now = utc(2038, 1, 20, 10, 0, 0);
        assert!(now > i64::from(i32::MAX));
        assert_eq!(format_time(1 << 31, now), "2038-01-19 03:14");
        assert_eq!(format_time(now - 60, now), "09:59");
        let far = utc(2106, 2, 7, 6, 28, 16); // past u32 seconds too
        assert_eq!(far, 1 << 32);
        assert_eq!(format_until(far), "2106-02-07 06:28");
        assert_eq!(
            format_until(utc(10_000, 1, 1, 0, 0, 0)),
            "10000-01-01 00:00"
        );
    }

    #[test]
    fn unix_time_rounds_down() {
        assert_eq!(unix_time(UNIX_EPOCH + Duration::from_millis(1999)), 1);
        assert_eq!(unix_time(UNIX_EPOCH - Duration::from_millis(1)), -1);
        assert_eq!(unix_time(UNIX_EPOCH - Duration::from_secs(2)), -2);
        assert!(unix_time(SystemTime::now()) > 1_700_000_000);
    }

    #[test]
    fn block_is_exactly_the_protocol_example() {
        let now = utc(2025, 6, 15, 14, 0, 0);
        let lines = [
            Line::new(utc(2025, 6, 15, 13, 4, 10), "alice: hi"),
            Line::new(utc(2025, 6, 15, 13, 5, 59), "* bob waves"),
        ];
        assert_eq!(
            block(&lines, now),
            [
                "2 lines of history:",
                "[13:04] alice: hi",
                "[13:05] * bob waves",
                "End of history"
            ]
        );
        assert_eq!(
            block(&lines[..1], now + 3 * DAY),
            [
                "1 line of history:",
                "[2025-06-15 13:04] alice: hi",
                "End of history"
            ]
        );
        assert!(block(&[], now).is_empty());
    }

    #[test]
    fn push_and_last() {
        let mut h = History::new(LINES_PER_ROOM, MAX_BYTES);
        h.push("lobby", 1, "a: 1");
        h.push("lobby", 2, "a: 2");
        h.push("rust", 3, "b: 3");
        h.push("lobby", 4, "* a 4");
        assert_eq!(texts(h.last("lobby", 20)), ["a: 1", "a: 2", "* a 4"]);
        assert_eq!(texts(h.last("lobby", 2)), ["a: 2", "* a 4"]);
        assert_eq!(h.last("lobby", 2).len(), 2);
        assert_eq!(texts(h.last("rust", 20)), ["b: 3"]);
        assert_eq!(h.last("nowhere", 20).len(), 0);
        assert_eq!(h.last("lobby", 0).len(), 0);
        assert_eq!(h.len("lobby"), 3);
        assert_eq!(h.len("nowhere"), 0);
        let expected =
            room_cost("lobby") + room_cost("rust") + 4 * LINE_OVERHEAD + "a: 1a: 2b: 3* a 4".len();
        assert_eq!(h.bytes(), expected);
        check(&h);
    }

    #[test]
    fn a_room_keeps_its_last_lines() {
        let mut h = History::new(3, MAX_BYTES);
        for i in 0..5 {
            h.push("lobby", i, &format!("a: {i}"));
        }
        assert_eq!(texts(h.last("lobby", 10)), ["a: 2", "a: 3", "a: 4"]);
        assert!(h.covers("lobby", 3));
        assert!(!h.covers("lobby", 4), "older lines were forgotten");
        check(&h);

        let mut none = History::new(0, MAX_BYTES);
        none.push("lobby", 1, "a: 1");
        assert_eq!(none.len("lobby"), 0);
        assert_eq!(none.bytes(), 0);
    }

    #[test]
    fn the_room_empty_longest_forgets_first_occupied_rooms_last() {
        let line = |i: i64| format!("u: {i:04}"); // 7 bytes
        let cost = 7 + LINE_OVERHEAD;
        let rooms = 3 * room_cost("aa");
        // Room for exactly 12 lines.
        let mut h = History::new(100, rooms + 12 * cost);
        for (i, room) in ["aa", "bb", "cc"].iter().enumerate() {
            for j in 0..4 {
                h.push(room, 10 * i as i64 + j, &line(j));
            }
        }
        assert_eq!(h.bytes(), rooms + 12 * cost);
        h.room_emptied("cc", 100); // cc empty longest
        h.room_emptied("aa", 200);
        // bb stays occupied.
        h.push("bb", 50, &line(4));
        assert_eq!(h.len("cc"), 3, "the oldest line of the room empty longest");
        assert_eq!(texts(h.last("cc", 9))[0], line(1));
        h.push("bb", 51, &line(5));
        h.push("bb", 52, &line(6));
        h.push("bb", 53, &line(7));
        assert_eq!(h.len("cc"), 0);
        assert!(!h.is_loaded("cc"));
        assert_eq!(h.rooms(), 2, "an empty room with no lines is forgotten");
        assert_eq!(
            h.len("aa"),
            4,
            "untouched while the longer-empty room had lines"
        );
        check(&h);
        // cc's room overhead is free now: two more lines fit.
        let spare = room_cost("aa") / cost;
        for k in 0..spare as i64 {
            h.push("bb", 60 + k, &line(8));
        }
        assert_eq!(h.len("aa"), 4);
        h.push("bb", 70, &line(9));
        assert_eq!(h.len("aa"), 3);
        check(&h);
        // Once every empty room is gone, occupied rooms lose their oldest
        // lines: aa (occupied again) holds older lines than bb.
        h.room_occupied("aa");
        for k in 0..3 {
            h.push("bb", 80 + k, &line(9));
        }
        assert_eq!(h.len("aa"), 0, "aa's lines (at 1..3) were older than bb's");
        assert_eq!(h.rooms(), 2, "an occupied room is remembered without lines");
        h.push("bb", 90, &line(9));
        assert_eq!(texts(h.last("bb", 1)), [line(9)]);
        check(&h);
    }

    #[test]
    fn occupied_rooms_lose_the_oldest_line_first() {
        let mut h = History::new(100, 2 * room_cost("aa") + 4 * (1 + LINE_OVERHEAD));
        h.push("aa", 10, "1");
        h.push("bb", 5, "2");
        h.push("aa", 20, "3");
        h.push("bb", 30, "4");
        h.push("aa", 40, "5");
        assert_eq!(
            texts(h.last("bb", 9)),
            ["4"],
            "bb's line at 5 was the oldest"
        );
        h.push("bb", 50, "6");
        assert_eq!(texts(h.last("aa", 9)), ["3", "5"]);
        check(&h);
    }

    #[test]
    fn an_emptied_room_is_rescued_by_a_newcomer() {
        let mut h = History::new(100, 2 * room_cost("aa") + 3 * (1 + LINE_OVERHEAD));
        h.push("aa", 1, "1");
        h.push("bb", 2, "2");
        h.room_emptied("bb", 3);
        h.room_occupied("bb");
        h.push("bb", 4, "3");
        h.push("bb", 5, "4");
        assert_eq!(h.len("aa"), 0, "aa held the oldest line");
        assert_eq!(h.len("bb"), 3);
        check(&h);
    }

    #[test]
    fn replace_room_loads_and_bounds() {
        let mut h = History::new(3, MAX_BYTES);
        assert!(!h.is_loaded("rust"));
        h.push("rust", 1, "x: before load");
        assert!(!h.is_loaded("rust"));
        let stored: Vec<Line> = (0..5).map(|i| Line::new(i, format!("a: {i}"))).collect();
        h.replace_room("rust", stored);
        assert!(h.is_loaded("rust"));
        assert_eq!(texts(h.last("rust", 9)), ["a: 2", "a: 3", "a: 4"]);
        assert!(!h.covers("rust", 4), "the store may hold older lines");
        check(&h);

        h.replace_room("go", vec![Line::new(1, "b: 1")]);
        assert!(h.is_loaded("go"));
        assert!(
            h.covers("go", 1000),
            "fewer than asked: that is all there is"
        );
        h.replace_room("empty", Vec::new());
        assert!(h.is_loaded("empty") && h.covers("empty", 20));
        h.room_emptied("empty", 10);
        assert!(!h.is_loaded("empty"), "forgotten, to be loaded again");
        check(&h);
    }

    #[test]
    fn replace_room_respects_the_byte_bound() {
        let mut h = History::new(1000, room_cost("aa") + 10 * (3 + LINE_OVERHEAD));
        let stored: Vec<Line> = (0..50).map(|i| Line::new(i, format!("{i:03}"))).collect();
        h.replace_room("aa", stored);
        assert_eq!(h.len("aa"), 10);
        assert_eq!(texts(h.last("aa", 1)), ["049"]);
        assert!(!h.covers("aa", 11));
        check(&h);
    }

    #[test]
    fn a_line_larger_than_the_bound_is_not_kept() {
        let mut h = History::new(10, room_cost("aa") + 10);
        h.push("aa", 1, "longer than ten bytes");
        assert_eq!(h.len("aa"), 0);
        h.room_emptied("aa", 2);
        assert_eq!((h.rooms(), h.bytes()), (0, 0));
    }

    #[test]
    fn overhead_constants_cover_the_structures() {
        assert!(std::mem::size_of::<Line>() + 16 <= LINE_OVERHEAD);
        assert!(std::mem::size_of::<RoomLines>() + 64 <= ROOM_OVERHEAD);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u8, u8),
        Emptied(u8),
        Occupied(u8),
        Replace(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..5u8, 0..40u8).prop_map(|(r, len)| Op::Push(r, len)),
            1 => (0..5u8).prop_map(Op::Emptied),
            1 => (0..5u8).prop_map(Op::Occupied),
            1 => (0..5u8, 0..8u8).prop_map(|(r, n)| Op::Replace(r, n)),
        ]
    }

    proptest! {
        #[test]
        fn bounds_and_bookkeeping_hold(ops in proptest::collection::vec(op(), 1..200)) {
            let mut h = History::new(6, 3 * ROOM_OVERHEAD + 12 * LINE_OVERHEAD + 200);
            for (t, op) in ops.into_iter().enumerate() {
                let t = t as i64;
                let name = |r: u8| format!("room{r}");
                match op {
                    Op::Push(r, len) => h.push(&name(r), t, &"x".repeat(len.into())),
                    Op::Emptied(r) => h.room_emptied(&name(r), t),
                    Op::Occupied(r) => h.room_occupied(&name(r)),
                    Op::Replace(r, n) => h.replace_room(
                        &name(r),
                        (0..n).map(|i| Line::new(t, format!("{i}"))).collect(),
                    ),
                }
                check(&h);
            }
        }
    }
}
