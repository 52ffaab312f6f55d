//! One non-blocking connection to Redis, driven by the server's mio loop.
//!
//! A `RedisConn` is a socket (TCP or Unix), the bytes received that do not
//! make a whole frame yet, and the bytes queued for Redis, bounded. It
//! knows nothing of what the frames mean — that is the link's business —
//! and it has no state machine beyond "the connect has completed or not":
//! a connection that fails is dropped, and a new one is made for the next
//! attempt. Every method that can fail returns the reason as
//! [`LinkDown`], and the link then closes both connections.
//!
//! Sockets are registered edge-triggered for both directions once, at
//! connect. Reads run until `WouldBlock` or [`READ_BUDGET`]; writes until
//! `WouldBlock` or the queue is empty. Commands may be queued before the
//! connect completes: they leave when the socket first reports writable.

use super::codec::Decoder;
use super::down::LinkDown;
use super::output::{Output, PushError};
use super::tuning::{OUTPUT_LIMIT, READ_BUDGET, READ_CHUNK};
use super::url::Target;
use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use redis_protocol::resp2::types::OwnedFrame;
use std::io::{self, Read, Write};

/// The socket: TCP or Unix.
#[derive(Debug)]
enum Stream {
    /// `redis://HOST:PORT`.
    Tcp(TcpStream),
    /// `unix:///PATH`.
    Unix(UnixStream),
}

impl Stream {
    /// Starts a non-blocking connect to `target`.
    fn connect(target: &Target) -> io::Result<Stream> {
        Ok(match target {
            Target::Tcp(addr) => {
                let stream = TcpStream::connect(*addr)?;
                // Commands are small and latency matters more than packets.
                stream.set_nodelay(true)?;
                Stream::Tcp(stream)
            }
            Target::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
        })
    }

    /// The pending error of a failed connect (`SO_ERROR`), if any.
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            Stream::Tcp(stream) => stream.take_error(),
            Stream::Unix(stream) => stream.take_error(),
        }
    }

    /// Whether the connect has completed: `getpeername` succeeds only then.
    fn has_peer(&self) -> io::Result<bool> {
        let result = match self {
            Stream::Tcp(stream) => stream.peer_addr().map(drop),
            Stream::Unix(stream) => stream.peer_addr().map(drop),
        };
        match result {
            Ok(()) => Ok(true),
            Err(error)
                if error.kind() == io::ErrorKind::NotConnected
                    || error.raw_os_error() == Some(libc::EINPROGRESS) =>
            {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.read(buf),
            Stream::Unix(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(stream) => stream.write(buf),
            Stream::Unix(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.register(registry, token, interest),
            Stream::Unix(stream) => stream.register(registry, token, interest),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.reregister(registry, token, interest),
            Stream::Unix(stream) => stream.reregister(registry, token, interest),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(stream) => stream.deregister(registry),
            Stream::Unix(stream) => stream.deregister(registry),
        }
    }
}

/// How a read pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// The socket has nothing more for now (`WouldBlock`, or the connect
    /// has not completed yet); the next readable event says when it has.
    Drained,
    /// [`READ_BUDGET`] was read and more may wait: read again soon, without
    /// waiting for an event (sockets are edge-triggered).
    Stopped,
    /// Redis closed the connection; the frames before the end were decoded.
    Closed,
}

/// One connection to Redis.
#[derive(Debug)]
pub struct RedisConn {
    /// The socket, registered under `token`.
    stream: Stream,
    /// The mio token the caller gave for this connection.
    token: Token,
    /// The non-blocking connect has completed.
    connected: bool,
    /// Received bytes not yet a whole frame.
    decoder: Decoder,
    /// Encoded commands the kernel has not taken yet, at most
    /// [`OUTPUT_LIMIT`] bytes.
    output: Output,
}

impl RedisConn {
    /// Starts connecting to `target` and registers the socket under
    /// `token` for both directions.
    pub fn connect(target: &Target, registry: &Registry, token: Token) -> Result<Self, LinkDown> {
        let mut stream = Stream::connect(target)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(RedisConn::with_stream(stream, token))
    }

    /// A connection over an already connected Unix socket.
    #[cfg(test)]
    fn from_unix(stream: UnixStream, token: Token) -> RedisConn {
        let mut conn = RedisConn::with_stream(Stream::Unix(stream), token);
        conn.connected = true;
        conn
    }

    fn with_stream(stream: Stream, token: Token) -> RedisConn {
        RedisConn {
            stream,
            token,
            connected: false,
            decoder: Decoder::new(),
            output: Output::new(),
        }
    }

    /// The token the socket is registered under.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Queues one command (an array of bulk strings). When the queue would
    /// pass [`OUTPUT_LIMIT`], what the kernel takes is written first, so
    /// only bytes Redis has not read count; still too much, and Redis is
    /// not keeping up: [`LinkDown::OutputFull`]. (So is a single command
    /// larger than the limit, which can never be sent.)
    pub fn send(&mut self, args: &[&[u8]]) -> Result<(), LinkDown> {
        match self.output.push_command(args, OUTPUT_LIMIT) {
            Ok(()) => return Ok(()),
            Err(PushError::Encode(error)) => return Err(error),
            Err(PushError::Full) => {}
        }
        self.flush()?;
        match self.output.push_command(args, OUTPUT_LIMIT) {
            Ok(()) => Ok(()),
            Err(PushError::Encode(error)) => Err(error),
            Err(PushError::Full) => Err(LinkDown::OutputFull),
        }
    }

    /// Reads what the socket has (at most [`READ_BUDGET`] bytes) and
    /// appends every complete frame to `frames`, in order.
    pub fn on_readable(&mut self, frames: &mut Vec<OwnedFrame>) -> Result<Reading, LinkDown> {
        self.read_within(READ_BUDGET, frames)
    }

    /// [`on_readable`](Self::on_readable) with another budget.
    fn read_within(
        &mut self,
        budget: usize,
        frames: &mut Vec<OwnedFrame>,
    ) -> Result<Reading, LinkDown> {
        if !self.establish()? {
            return Ok(Reading::Drained);
        }
        let mut taken = 0;
        let reading = loop {
            if taken >= budget {
                break Reading::Stopped;
            }
            match self
                .decoder
                .read_from(&mut self.stream, READ_CHUNK.min(budget - taken))
            {
                Ok(0) => break Reading::Closed,
                Ok(n) => taken += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Reading::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        };
        self.decoder.decode_into(frames)?;
        Ok(reading)
    }

    /// The socket can take bytes (or the connect has completed, or
    /// failed): writes what is queued.
    pub fn on_writable(&mut self) -> Result<(), LinkDown> {
        self.flush()
    }

    /// Writes what is queued, as far as the kernel takes it; nothing before
    /// the connect has completed.
    pub fn flush(&mut self) -> Result<(), LinkDown> {
        if self.output.pending() > 0 && self.establish()? {
            self.output.flush_to(&mut self.stream)?;
        }
        Ok(())
    }

    /// Whether the connect has completed, finding out if not known yet.
    fn establish(&mut self) -> Result<bool, LinkDown> {
        if !self.connected {
            if let Some(error) = self.stream.take_error()? {
                return Err(error.into());
            }
            self.connected = self.stream.has_peer()?;
        }
        Ok(self.connected)
    }

    /// Bytes queued for Redis and not yet taken by the kernel.
    pub fn queued(&self) -> usize {
        self.output.pending()
    }

    /// Heap bytes held by both buffers.
    pub fn heap_bytes(&self) -> usize {
        self.output.heap_bytes() + self.decoder.heap_bytes()
    }

    /// Takes the socket out of the poll; dropping the connection closes it.
    pub fn deregister(&mut self, registry: &Registry) {
        // Closing the descriptor removes it from the poll anyway; a failure
        // here leaves nothing behind.
        let _ = registry.deregister(&mut self.stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (RedisConn, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (RedisConn::from_unix(ours, Token(1)), theirs)
    }

    #[test]
    fn a_peer_that_does_not_read_takes_the_link_down_at_the_bound() {
        let (mut conn, _silent) = pair();
        let payload = vec![b'x'; 64 * 1024];
        let mut sent = 0usize;
        let outcome = loop {
            match conn.send(&[b"PUBLISH", b"room", &payload]) {
                Ok(()) => sent += payload.len(),
                Err(reason) => break reason,
            }
            assert!(conn.queued() <= OUTPUT_LIMIT);
            assert!(sent < 64 * OUTPUT_LIMIT, "never refused");
        };
        assert!(matches!(outcome, LinkDown::OutputFull), "{outcome:?}");
        assert!(conn.queued() > OUTPUT_LIMIT - payload.len() - 64);
        assert!(conn.heap_bytes() <= OUTPUT_LIMIT, "{}", conn.heap_bytes());
    }

    #[test]
    fn replies_are_decoded_and_the_end_of_stream_is_reported_after_them() {
        let (mut conn, mut redis) = pair();
        conn.send(&[b"PING"]).unwrap();
        conn.flush().unwrap();
        let mut request = [0u8; 14];
        std::io::Read::read_exact(&mut redis, &mut request).unwrap();
        assert_eq!(&request, b"*1\r\n$4\r\nPING\r\n");
        redis.write_all(b"+PONG\r\n:7\r\n$3\r\nab").unwrap();
        let mut frames = Vec::new();
        assert_eq!(conn.on_readable(&mut frames).unwrap(), Reading::Drained);
        assert_eq!(
            frames,
            vec![
                OwnedFrame::SimpleString(b"PONG".to_vec()),
                OwnedFrame::Integer(7)
            ]
        );
        redis.write_all(b"c\r\n").unwrap();
        drop(redis);
        frames.clear();
        assert_eq!(conn.on_readable(&mut frames).unwrap(), Reading::Closed);
        assert_eq!(frames, vec![OwnedFrame::BulkString(b"abc".to_vec())]);
    }

    #[test]
    fn a_flood_is_read_a_budget_at_a_time() {
        let (mut conn, mut redis) = pair();
        let message = b"*3\r\n$7\r\nmessage\r\n$1\r\nr\r\n$2\r\nhi\r\n";
        redis.write_all(&message.repeat(1000)).unwrap();
        let mut frames = Vec::new();
        let mut passes = 0;
        while conn.read_within(READ_CHUNK / 8, &mut frames).unwrap() == Reading::Stopped {
            passes += 1;
        }
        assert_eq!(frames.len(), 1000);
        assert_eq!(passes, message.len() * 1000 / (READ_CHUNK / 8), "{passes}");
    }
}
