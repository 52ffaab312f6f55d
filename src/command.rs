//! A cleaned line becomes a [`Command`] here: the whole command language in
//! one pure function, so every rule of PROTOCOL.md's command table is
//! testable without a socket.

/// What a client line asks the server to do. Borrowed from the line, so
/// parsing never allocates.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Nothing to send (the line was empty after cleaning); still activity.
    Empty,
    /// A chat line for everyone, sender included.
    Chat(&'a str),
    /// `/who` or `who`.
    Who,
    /// `/nick NAME`, `/name NAME` or `rename|NAME`.
    Rename(&'a str),
    /// `/msg NAME TEXT`.
    Msg {
        /// The recipient's name as typed (matched without case).
        to: &'a str,
        /// The message, as typed after the name.
        text: &'a str,
    },
    /// `/me TEXT`.
    Me(&'a str),
    /// `/help`.
    Help,
    /// `/quit [REASON]`.
    Quit(Option<&'a str>),
    /// `/join ROOM`: the whole argument, as typed.
    Join(&'a str),
    /// `/rooms`.
    Rooms,
    /// `/history [N]`: N from 1 to [`MAX_HISTORY_REQUEST`], `None` without N.
    History(Option<usize>),
    /// `/oper PASSWORD`: the whole argument.
    Oper(&'a str),
    /// `/kick NAME [REASON]`.
    Kick {
        /// The user to kick, as typed.
        name: &'a str,
        /// Everything after the name, if anything.
        reason: Option<&'a str>,
    },
    /// `/ban NAME|ADDRESS [MINUTES]`.
    Ban {
        /// A user's name or an IP address, as typed.
        target: &'a str,
        /// Minutes; `None` for the default, `Some(0)` until unbanned.
        minutes: Option<u64>,
    },
    /// `/unban ADDRESS`.
    Unban(&'a str),
    /// `/bans`.
    Bans,
    /// `/wall TEXT`.
    Wall(&'a str),
    /// A known command without its argument; the payload is the usage line.
    Usage(&'static str),
    /// `/WORD` that is not a command; the payload is WORD as typed.
    Unknown(&'a str),
}

use crate::protocol::{
    USAGE_BAN, USAGE_HISTORY, USAGE_JOIN, USAGE_KICK, USAGE_ME, USAGE_MSG, USAGE_NICK, USAGE_OPER,
    USAGE_RENAME, USAGE_UNBAN, USAGE_WALL,
};

/// The largest N of `/history N` (PROTOCOL.md: "N from 1 to 1000").
pub const MAX_HISTORY_REQUEST: usize = 1000;

/// The longest ban `/ban` accepts, in minutes (ten years): far beyond any
/// real use, small enough that the expiry time cannot overflow.
pub const MAX_BAN_MINUTES: u64 = 10 * 365 * 24 * 60;

/// The bare rename form of the Go chat room chatd descends from, kept
/// exactly as PROTOCOL.md writes it.
const RENAME_PREFIX: &str = "rename|";

/// Parses one cleaned line (no terminator, no trailing blanks).
pub fn parse(line: &str) -> Command<'_> {
    if line.is_empty() {
        return Command::Empty;
    }
    if line == "who" {
        return Command::Who;
    }
    if let Some(name) = line.strip_prefix(RENAME_PREFIX) {
        return if name.is_empty() {
            Command::Usage(USAGE_RENAME)
        } else {
            Command::Rename(name)
        };
    }
    let Some(body) = line.strip_prefix('/') else {
        return Command::Chat(line);
    };
    if body.starts_with('/') {
        return Command::Chat(body);
    }
    let (word, arg) = split_word(body);
    match word.to_ascii_lowercase().as_str() {
        "who" => Command::Who,
        "help" => Command::Help,
        "nick" | "name" if arg.is_empty() => Command::Usage(USAGE_NICK),
        "nick" | "name" => Command::Rename(arg),
        "me" if arg.is_empty() => Command::Usage(USAGE_ME),
        "me" => Command::Me(arg),
        "quit" => Command::Quit((!arg.is_empty()).then_some(arg)),
        "msg" => match split_word(arg) {
            (to, text) if !to.is_empty() && !text.is_empty() => Command::Msg { to, text },
            _ => Command::Usage(USAGE_MSG),
        },
        "join" if arg.is_empty() => Command::Usage(USAGE_JOIN),
        "join" => Command::Join(arg),
        "rooms" => Command::Rooms,
        "history" if arg.is_empty() => Command::History(None),
        "history" => match arg.parse::<usize>() {
            Ok(n) if (1..=MAX_HISTORY_REQUEST).contains(&n) => Command::History(Some(n)),
            _ => Command::Usage(USAGE_HISTORY),
        },
        "oper" if arg.is_empty() => Command::Usage(USAGE_OPER),
        "oper" => Command::Oper(arg),
        "kick" => match split_word(arg) {
            ("", _) => Command::Usage(USAGE_KICK),
            (name, reason) => Command::Kick {
                name,
                reason: (!reason.is_empty()).then_some(reason),
            },
        },
        "ban" => match split_word(arg) {
            ("", _) => Command::Usage(USAGE_BAN),
            (target, "") => Command::Ban {
                target,
                minutes: None,
            },
            (target, minutes) => match minutes.parse::<u64>() {
                Ok(m) if m <= MAX_BAN_MINUTES => Command::Ban {
                    target,
                    minutes: Some(m),
                },
                _ => Command::Usage(USAGE_BAN),
            },
        },
        "unban" => match split_word(arg) {
            (address, "") if !address.is_empty() => Command::Unban(address),
            _ => Command::Usage(USAGE_UNBAN),
        },
        "bans" => Command::Bans,
        "wall" if arg.is_empty() => Command::Usage(USAGE_WALL),
        "wall" => Command::Wall(arg),
        _ => Command::Unknown(word),
    }
}

/// Splits off the first word; the rest starts after the blanks that follow it.
fn split_word(text: &str) -> (&str, &str) {
    match text.find([' ', '\t']) {
        Some(end) => (&text[..end], text[end..].trim_start_matches([' ', '\t'])),
        None => (text, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::Command::*;
    use super::*;

    #[test]
    fn chat_and_empty() {
        assert_eq!(parse(""), Empty);
        assert_eq!(parse("hello"), Chat("hello"));
        assert_eq!(parse(" /who"), Chat(" /who"));
        assert_eq!(parse("Who"), Chat("Who"), "bare forms are lower case only");
        assert_eq!(parse("who am i"), Chat("who am i"));
    }

    #[test]
    fn double_slash_sends_a_slash_line() {
        assert_eq!(parse("//who"), Chat("/who"));
        assert_eq!(parse("//"), Chat("/"));
    }

    #[test]
    fn who_in_all_forms() {
        assert_eq!(parse("who"), Who);
        assert_eq!(parse("/who"), Who);
        assert_eq!(parse("/WHO"), Who);
        assert_eq!(parse("/Who extra"), Who);
    }

    #[test]
    fn rename_in_all_forms() {
        assert_eq!(parse("/nick bob"), Rename("bob"));
        assert_eq!(parse("/NICK    bob"), Rename("bob"));
        assert_eq!(parse("/name bob"), Rename("bob"));
        assert_eq!(parse("rename|bob"), Rename("bob"));
        assert_eq!(parse("/nick a b"), Rename("a b"));
        assert_eq!(parse("/nick"), Usage(USAGE_NICK));
        assert_eq!(parse("/name"), Usage(USAGE_NICK));
        assert_eq!(parse("rename|"), Usage(USAGE_RENAME));
    }

    #[test]
    fn msg_needs_name_and_text() {
        assert_eq!(
            parse("/msg bob hi there"),
            Msg {
                to: "bob",
                text: "hi there"
            }
        );
        assert_eq!(
            parse("/msg  bob   hi"),
            Msg {
                to: "bob",
                text: "hi"
            }
        );
        assert_eq!(parse("/msg bob"), Usage(USAGE_MSG));
        assert_eq!(parse("/msg"), Usage(USAGE_MSG));
    }

    #[test]
    fn me_help_quit() {
        assert_eq!(parse("/me waves"), Me("waves"));
        assert_eq!(parse("/me"), Usage(USAGE_ME));
        assert_eq!(parse("/help"), Help);
        assert_eq!(parse("/quit"), Quit(None));
        assert_eq!(parse("/quit gone fishing"), Quit(Some("gone fishing")));
    }

    #[test]
    fn rooms_and_history() {
        assert_eq!(parse("/join rust"), Join("rust"));
        assert_eq!(parse("/JOIN #Rust"), Join("#Rust"));
        assert_eq!(parse("/join a b"), Join("a b"));
        assert_eq!(parse("/join"), Usage(USAGE_JOIN));
        assert_eq!(parse("/rooms"), Rooms);
        assert_eq!(parse("/history"), History(None));
        assert_eq!(parse("/history 5"), History(Some(5)));
        assert_eq!(parse("/history 1000"), History(Some(1000)));
        for bad in [
            "/history 0",
            "/history 1001",
            "/history x",
            "/history -1",
            "/history 5 6",
        ] {
            assert_eq!(parse(bad), Usage(USAGE_HISTORY), "{bad}");
        }
    }

    #[test]
    fn operator_commands() {
        assert_eq!(parse("/oper secret word"), Oper("secret word"));
        assert_eq!(parse("/oper"), Usage(USAGE_OPER));
        assert_eq!(
            parse("/kick bob"),
            Kick {
                name: "bob",
                reason: None
            }
        );
        assert_eq!(
            parse("/kick bob be nice"),
            Kick {
                name: "bob",
                reason: Some("be nice")
            }
        );
        assert_eq!(parse("/kick"), Usage(USAGE_KICK));
        assert_eq!(
            parse("/ban 10.0.0.1 30"),
            Ban {
                target: "10.0.0.1",
                minutes: Some(30)
            }
        );
        assert_eq!(
            parse("/ban bob"),
            Ban {
                target: "bob",
                minutes: None
            }
        );
        assert_eq!(parse("/ban bob soon"), Usage(USAGE_BAN));
        assert_eq!(parse("/ban"), Usage(USAGE_BAN));
        assert_eq!(parse("/unban 10.0.0.1"), Unban("10.0.0.1"));
        assert_eq!(parse("/unban"), Usage(USAGE_UNBAN));
        assert_eq!(parse("/bans"), Bans);
        assert_eq!(parse("/wall hello all"), Wall("hello all"));
        assert_eq!(parse("/wall"), Usage(USAGE_WALL));
    }

    #[test]
    fn unknown_commands_keep_their_spelling() {
        assert_eq!(parse("/dance now"), Unknown("dance"));
        assert_eq!(parse("/"), Unknown(""));
        assert_eq!(parse("/Foo"), Unknown("Foo"));
    }
}
