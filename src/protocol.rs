//! Every line the server sends, in one module.
//!
//! PROTOCOL.md (version 2, not in this repository) fixes each of these to
//! the letter, and acceptance tests compare them byte for byte; keeping them
//! together makes the contract reviewable in one read and keeps a typo from
//! hiding in the middle of the logic. The quoted rows of PROTOCOL.md are
//! repeated next to each line they govern.

/// `Server is full, try again later` — the refused connection, then closed.
pub const SERVER_FULL: &str = "Server is full, try again later";
/// Over `--ip-max-connections` or `--ip-connect-rate`.
pub const TOO_MANY_FROM_ADDRESS: &str = "Too many connections from your address, try again later";
/// A connection from a banned address.
pub const BANNED: &str = "You are banned from this server";
/// To everyone, then closed.
pub const SHUTTING_DOWN: &str = "Server is shutting down";
/// The reply to `/quit`, then the server closes the connection.
pub const BYE: &str = "Bye";
/// The last line of `/help`.
pub const END_OF_HELP: &str = "End of help";
/// The last line of a history block.
pub const END_OF_HISTORY: &str = "End of history";
/// `/oper` with the right password.
pub const NOW_OPERATOR: &str = "You are now an operator";
/// `/oper` with a wrong password.
pub const WRONG_PASSWORD: &str = "Wrong password";
/// `/oper` on a server without `--oper-password-file`.
pub const OPERS_DISABLED: &str = "Operators are not enabled on this server";
/// `/oper` sooner than 10 s after the last try from the same address.
pub const TOO_MANY_ATTEMPTS: &str = "Too many attempts, try again later";
/// An operator command from a user who is not one.
pub const PERMISSION_DENIED: &str = "Permission denied: operators only";
/// A rename while the cluster's name registry (Redis) is unreachable.
pub const NAMES_UNAVAILABLE: &str = "Name changes are unavailable right now, try again later";

/// The departure reason of the users of a cluster server that died.
pub const SERVER_LOST: &str = "server lost";

/// `Usage: /nick NAME` (also for `/name`).
pub const USAGE_NICK: &str = "Usage: /nick NAME";
/// `Usage: /msg NAME TEXT`.
pub const USAGE_MSG: &str = "Usage: /msg NAME TEXT";
/// `Usage: /me TEXT`.
pub const USAGE_ME: &str = "Usage: /me TEXT";
/// `Usage: /join ROOM`.
pub const USAGE_JOIN: &str = "Usage: /join ROOM";
/// `Usage: /history [N]`, also for a bad N.
pub const USAGE_HISTORY: &str = "Usage: /history [N]";
/// `Usage: /kick NAME [REASON]`.
pub const USAGE_KICK: &str = "Usage: /kick NAME [REASON]";
/// `Usage: /ban NAME|ADDRESS [MINUTES]`.
pub const USAGE_BAN: &str = "Usage: /ban NAME|ADDRESS [MINUTES]";
/// `Usage: /unban ADDRESS`.
pub const USAGE_UNBAN: &str = "Usage: /unban ADDRESS";
/// `Usage: /wall TEXT`.
pub const USAGE_WALL: &str = "Usage: /wall TEXT";
/// `Usage: /oper PASSWORD`.
pub const USAGE_OPER: &str = "Usage: /oper PASSWORD";
/// `Usage: rename|NAME` (the bare rename form).
pub const USAGE_RENAME: &str = "Usage: rename|NAME";

/// The `/help` text, one line per command, then `End of help`.
pub const HELP: &[&str] = &[
    "/who (or who) - list the users of your room, in the order they came in",
    "/nick NAME (or /name NAME, rename|NAME) - change your name",
    "/msg NAME TEXT - private message to NAME, in any room",
    "/me TEXT - action, shown as * NAME TEXT",
    "/join ROOM - move to ROOM (created if needed), and see its history",
    "/rooms - list the rooms that have users",
    "/history [N] - the last N lines of your room (default 20, at most 1000)",
    "/help - this list",
    "/quit [REASON] - leave the server",
    "//TEXT - send a line that starts with /",
    "/oper PASSWORD - become an operator",
    "/kick NAME [REASON] - operators: disconnect a user",
    "/ban NAME|ADDRESS [MINUTES] - operators: kick and refuse an address (default 60, 0 = until unbanned)",
    "/unban ADDRESS - operators: lift a ban",
    "/bans - operators: list bans",
    "/wall TEXT - operators: announcement to everyone",
    END_OF_HELP,
];

/// `You are NAME`, the newcomer's first line.
pub fn you_are(name: &str) -> String {
    format!("You are {name}")
}

/// `NAME has arrived`.
pub fn arrived(name: &str) -> String {
    format!("{name} has arrived")
}

/// `N users have arrived` / `N users have left` (`what` is `arrived` or
/// `left`), a presence batch of more than three.
pub fn many(count: usize, what: &str) -> String {
    format!("{count} users have {what}")
}

/// `NAME: TEXT`, a chat line.
pub fn chat(name: &str, text: &str) -> String {
    format!("{name}: {text}")
}

/// `* NAME TEXT`, an action.
pub fn action(name: &str, text: &str) -> String {
    format!("* {name} {text}")
}

/// `OLD is now known as NEW`.
pub fn renamed(old: &str, new: &str) -> String {
    format!("{old} is now known as {new}")
}

/// `You are already NEW`: a rename to one's own name, same case.
pub fn already_named(name: &str) -> String {
    format!("You are already {name}")
}

/// `Name NEW is taken`.
pub fn name_taken(name: &str) -> String {
    format!("Name {name} is taken")
}

/// `Invalid name: NEW (1-32 letters, digits, _ - .)`.
pub fn invalid_name(name: &str) -> String {
    format!("Invalid name: {name} (1-32 letters, digits, _ - .)")
}

/// `[private] SENDER: TEXT`, to the recipient of `/msg`.
pub fn private(from: &str, text: &str) -> String {
    format!("[private] {from}: {text}")
}

/// `[to NAME] TEXT`, to the sender of `/msg`, with the recipient's spelling.
pub fn private_sent(to: &str, text: &str) -> String {
    format!("[to {to}] {text}")
}

/// `No such user: NAME`.
pub fn no_such_user(name: &str) -> String {
    format!("No such user: {name}")
}

/// `You are now in #ROOM`.
pub fn now_in(room: &str) -> String {
    format!("You are now in #{room}")
}

/// `You are already in #ROOM`.
pub fn already_in(room: &str) -> String {
    format!("You are already in #{room}")
}

/// `Invalid room name: ROOM (1-32 letters, digits, _ - .)`, ROOM as typed
/// without a leading `#`.
pub fn invalid_room(room: &str) -> String {
    format!("Invalid room name: {room} (1-32 letters, digits, _ - .)")
}

/// `Too many rooms (max N)`.
pub fn too_many_rooms(max: usize) -> String {
    format!("Too many rooms (max {max})")
}

/// `N users in #ROOM:` (`1 user in #ROOM:`), the head of a `who` reply.
pub fn who_head(count: usize, room: &str) -> String {
    match count {
        1 => format!("1 user in #{room}:"),
        n => format!("{n} users in #{room}:"),
    }
}

/// One line of a `who` reply: two spaces, the name, ` (you)` for the asker.
pub fn who_line(name: &str, you: bool) -> String {
    if you {
        format!("  {name} (you)")
    } else {
        format!("  {name}")
    }
}

/// `N rooms:` (`1 room:`), the head of a `/rooms` reply.
pub fn rooms_head(count: usize) -> String {
    match count {
        1 => "1 room:".to_string(),
        n => format!("{n} rooms:"),
    }
}

/// `  #ROOM (N users)` (`(1 user)`), ` (you are here)` on the asker's room.
pub fn rooms_line(room: &str, users: usize, here: bool) -> String {
    let count = match users {
        1 => "1 user".to_string(),
        n => format!("{n} users"),
    };
    let here = if here { " (you are here)" } else { "" };
    format!("  #{room} ({count}){here}")
}

/// `N lines of history:` (`1 line of history:`).
pub fn history_head(count: usize) -> String {
    match count {
        1 => "1 line of history:".to_string(),
        n => format!("{n} lines of history:"),
    }
}

/// `[TIME] LINE`, one line of a history block.
pub fn history_line(time: &str, line: &str) -> String {
    format!("[{time}] {line}")
}

/// `No history in #ROOM`.
pub fn no_history(room: &str) -> String {
    format!("No history in #{room}")
}

/// `Unknown command: /WORD (try /help)`.
pub fn unknown_command(word: &str) -> String {
    format!("Unknown command: /{word} (try /help)")
}

/// `Line too long (max N bytes), discarded`.
pub fn line_too_long(max: usize) -> String {
    format!("Line too long (max {max} bytes), discarded")
}

/// `Disconnected: idle for SECS s`, to the idle user before it is closed.
pub fn idle_disconnect(secs: u64) -> String {
    format!("Disconnected: idle for {secs} s")
}

/// `You were kicked by OPER` or `You were kicked by OPER (REASON)`.
pub fn kicked_you(by: &str, reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("You were kicked by {by} ({reason})"),
        None => format!("You were kicked by {by}"),
    }
}

/// `Kicked NAME`, to the operator, with the name as its owner spells it.
pub fn kicked(name: &str) -> String {
    format!("Kicked {name}")
}

/// `[announcement] OPER: TEXT`, to everyone in every room.
pub fn announcement(oper: &str, text: &str) -> String {
    format!("[announcement] {oper}: {text}")
}

/// `Banned ADDRESS for MINUTES min` or `Banned ADDRESS until unbanned`.
pub fn banned(address: &str, minutes: u64) -> String {
    if minutes == 0 {
        format!("Banned {address} until unbanned")
    } else {
        format!("Banned {address} for {minutes} min")
    }
}

/// `ADDRESS is exempt from bans`.
pub fn exempt_from_bans(address: &str) -> String {
    format!("{address} is exempt from bans")
}

/// `Unbanned ADDRESS`.
pub fn unbanned(address: &str) -> String {
    format!("Unbanned {address}")
}

/// `ADDRESS is not banned`.
pub fn not_banned(address: &str) -> String {
    format!("{address} is not banned")
}

/// `N bans:` (`1 ban:`, `0 bans:`), the head of a `/bans` reply.
pub fn bans_head(count: usize) -> String {
    match count {
        1 => "1 ban:".to_string(),
        n => format!("{n} bans:"),
    }
}

/// `  ADDRESS until YYYY-MM-DD HH:MM UTC` or `  ADDRESS until unbanned`.
pub fn bans_line(address: &str, until: Option<&str>) -> String {
    match until {
        Some(when) => format!("  {address} until {when} UTC"),
        None => format!("  {address} until unbanned"),
    }
}

/// Why a user left, as the departure notice says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure<'a> {
    /// `NAME has left`.
    Plain,
    /// `NAME has left (REASON)`: a `/quit` reason, `idle timeout`, `too slow`,
    /// `server lost`.
    Because(&'a str),
    /// `NAME has left for #ROOM`.
    For(&'a str),
    /// `NAME has left (kicked by OPER)` or `(kicked by OPER: REASON)`.
    Kicked {
        /// The operator's name.
        by: &'a str,
        /// The operator's reason, if given (`banned` for a ban).
        reason: Option<&'a str>,
    },
}

/// `NAME has left` with its reason, per PROTOCOL.md's table.
pub fn left(name: &str, how: Departure<'_>) -> String {
    match how {
        Departure::Plain => format!("{name} has left"),
        Departure::Because(reason) => format!("{name} has left ({reason})"),
        Departure::For(room) => format!("{name} has left for #{room}"),
        Departure::Kicked { by, reason: None } => format!("{name} has left (kicked by {by})"),
        Departure::Kicked {
            by,
            reason: Some(reason),
        } => format!("{name} has left (kicked by {by}: {reason})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singular_and_plural_heads() {
        assert_eq!(who_head(1, "lobby"), "1 user in #lobby:");
        assert_eq!(who_head(2, "rust"), "2 users in #rust:");
        assert_eq!(rooms_head(1), "1 room:");
        assert_eq!(rooms_head(0), "0 rooms:");
        assert_eq!(history_head(1), "1 line of history:");
        assert_eq!(history_head(20), "20 lines of history:");
        assert_eq!(bans_head(0), "0 bans:");
        assert_eq!(bans_head(1), "1 ban:");
        assert_eq!(
            rooms_line("rust", 1, true),
            "  #rust (1 user) (you are here)"
        );
        assert_eq!(rooms_line("lobby", 3, false), "  #lobby (3 users)");
    }

    #[test]
    fn departures_in_every_form() {
        assert_eq!(left("bob", Departure::Plain), "bob has left");
        assert_eq!(
            left("bob", Departure::Because("lunch")),
            "bob has left (lunch)"
        );
        assert_eq!(
            left("bob", Departure::For("rust")),
            "bob has left for #rust"
        );
        let kicked = Departure::Kicked {
            by: "op",
            reason: None,
        };
        assert_eq!(left("bob", kicked), "bob has left (kicked by op)");
        let ban = Departure::Kicked {
            by: "op",
            reason: Some("banned"),
        };
        assert_eq!(left("bob", ban), "bob has left (kicked by op: banned)");
        assert_eq!(
            kicked_you("op", Some("spam")),
            "You were kicked by op (spam)"
        );
        assert_eq!(banned("10.0.0.1", 0), "Banned 10.0.0.1 until unbanned");
        assert_eq!(banned("10.0.0.1", 5), "Banned 10.0.0.1 for 5 min");
    }
}
