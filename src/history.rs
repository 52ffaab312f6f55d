//! Interim in-memory history (to be replaced by the full module).

use std::collections::HashMap;

/// One line of a room's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// When it was sent, unix seconds.
    pub at: i64,
    /// The line as broadcast.
    pub text: String,
}

/// Every room's recent lines.
#[derive(Debug, Default)]
pub struct History {
    rooms: HashMap<String, (bool, Vec<Line>)>,
    per_room: usize,
}

impl History {
    /// Bounded per room.
    pub fn new(per_room: usize, _max_bytes: usize) -> Self {
        History {
            rooms: HashMap::new(),
            per_room,
        }
    }
    /// Adds a line.
    pub fn push(&mut self, room: &str, at: i64, text: &str) {
        let entry = self.rooms.entry(room.to_string()).or_default();
        entry.1.push(Line {
            at,
            text: text.to_string(),
        });
        if entry.1.len() > self.per_room {
            entry.1.remove(0);
        }
    }
    /// The last `n` lines, oldest first.
    pub fn last(&self, room: &str, n: usize) -> Vec<&Line> {
        match self.rooms.get(room) {
            Some((_, lines)) => lines[lines.len().saturating_sub(n)..].iter().collect(),
            None => Vec::new(),
        }
    }
    /// Whether the room was loaded from the store.
    pub fn is_loaded(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|e| e.0)
    }
    /// Replaces a room's lines (loaded from the store).
    pub fn replace_room(&mut self, room: &str, lines: Vec<Line>) {
        self.rooms.insert(room.to_string(), (true, lines));
    }
    /// The room has been empty since `at`.
    pub fn room_emptied(&mut self, _room: &str, _at: i64) {}
    /// The room has users.
    pub fn room_occupied(&mut self, _room: &str) {}
}

/// `HH:MM` within 24 h, else `YYYY-MM-DD HH:MM`.
pub fn format_time(at: i64, _now: i64) -> String {
    format!("{:02}:{:02}", at / 3600 % 24, at / 60 % 60)
}
