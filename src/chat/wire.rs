//! What chat servers of one cluster tell each other through Redis: the
//! events of the ordered channel, as text.
//!
//! An event is records separated by RS (U+001E), each record fields
//! separated by US (U+001F). The first record is the header; its first
//! field names the event. Neither separator can occur inside a field: every
//! client line has its control characters removed before anything sees it
//! (PROTOCOL.md, "Transport and lines"), and names, rooms and addresses
//! never had any. So no escaping, and the Lua scripts of [`super::scripts`]
//! can build the same records with plain string concatenation.
//!
//! | header | meaning | trailing records |
//! |---|---|---|
//! | `A S uid seq room name addr` | user arrived (connected) | `h` history lines |
//! | `R S uid old new` | renamed | |
//! | `J S uid seq from to` | moved to another room | `h` history lines |
//! | `L S uid seq kind [a [b]]` | left: kind `p` plain, `b` because `a`, `k` kicked by `a` (reason `b`) | |
//! | `C S uid room unix line` | chat line or action by `uid`, as broadcast | |
//! | `W S line` | operator announcement | |
//! | `M S uid sender text` | private message to `uid` of the receiving server | |
//! | `K S uid by [reason]` | kick `uid` of the receiving server | |
//! | `B S key until by` | ban (`until` `-` = until unbanned) | |
//! | `U S key` | unban | |
//! | `X S seq` | server `S` was lost (reaped after its heartbeat expired) | |
//! | `Q S seq` | server `S` shut down | |
//! | `Y S` | server `S` (re)registered its users | `u` users |
//! | `Z seq` | snapshot for one server after its link came up | `b` bans, `u` users |
//!
//! Records: `h unix line`; `u server uid seq room name addr skeleton`;
//! `b key until`.

use crate::presence::Seq;

/// Separates records.
pub const RS: char = '\u{1e}';
/// Separates fields.
pub const US: char = '\u{1f}';

/// A user as the registry in Redis describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord<'a> {
    /// The server the user is connected to.
    pub server: &'a str,
    /// The user's id on that server.
    pub uid: u64,
    /// The sequence number of the user's entry into its room.
    pub seq: Seq,
    /// The room, lower case.
    pub room: &'a str,
    /// The name.
    pub name: &'a str,
    /// The address the user connects from.
    pub addr: &'a str,
}

/// Why a user left, as an event carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone<'a> {
    /// `NAME has left`.
    Plain,
    /// `NAME has left (REASON)`.
    Because(&'a str),
    /// `NAME has left (kicked by OPER[: REASON])`.
    Kicked {
        /// The operator.
        by: &'a str,
        /// The operator's reason.
        reason: Option<&'a str>,
    },
}

/// One event read from the channel (or the server's own channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// `A`: a user connected.
    Arrive {
        /// The user.
        user: UserRecord<'a>,
        /// The room's last lines, oldest first: (unix time, line).
        history: Vec<(i64, &'a str)>,
    },
    /// `R`: a rename.
    Rename {
        /// The user's server.
        server: &'a str,
        /// The user's id there.
        uid: u64,
        /// The name before.
        old: &'a str,
        /// The name after.
        new: &'a str,
    },
    /// `J`: a move to another room.
    Move {
        /// The user's server.
        server: &'a str,
        /// The user's id there.
        uid: u64,
        /// The entry's sequence number.
        seq: Seq,
        /// The room left.
        from: &'a str,
        /// The room entered.
        to: &'a str,
        /// The entered room's last lines, oldest first.
        history: Vec<(i64, &'a str)>,
    },
    /// `L`: a user left.
    Leave {
        /// The user's server.
        server: &'a str,
        /// The user's id there.
        uid: u64,
        /// The departure's sequence number.
        seq: Seq,
        /// Why.
        why: Gone<'a>,
    },
    /// `C`: a chat line or action.
    Say {
        /// The sender's server.
        server: &'a str,
        /// The sender's id there.
        uid: u64,
        /// The room.
        room: &'a str,
        /// When it was said (unix seconds).
        unix: i64,
        /// The line as broadcast.
        line: &'a str,
    },
    /// `W`: an operator announcement (the whole line).
    Wall {
        /// The operator's server.
        server: &'a str,
        /// The line.
        line: &'a str,
    },
    /// `M`: a private message for a user of the receiving server.
    Private {
        /// The sender's server.
        server: &'a str,
        /// The recipient's id on the receiving server.
        uid: u64,
        /// The sender's name.
        sender: &'a str,
        /// The text.
        text: &'a str,
    },
    /// `K`: a kick of a user of the receiving server.
    Kick {
        /// The operator's server.
        server: &'a str,
        /// The victim's id on the receiving server.
        uid: u64,
        /// The operator's name.
        by: &'a str,
        /// The reason.
        reason: Option<&'a str>,
    },
    /// `B`: a ban.
    Ban {
        /// The operator's server.
        server: &'a str,
        /// The address or /64, as `AddrKey` writes it.
        key: &'a str,
        /// Unix time it ends; `None` = until unbanned.
        until: Option<i64>,
        /// The operator's name.
        by: &'a str,
    },
    /// `U`: an unban.
    Unban {
        /// The operator's server.
        server: &'a str,
        /// The address or /64.
        key: &'a str,
    },
    /// `X`: a server died; its users are gone.
    Lost {
        /// The lost server.
        server: &'a str,
        /// The departures' sequence number.
        seq: Seq,
    },
    /// `Q`: a server shut down; its users are gone.
    Quit {
        /// The server.
        server: &'a str,
        /// The departures' sequence number.
        seq: Seq,
    },
    /// `Y`: every user of one server, as it (re)registered them.
    Sync {
        /// The server.
        server: &'a str,
        /// Its users.
        users: Vec<UserRecord<'a>>,
    },
    /// `Z`: the whole registry, for the server that just linked.
    Snapshot {
        /// The registry's sequence number.
        seq: Seq,
        /// Every ban: (key, until).
        bans: Vec<(&'a str, Option<i64>)>,
        /// Every user of every other server.
        users: Vec<UserRecord<'a>>,
    },
}

/// Why a payload is not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed cluster event: {}", self.0)
    }
}

/// Reads one event.
pub fn parse(payload: &[u8]) -> Result<Event<'_>, Malformed> {
    let text = std::str::from_utf8(payload).map_err(|_| Malformed("not UTF-8".into()))?;
    let mut records = text.split(RS);
    let header = records.next().unwrap_or_default();
    let mut f = Fields::new(header);
    let kind = f.str()?;
    let event = match kind {
        "A" => Event::Arrive {
            user: user(&mut f)?,
            history: history(records)?,
        },
        "R" => Event::Rename {
            server: f.str()?,
            uid: f.num()?,
            old: f.str()?,
            new: f.rest(),
        },
        "J" => Event::Move {
            server: f.str()?,
            uid: f.num()?,
            seq: f.num()?,
            from: f.str()?,
            to: f.rest(),
            history: history(records)?,
        },
        "L" => {
            let server = f.str()?;
            let uid = f.num()?;
            let seq = f.num()?;
            let why = match f.str()? {
                "p" => Gone::Plain,
                "b" => Gone::Because(f.rest()),
                "k" => Gone::Kicked {
                    by: f.str()?,
                    reason: f.optional(),
                },
                other => return Err(Malformed(format!("departure kind {other:?}"))),
            };
            Event::Leave {
                server,
                uid,
                seq,
                why,
            }
        }
        "C" => Event::Say {
            server: f.str()?,
            uid: f.num()?,
            room: f.str()?,
            unix: f.num()?,
            line: f.rest(),
        },
        "W" => Event::Wall {
            server: f.str()?,
            line: f.rest(),
        },
        "M" => Event::Private {
            server: f.str()?,
            uid: f.num()?,
            sender: f.str()?,
            text: f.rest(),
        },
        "K" => Event::Kick {
            server: f.str()?,
            uid: f.num()?,
            by: f.str()?,
            reason: f.optional(),
        },
        "B" => Event::Ban {
            server: f.str()?,
            key: f.str()?,
            until: until(f.str()?)?,
            by: f.rest(),
        },
        "U" => Event::Unban {
            server: f.str()?,
            key: f.rest(),
        },
        "X" => Event::Lost {
            server: f.str()?,
            seq: f.num()?,
        },
        "Q" => Event::Quit {
            server: f.str()?,
            seq: f.num()?,
        },
        "Y" => Event::Sync {
            server: f.str()?,
            users: users(records)?,
        },
        "Z" => {
            let seq = f.num()?;
            let mut bans = Vec::new();
            let mut users = Vec::new();
            for record in records {
                let mut r = Fields::new(record);
                match r.str()? {
                    "b" => bans.push((r.str()?, until(r.rest())?)),
                    "u" => users.push(user(&mut r)?),
                    other => return Err(Malformed(format!("snapshot record {other:?}"))),
                }
            }
            Event::Snapshot { seq, bans, users }
        }
        other => return Err(Malformed(format!("event kind {other:?}"))),
    };
    Ok(event)
}

/// `h unix line` records.
fn history<'a>(records: impl Iterator<Item = &'a str>) -> Result<Vec<(i64, &'a str)>, Malformed> {
    let mut lines = Vec::new();
    for record in records {
        let mut r = Fields::new(record);
        if r.str()? != "h" {
            return Err(Malformed("expected a history record".into()));
        }
        lines.push((r.num()?, r.rest()));
    }
    Ok(lines)
}

/// `u ...` records.
fn users<'a>(records: impl Iterator<Item = &'a str>) -> Result<Vec<UserRecord<'a>>, Malformed> {
    let mut list = Vec::new();
    for record in records {
        let mut r = Fields::new(record);
        if r.str()? != "u" {
            return Err(Malformed("expected a user record".into()));
        }
        list.push(user(&mut r)?);
    }
    Ok(list)
}

/// A user's fields (`server uid seq room name addr`), as a `u` record has
/// them after its `u` and an `A` header after its `A`.
fn user<'a>(r: &mut Fields<'a>) -> Result<UserRecord<'a>, Malformed> {
    let server = r.str()?;
    let uid = r.num()?;
    let seq = r.num()?;
    let room = r.str()?;
    let name = r.str()?;
    let addr = r.str()?;
    Ok(UserRecord {
        server,
        uid,
        seq,
        room,
        name,
        addr,
    })
}

/// A ban's end: unix seconds, or `-` for none.
fn until(text: &str) -> Result<Option<i64>, Malformed> {
    if text == "-" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| Malformed(format!("ban end {text:?}")))
}

/// A record's fields, read in order.
struct Fields<'a> {
    rest: Option<&'a str>,
}

impl<'a> Fields<'a> {
    fn new(record: &'a str) -> Self {
        Fields { rest: Some(record) }
    }

    /// The next field.
    fn str(&mut self) -> Result<&'a str, Malformed> {
        let rest = self
            .rest
            .ok_or_else(|| Malformed("a field is missing".into()))?;
        match rest.split_once(US) {
            Some((field, after)) => {
                self.rest = Some(after);
                Ok(field)
            }
            None => {
                self.rest = None;
                Ok(rest)
            }
        }
    }

    /// The next field, as a number.
    fn num<T: std::str::FromStr>(&mut self) -> Result<T, Malformed> {
        let field = self.str()?;
        field
            .parse()
            .map_err(|_| Malformed(format!("not a number: {field:?}")))
    }

    /// Everything left, separators included (the last field may be text).
    fn rest(&mut self) -> &'a str {
        self.rest.take().unwrap_or_default()
    }

    /// The last field, if there is one.
    fn optional(&mut self) -> Option<&'a str> {
        self.rest.take()
    }
}

/// Builds an event's header record.
#[derive(Debug, Default)]
pub struct Builder {
    text: String,
}

impl Builder {
    /// An event of `kind`.
    pub fn new(kind: &str) -> Builder {
        Builder {
            text: kind.to_string(),
        }
    }

    /// Adds a field.
    pub fn field(mut self, value: impl std::fmt::Display) -> Builder {
        use std::fmt::Write;
        self.text.push(US);
        let _ = write!(self.text, "{value}");
        self
    }

    /// The event.
    pub fn build(self) -> String {
        self.text
    }
}

/// How a departure reason is written in an `L` event (`kind [a [b]]`).
pub fn gone_fields(why: &Gone<'_>) -> Vec<String> {
    match why {
        Gone::Plain => vec!["p".into()],
        Gone::Because(reason) => vec!["b".into(), reason.to_string()],
        Gone::Kicked { by, reason: None } => vec!["k".into(), by.to_string()],
        Gone::Kicked {
            by,
            reason: Some(reason),
        } => vec!["k".into(), by.to_string(), reason.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(records: &[&str]) -> String {
        records.join(&RS.to_string())
    }

    #[test]
    fn an_arrival_with_history_reads_back() {
        let header = Builder::new("A")
            .field("s1")
            .field(42)
            .field(7)
            .field("lobby")
            .field("bob")
            .field("127.0.0.1:5000")
            .build();
        let payload = join(&[
            &header,
            "h\u{1f}100\u{1f}alice: hi",
            "h\u{1f}160\u{1f}* bob waves",
        ]);
        let event = parse(payload.as_bytes()).unwrap();
        assert_eq!(
            event,
            Event::Arrive {
                user: UserRecord {
                    server: "s1",
                    uid: 42,
                    seq: 7,
                    room: "lobby",
                    name: "bob",
                    addr: "127.0.0.1:5000",
                },
                history: vec![(100, "alice: hi"), (160, "* bob waves")],
            }
        );
    }

    #[test]
    fn text_keeps_tabs_and_everything_after_the_last_separator() {
        let payload = Builder::new("C")
            .field("s1")
            .field(9)
            .field("rust")
            .field(5)
            .field("bob: a\tb: c")
            .build();
        assert_eq!(
            parse(payload.as_bytes()).unwrap(),
            Event::Say {
                server: "s1",
                uid: 9,
                room: "rust",
                unix: 5,
                line: "bob: a\tb: c"
            }
        );
    }

    #[test]
    fn departures_of_every_kind() {
        for why in [
            Gone::Plain,
            Gone::Because("gone fishing"),
            Gone::Kicked {
                by: "op",
                reason: None,
            },
            Gone::Kicked {
                by: "op",
                reason: Some("spam"),
            },
        ] {
            let mut b = Builder::new("L").field("s").field(1).field(2);
            for f in gone_fields(&why) {
                b = b.field(f);
            }
            let text = b.build();
            assert_eq!(
                parse(text.as_bytes()).unwrap(),
                Event::Leave {
                    server: "s",
                    uid: 1,
                    seq: 2,
                    why: why.clone()
                }
            );
        }
    }

    #[test]
    fn a_snapshot_reads_bans_and_users() {
        let payload = join(&[
            "Z\u{1f}99",
            "b\u{1f}10.0.0.1\u{1f}-",
            "b\u{1f}2001:db8::/64\u{1f}1700000000",
            "u\u{1f}s2\u{1f}5\u{1f}3\u{1f}rust\u{1f}ann\u{1f}[::1]:4\u{1f}ann",
        ]);
        let Event::Snapshot { seq, bans, users } = parse(payload.as_bytes()).unwrap() else {
            panic!("not a snapshot");
        };
        assert_eq!(seq, 99);
        assert_eq!(
            bans,
            vec![("10.0.0.1", None), ("2001:db8::/64", Some(1_700_000_000))]
        );
        assert_eq!(users[0].addr, "[::1]:4");
        assert_eq!(users[0].name, "ann");
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for payload in [
            &b""[..],
            b"?",
            b"A\x1fs",
            b"L\x1fs\x1f1\x1f2\x1fz",
            b"\xff\xfe",
            b"Z\x1fx",
            b"A\x1fs\x1f1\x1f2\x1flobby\x1fbob\x1fa\x1eq",
        ] {
            assert!(parse(payload).is_err(), "{payload:?}");
        }
    }
}
