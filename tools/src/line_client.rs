//! A blocking line client, one thread per connection: what the stress
//! scenarios use for their handful of observers, readers and checkers.
//!
//! Scenarios with thousands of clients use non-blocking sockets in one mio
//! loop instead (`load::swarm`, `stress::soak`); a thread each would cost
//! the server CPU it needs on the same 2-core machine.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A connected, greeted chat user.
#[derive(Debug)]
pub struct LineClient {
    /// The read half, buffered; bytes past the last line read stay in its
    /// buffer (see [`BufReader::buffer`]).
    pub reader: BufReader<TcpStream>,
    /// The write half (the same socket).
    pub writer: TcpStream,
    /// The name the server gave us: our own address.
    pub name: String,
}

impl LineClient {
    /// Connects to `addr` and reads the greeting; every later read gives up
    /// after `timeout`.
    pub fn join(addr: SocketAddr, timeout: Duration) -> io::Result<LineClient> {
        Self::join_with(addr, timeout, None)
    }

    /// Like [`join`](Self::join), with SO_RCVBUF set before connecting.
    pub fn join_with(
        addr: SocketAddr,
        timeout: Duration,
        rcvbuf: Option<usize>,
    ) -> io::Result<LineClient> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size)?;
        }
        socket.connect(&addr.into())?;
        let writer: TcpStream = socket.into();
        writer.set_read_timeout(Some(timeout))?;
        // PROTOCOL.md: "A new connection's name is its peer address as
        // printed by Rust's `SocketAddr` `Display`" -- our local address.
        let name = writer.local_addr()?.to_string();
        let mut client = LineClient {
            reader: BufReader::new(writer.try_clone()?),
            writer,
            name,
        };
        // PROTOCOL.md, connect: "the newcomer | `You are NAME`, then the
        // lobby's history".
        let greeting = client.line()?;
        if greeting != format!("You are {}", client.name) {
            return Err(io::Error::other(format!(
                "unexpected greeting {greeting:?}"
            )));
        }
        Ok(client)
    }

    /// One line without its `\n` (the server ends every line with one);
    /// EOF is an error.
    pub fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        if line.ends_with('\n') {
            line.pop();
        }
        Ok(line)
    }

    /// Sends `line` with its `\n`.
    pub fn send(&mut self, line: &str) -> io::Result<()> {
        self.writer.write_all(format!("{line}\n").as_bytes())
    }

    /// Sends `/who` and returns the user lines as sent (`  NAME`, with
    /// ` (you)` on our own), skipping whatever arrives before the header.
    pub fn who(&mut self) -> io::Result<Vec<String>> {
        self.send("/who")?;
        let count = loop {
            if let Some(count) = who_header(&self.line()?) {
                break count;
            }
        };
        (0..count).map(|_| self.line()).collect()
    }
}

/// The user count of a `who` reply's first line, or `None` for any other
/// line.
///
/// PROTOCOL.md, `/who`: "v2: `N users in #ROOM:` (`1 user in #ROOM:`) then
/// one line per user, in the order they entered the room (earliest first):
/// two spaces, the name, and ` (you)` on the sender's own line". Version 1,
/// which has no rooms, says `N users online:`; both are accepted. No other
/// line can match: a chat line starts with a name, which has no spaces.
pub fn who_header(line: &str) -> Option<usize> {
    let (count, rest) = line.split_once(' ')?;
    let count = count.parse().ok()?;
    let place = rest
        .strip_prefix("users ")
        .or_else(|| rest.strip_prefix("user "))?;
    let known = place == "online:" || (place.starts_with("in #") && place.ends_with(':'));
    known.then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_headers_of_both_protocol_versions() {
        assert_eq!(who_header("2 users online:"), Some(2));
        assert_eq!(who_header("1 user online:"), Some(1));
        assert_eq!(who_header("3 users in #lobby:"), Some(3));
        assert_eq!(who_header("1 user in #rust:"), Some(1));
    }

    #[test]
    fn other_lines_are_not_who_headers() {
        assert_eq!(who_header("5 users have arrived"), None);
        assert_eq!(who_header("bob: 2 users online:"), None);
        assert_eq!(who_header("  bob (you)"), None);
        assert_eq!(who_header("2 rooms:"), None);
    }
}
