//! Rooms: who is in each, in the order they came in, and what they have
//! yet to be told about each other.
//!
//! A broadcast walks the room's member list, not every connection: 10,000
//! users spread over 100 rooms make a line cost 100 recipients. Members are
//! kept in order of entry (their entry sequence number), which is the order
//! `who` lists them in and the order that decides who hears which presence
//! notice, so neither needs a sort. Leaving marks the member's place empty
//! (found by binary search on its sequence number, O(log n)); the list is
//! compacted once half of it is empty, so a walk stays dense.
//!
//! Pure data: no sockets, no clock.

use crate::id::ConnId;
use crate::presence::{PresenceBatch, Seq};
use slab::Slab;
use std::collections::HashMap;

/// The room every newcomer starts in, which always exists.
pub const LOBBY: &str = "lobby";

/// Index of a room in [`Rooms`]; the lobby is always [`LOBBY_ID`].
pub type RoomId = usize;

/// The lobby's id (created first, never removed).
pub const LOBBY_ID: RoomId = 0;

/// Members of a room in order of entry.
#[derive(Debug, Default)]
pub struct Members {
    /// (entry sequence number, member), ascending by sequence number;
    /// `None` where a member left and the list was not compacted yet.
    list: Vec<(Seq, Option<ConnId>)>,
    /// How many entries are `Some`.
    live: usize,
}

impl Members {
    /// Adds a member who entered as `seq`. Nearly always the latest entry,
    /// an append; a cluster's replica may put in a user who entered
    /// earlier (after an outage), which goes to its place. Ties (two
    /// servers numbered entries alike while apart) are broken by id.
    pub fn push(&mut self, seq: Seq, id: ConnId) {
        let key = (seq, id);
        let at = match self.list.last() {
            Some(&(last, last_id)) if (last, last_id.unwrap_or(id)) > key => self
                .list
                .partition_point(|&(s, other)| (s, other.unwrap_or(id)) <= key),
            _ => self.list.len(),
        };
        self.list.insert(at, (seq, Some(id)));
        self.live += 1;
    }

    /// Removes member `id`, who entered as `seq`; false if it is not here.
    pub fn remove(&mut self, seq: Seq, id: ConnId) -> bool {
        let start = self.list.partition_point(|&(s, _)| s < seq);
        let Some(offset) = self.list[start..]
            .iter()
            .take_while(|&&(s, _)| s == seq)
            .position(|&(_, m)| m == Some(id))
        else {
            return false;
        };
        self.list[start + offset].1 = None;
        self.live -= 1;
        if self.live == 0 {
            self.list = Vec::new();
        } else if self.list.len() >= 16 && self.live * 2 < self.list.len() {
            self.list.retain(|(_, id)| id.is_some());
        }
        true
    }

    /// Members present, earliest entry first.
    pub fn iter(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.list.iter().filter_map(|&(_, id)| id)
    }

    /// Members who entered before event `bound`, earliest first.
    pub fn entered_before(&self, bound: Seq) -> impl Iterator<Item = ConnId> + '_ {
        self.list
            .iter()
            .take_while(move |&&(seq, _)| seq < bound)
            .filter_map(|&(_, id)| id)
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when the room is empty.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
}

/// One room.
#[derive(Debug)]
pub struct Room {
    /// Lower case, without `#`.
    pub name: String,
    /// Who is here, in order of entry.
    pub members: Members,
    /// Arrivals and departures since the last flush.
    pub presence: PresenceBatch,
    /// Who left the room since the last flush, so that an `N users have
    /// left` line skips one of the N who came back before it was sent.
    pub departed: Vec<ConnId>,
    /// Already on the list of rooms with a batch to flush.
    pub dirty: bool,
}

/// Every room that exists: the lobby and each room someone is in.
#[derive(Debug)]
pub struct Rooms {
    rooms: Slab<Room>,
    by_name: HashMap<String, RoomId>,
}

impl Default for Rooms {
    fn default() -> Self {
        Rooms::new()
    }
}

impl Rooms {
    /// Just the lobby.
    pub fn new() -> Rooms {
        let mut rooms = Rooms {
            rooms: Slab::new(),
            by_name: HashMap::new(),
        };
        let lobby = rooms.create(LOBBY);
        debug_assert_eq!(lobby, LOBBY_ID);
        rooms
    }

    /// The room called `name` (lower case, no `#`), if it exists.
    pub fn find(&self, name: &str) -> Option<RoomId> {
        self.by_name.get(name).copied()
    }

    /// Creates room `name` (lower case, no `#`); the caller checked that it
    /// does not exist and that `--max-rooms` allows it.
    pub fn create(&mut self, name: &str) -> RoomId {
        let id = self.rooms.insert(Room {
            name: name.to_string(),
            members: Members::default(),
            presence: PresenceBatch::new(),
            departed: Vec::new(),
            dirty: false,
        });
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// Removes an empty room other than the lobby.
    pub fn remove_if_empty(&mut self, id: RoomId) -> bool {
        if id == LOBBY_ID || !self.rooms.get(id).is_some_and(|r| r.members.is_empty()) {
            return false;
        }
        let room = self.rooms.remove(id);
        self.by_name.remove(&room.name);
        true
    }

    /// The room `id`, if it exists.
    pub fn get(&self, id: RoomId) -> Option<&Room> {
        self.rooms.get(id)
    }

    /// The room `id`, if it exists, for changes.
    pub fn get_mut(&mut self, id: RoomId) -> Option<&mut Room> {
        self.rooms.get_mut(id)
    }

    /// How many rooms exist, the lobby included.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Always false: the lobby always exists.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Rooms that have users.
    pub fn occupied(&self) -> impl Iterator<Item = &Room> {
        self.rooms
            .iter()
            .map(|(_, room)| room)
            .filter(|room| !room.members.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> ConnId {
        ConnId::new(n, 1)
    }

    #[test]
    fn members_keep_their_order_of_entry() {
        let mut members = Members::default();
        for n in 0..5 {
            members.push(n as Seq * 10, id(n));
        }
        assert!(members.remove(20, id(2)));
        assert!(!members.remove(20, id(2)), "twice");
        assert!(!members.remove(25, id(2)), "never there");
        assert!(!members.remove(30, id(4)), "someone else's entry");
        members.push(60, id(2));
        let order: Vec<usize> = members.iter().map(ConnId::slot).collect();
        assert_eq!(order, vec![0, 1, 3, 4, 2]);
        let before: Vec<usize> = members.entered_before(40).map(ConnId::slot).collect();
        assert_eq!(before, vec![0, 1, 3]);
        assert_eq!(members.len(), 5);
    }

    #[test]
    fn an_earlier_entry_goes_to_its_place_and_ties_go_by_id() {
        let mut members = Members::default();
        members.push(10, id(1));
        members.push(30, id(3));
        members.push(20, id(2));
        members.push(20, id(0));
        let order: Vec<usize> = members.iter().map(ConnId::slot).collect();
        assert_eq!(order, vec![1, 0, 2, 3]);
        assert!(members.remove(20, id(2)));
        assert!(members.remove(20, id(0)));
        let order: Vec<usize> = members.iter().map(ConnId::slot).collect();
        assert_eq!(order, vec![1, 3]);
    }

    #[test]
    fn a_mostly_empty_list_is_compacted() {
        let mut members = Members::default();
        for n in 0..1000 {
            members.push(n as Seq, id(n));
        }
        for n in 0..990 {
            members.remove(n as Seq, id(n));
        }
        assert!(
            members.list.len() < 40,
            "{} entries kept",
            members.list.len()
        );
        let left: Vec<usize> = members.iter().map(ConnId::slot).collect();
        assert_eq!(left, (990..1000).collect::<Vec<_>>());
        for n in 990..1000 {
            members.remove(n as Seq, id(n));
        }
        assert!(members.is_empty());
        assert_eq!(members.list.capacity(), 0, "an empty room holds nothing");
    }

    #[test]
    fn rooms_come_and_go_but_the_lobby_stays() {
        let mut rooms = Rooms::new();
        assert_eq!(rooms.find(LOBBY), Some(LOBBY_ID));
        assert!(!rooms.remove_if_empty(LOBBY_ID));
        let rust = rooms.create("rust");
        assert_eq!(rooms.len(), 2);
        rooms.get_mut(rust).unwrap().members.push(1, id(1));
        assert!(!rooms.remove_if_empty(rust), "occupied");
        rooms.get_mut(rust).unwrap().members.remove(1, id(1));
        assert!(rooms.remove_if_empty(rust));
        assert_eq!(rooms.find("rust"), None);
        assert_eq!(rooms.len(), 1);
    }
}
