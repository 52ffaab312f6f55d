//! The subscriber connection's side of RESP2 pub/sub.
//!
//! In RESP2 a connection that has subscribed can only subscribe,
//! unsubscribe and `PING`; everything it receives is an array whose first
//! element says what it is. This module keeps the set of channels and
//! patterns the caller wants (so a new connection after an outage
//! subscribes to exactly them again) and sorts what arrives into a
//! published message or an acknowledgement of something the link sent.

use redis_protocol::resp2::types::OwnedFrame;
use std::collections::BTreeSet;

/// What arrived on the subscriber connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    /// A message published to a channel (directly, or matching a pattern).
    Message {
        /// The channel it was published to.
        channel: Vec<u8>,
        /// What was published.
        payload: Vec<u8>,
    },
    /// The answer to one channel or pattern of a `SUBSCRIBE`,
    /// `UNSUBSCRIBE`, `PSUBSCRIBE` or `PUNSUBSCRIBE`, or to a `PING`.
    Ack,
}

/// Sorts one frame from the subscriber connection; an error reply or a
/// frame of no known shape is the reason the link goes down.
pub fn classify(frame: OwnedFrame) -> Result<Push, String> {
    let mut parts = match frame {
        OwnedFrame::Array(parts) => parts,
        // A PING before any subscription is answered the ordinary way.
        OwnedFrame::SimpleString(text) if text.eq_ignore_ascii_case(b"PONG") => {
            return Ok(Push::Ack);
        }
        OwnedFrame::Error(error) => return Err(error),
        other => return Err(format!("unexpected frame on the subscriber: {other:?}")),
    };
    let kind = match parts.first() {
        Some(OwnedFrame::BulkString(kind)) => kind.to_ascii_lowercase(),
        _ => return Err(format!("unexpected push: {parts:?}")),
    };
    match (kind.as_slice(), parts.len()) {
        (b"message", 3) | (b"pmessage", 4) => {
            let payload = parts.pop();
            let channel = parts.pop();
            match (channel, payload) {
                (Some(OwnedFrame::BulkString(channel)), Some(OwnedFrame::BulkString(payload))) => {
                    Ok(Push::Message { channel, payload })
                }
                _ => Err("a message without a channel or payload".to_owned()),
            }
        }
        (b"subscribe" | b"unsubscribe" | b"psubscribe" | b"punsubscribe", 3) | (b"pong", 2) => {
            Ok(Push::Ack)
        }
        _ => Err(format!("unexpected push: {parts:?}")),
    }
}

/// The channels and patterns the caller wants to hear, whether or not the
/// link is up.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// Channels, for `SUBSCRIBE`.
    channels: BTreeSet<Vec<u8>>,
    /// Glob patterns, for `PSUBSCRIBE`.
    patterns: BTreeSet<Vec<u8>>,
}

/// A channel or a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// An exact channel name (`SUBSCRIBE`).
    Channel,
    /// A glob pattern (`PSUBSCRIBE`).
    Pattern,
}

impl Topic {
    /// The command that subscribes to it.
    pub fn subscribe_command(self) -> &'static [u8] {
        match self {
            Topic::Channel => b"SUBSCRIBE",
            Topic::Pattern => b"PSUBSCRIBE",
        }
    }

    /// The command that unsubscribes from it.
    pub fn unsubscribe_command(self) -> &'static [u8] {
        match self {
            Topic::Channel => b"UNSUBSCRIBE",
            Topic::Pattern => b"PUNSUBSCRIBE",
        }
    }
}

impl Subscriptions {
    /// No subscriptions.
    pub fn new() -> Subscriptions {
        Subscriptions::default()
    }

    fn set(&mut self, topic: Topic) -> &mut BTreeSet<Vec<u8>> {
        match topic {
            Topic::Channel => &mut self.channels,
            Topic::Pattern => &mut self.patterns,
        }
    }

    /// Adds `name`; false if it was there already.
    pub fn add(&mut self, topic: Topic, name: &[u8]) -> bool {
        let set = self.set(topic);
        !set.contains(name) && set.insert(name.to_vec())
    }

    /// Removes `name`; false if it was not there.
    pub fn remove(&mut self, topic: Topic, name: &[u8]) -> bool {
        self.set(topic).remove(name)
    }

    /// The commands that subscribe a fresh connection to everything, and
    /// the number of acknowledgements they bring (one per name).
    pub fn commands(&self) -> Vec<(Vec<&[u8]>, usize)> {
        let mut commands = Vec::new();
        for (topic, set) in [
            (Topic::Channel, &self.channels),
            (Topic::Pattern, &self.patterns),
        ] {
            if !set.is_empty() {
                let mut args = vec![topic.subscribe_command()];
                args.extend(set.iter().map(Vec::as_slice));
                commands.push((args, set.len()));
            }
        }
        commands
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OwnedFrame::{Array, BulkString, Error, Integer, SimpleString};

    fn bulk(text: &str) -> OwnedFrame {
        BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn messages_and_pattern_messages_carry_channel_and_payload() {
        let message = Array(vec![bulk("message"), bulk("chatd:room:a"), bulk("hi")]);
        let expected = Push::Message {
            channel: b"chatd:room:a".to_vec(),
            payload: b"hi".to_vec(),
        };
        assert_eq!(classify(message), Ok(expected));
        let pmessage = Array(vec![
            bulk("pmessage"),
            bulk("chatd:*"),
            bulk("chatd:room:b"),
            bulk("yo"),
        ]);
        let expected = Push::Message {
            channel: b"chatd:room:b".to_vec(),
            payload: b"yo".to_vec(),
        };
        assert_eq!(classify(pmessage), Ok(expected));
    }

    #[test]
    fn acknowledgements_and_pongs_in_both_modes() {
        for frame in [
            Array(vec![bulk("subscribe"), bulk("a"), Integer(1)]),
            Array(vec![bulk("psubscribe"), bulk("a*"), Integer(2)]),
            Array(vec![bulk("unsubscribe"), bulk("a"), Integer(1)]),
            Array(vec![bulk("punsubscribe"), OwnedFrame::Null, Integer(0)]),
            Array(vec![bulk("pong"), bulk("")]),
            SimpleString(b"PONG".to_vec()),
        ] {
            assert_eq!(classify(frame), Ok(Push::Ack));
        }
    }

    #[test]
    fn errors_and_strange_frames_are_refused() {
        assert_eq!(
            classify(Error("NOAUTH Authentication required.".into())),
            Err("NOAUTH Authentication required.".into())
        );
        for frame in [
            Integer(3),
            Array(vec![]),
            Array(vec![bulk("message"), bulk("only-channel")]),
            Array(vec![bulk("message"), Integer(1), bulk("x")]),
            Array(vec![bulk("smessage"), bulk("c"), bulk("x")]),
        ] {
            assert!(classify(frame).is_err());
        }
    }

    #[test]
    fn a_fresh_connection_subscribes_to_what_is_wanted_now() {
        let mut subscriptions = Subscriptions::new();
        assert!(subscriptions.commands().is_empty());
        assert!(subscriptions.add(Topic::Channel, b"b"));
        assert!(subscriptions.add(Topic::Channel, b"a"));
        assert!(!subscriptions.add(Topic::Channel, b"a"));
        assert!(subscriptions.add(Topic::Pattern, b"p*"));
        assert!(subscriptions.add(Topic::Channel, b"gone"));
        assert!(subscriptions.remove(Topic::Channel, b"gone"));
        assert!(!subscriptions.remove(Topic::Pattern, b"gone"));
        let commands = subscriptions.commands();
        let expected: Vec<(Vec<&[u8]>, usize)> = vec![
            (vec![b"SUBSCRIBE", b"a", b"b"], 2),
            (vec![b"PSUBSCRIBE", b"p*"], 1),
        ];
        assert_eq!(commands, expected);
    }
}
