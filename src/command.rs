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
    /// A known command without its argument; the payload is the usage line.
    Usage(&'static str),
    /// `/WORD` that is not a command; the payload is WORD as typed.
    Unknown(&'a str),
}

/// The usage lines PROTOCOL.md fixes for commands missing their argument.
pub const USAGE_NICK: &str = "Usage: /nick NAME";
/// See [`USAGE_NICK`].
pub const USAGE_MSG: &str = "Usage: /msg NAME TEXT";
/// See [`USAGE_NICK`].
pub const USAGE_ME: &str = "Usage: /me TEXT";
/// See [`USAGE_NICK`].
pub const USAGE_RENAME: &str = "Usage: rename|NAME";

/// The seed chat room's bare rename form, kept exactly as it was written.
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
    fn unknown_commands_keep_their_spelling() {
        assert_eq!(parse("/dance now"), Unknown("dance"));
        assert_eq!(parse("/"), Unknown(""));
        assert_eq!(parse("/Foo"), Unknown("Foo"));
    }
}
