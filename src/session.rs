//! What each command does for the user who typed it.
//!
//! [`crate::command`] decides what a line means; this module carries it out
//! against the [`Room`], producing exactly the replies of PROTOCOL.md's
//! command table. It never touches a socket: replies are queued, and the
//! server loop writes them.

use crate::command::Command;
use crate::conn::Leave;
use crate::room::{Rename, Room};
use log::debug;

/// The `/help` text, one line per command, then `End of help`.
pub const HELP: &[&str] = &[
    "/who (or who) - list users, oldest first",
    "/nick NAME (or /name NAME, rename|NAME) - change your name",
    "/msg NAME TEXT - private message to NAME",
    "/me TEXT - action, shown as * NAME TEXT",
    "/help - this list",
    "/quit [REASON] - leave the room",
    "//TEXT - send a line that starts with /",
    "End of help",
];

/// Whether the user's connection goes on after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Keep reading this user's lines.
    Continue,
    /// The user left; stop reading.
    Stop,
}

/// Carries out `command` for the user under `key`.
pub fn execute(room: &mut Room, key: usize, command: Command<'_>) -> After {
    let Some(sender) = room.get(key) else {
        return After::Stop;
    };
    let name = sender.name.clone();
    match command {
        Command::Empty => {}
        Command::Chat(text) => {
            debug!("{name}: {text}");
            room.broadcast(&format!("{name}: {text}"));
        }
        Command::Me(text) => {
            debug!("* {name} {text}");
            room.broadcast(&format!("* {name} {text}"));
        }
        Command::Who => who(room, key),
        Command::Rename(new) => match room.rename(key, new) {
            Rename::Done => {}
            Rename::Unchanged => room.send(key, &format!("You are already {new}")),
            Rename::Taken => room.send(key, &format!("Name {new} is taken")),
            Rename::Invalid => room.send(
                key,
                &format!("Invalid name: {new} (1-32 letters, digits, _ - .)"),
            ),
        },
        Command::Msg { to, text } => match room.find(to) {
            Some(recipient) => {
                let recipient_name = room.get(recipient).map(|c| c.name.clone());
                let recipient_name = recipient_name.unwrap_or_else(|| to.to_string());
                debug!("{name} -> {recipient_name}: {text}");
                room.flush_presence();
                room.send(recipient, &format!("[private] {name}: {text}"));
                room.send(key, &format!("[to {recipient_name}] {text}"));
            }
            None => room.send(key, &format!("No such user: {to}")),
        },
        Command::Help => {
            for line in HELP {
                room.send(key, line);
            }
        }
        Command::Quit(reason) => {
            room.send(key, "Bye");
            room.leave(key, Leave::Quit(reason.map(str::to_string)));
        }
        Command::Usage(usage) => room.send(key, usage),
        Command::Unknown(word) => room.send(key, &format!("Unknown command: /{word} (try /help)")),
    }
    match room.get(key) {
        Some(conn) if conn.is_present() => After::Continue,
        _ => After::Stop,
    }
}

/// Replies to `who`: a count line, then every user, oldest first.
fn who(room: &mut Room, key: usize) {
    let roster = room.roster();
    let mut lines = Vec::with_capacity(roster.len() + 1);
    lines.push(match roster.len() {
        1 => "1 user online:".to_string(),
        n => format!("{n} users online:"),
    });
    for (user, name) in roster {
        if user == key {
            lines.push(format!("  {name} (you)"));
        } else {
            lines.push(format!("  {name}"));
        }
    }
    room.send_block(key, &lines);
}
