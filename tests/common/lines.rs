//! The line-level half of a test chat user, over any byte stream: the
//! plain `common::Client` (a `TcpStream`) and the TLS `tls_support::TlsUser`
//! (a rustls stream) are both a [`LineClient`], each with its own
//! constructors and extras in an `impl` of its own.
//!
//! Reads wait for a line (never a fixed sleep) but give up after the
//! stream's read timeout ([`READ_TIMEOUT`]), so a broken server fails a test
//! instead of hanging it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::time::Duration;

/// The longest any single expected line may take, generous for a busy 2-core CI.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One user on a connection that carries lines.
pub struct LineClient<S: Read + Write> {
    /// The stream, reads buffered; writes go to it directly.
    pub(crate) reader: BufReader<S>,
    /// The name the server gives (or is expected to give) this user: its
    /// address.
    pub name: String,
    /// What failure messages add to the name to tell the transport: `""`
    /// or `" (TLS)"`.
    tag: &'static str,
    /// The read errors that mean the peer ended the connection (rather
    /// than that no line came in time).
    ends: &'static [io::ErrorKind],
}

impl<S: Read + Write> LineClient<S> {
    /// Wraps `stream` (whose read timeout the caller set); reads nothing.
    pub fn new(
        stream: S,
        name: String,
        tag: &'static str,
        ends: &'static [io::ErrorKind],
    ) -> LineClient<S> {
        LineClient {
            reader: BufReader::new(stream),
            name,
            tag,
            ends,
        }
    }

    /// The stream underneath.
    pub fn stream(&self) -> &S {
        self.reader.get_ref()
    }

    /// The stream underneath, to write to or act on directly.
    pub fn stream_mut(&mut self) -> &mut S {
        self.reader.get_mut()
    }

    /// Reads the greeting and checks that it is `You are NAME`.
    pub fn expect_greeting(&mut self) {
        let greeting = format!("You are {}", self.name);
        self.expect(&greeting);
    }

    /// Sends `line` and a newline.
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    /// Sends bytes exactly as given (and flushes, for streams that buffer).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stream = self.stream_mut();
        stream.write_all(bytes).expect("send");
        stream.flush().expect("flush");
    }

    /// Reads one line (without `\n`); panics on EOF or after the timeout.
    pub fn line(&mut self) -> String {
        match self.try_line() {
            Some(line) => line,
            None => panic!("{}: connection closed while a line was expected", self.name),
        }
    }

    /// Reads one line, or `None` when the connection ended; panics after
    /// the timeout.
    pub fn try_line(&mut self) -> Option<String> {
        let mut bytes = Vec::new();
        match self.reader.read_until(b'\n', &mut bytes) {
            Ok(0) => None,
            Ok(_) if bytes.last() != Some(&b'\n') => {
                panic!("{}: line without newline: {bytes:?}", self.name)
            }
            Ok(_) => {
                bytes.pop();
                Some(String::from_utf8(bytes).expect("server sends UTF-8"))
            }
            Err(e) if self.ends.contains(&e.kind()) => None,
            Err(e) => panic!("{}: no line within {READ_TIMEOUT:?}: {e}", self.name),
        }
    }

    /// Reads one line and checks it.
    #[track_caller]
    pub fn expect(&mut self, want: &str) {
        let got = self.line();
        assert_eq!(
            got, want,
            "{}{} got an unexpected line",
            self.name, self.tag
        );
    }

    /// Reads lines until one equals `want`; returns the ones skipped.
    pub fn skip_until(&mut self, want: &str) -> Vec<String> {
        let mut skipped = Vec::new();
        loop {
            let line = self.line();
            if line == want {
                return skipped;
            }
            skipped.push(line);
        }
    }

    /// Reads lines until one starts with `prefix` and ends with `suffix`.
    pub fn skip_until_prefix_suffix(&mut self, prefix: &str, suffix: &str) -> String {
        loop {
            let line = self.line();
            if line.starts_with(prefix) && line.ends_with(suffix) {
                return line;
            }
        }
    }

    /// Expects the server to end the connection with nothing more to say.
    #[track_caller]
    pub fn expect_eof(&mut self) {
        if let Some(line) = self.try_line() {
            panic!("{}{} expected EOF, got {line:?}", self.name, self.tag);
        }
    }

    /// The `count` user lines of a `who` reply whose head was read, without
    /// their indent (` (you)` kept).
    pub fn who_lines(&mut self, count: usize) -> Vec<String> {
        (0..count)
            .map(|_| self.line().trim_start().to_string())
            .collect()
    }
}
