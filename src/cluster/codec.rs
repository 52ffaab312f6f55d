//! RESP2 on byte buffers: commands out, frames in.
//!
//! The `redis-protocol` crate does the encoding and parsing; this module
//! only decides what goes in and out of the buffers. A command is always an
//! array of bulk strings (the only form Redis accepts from clients), encoded
//! straight into the connection's output. Input accumulates in one buffer
//! and every complete frame is taken out of it after a batch of reads, so a
//! frame split across reads costs one parse per batch, not one per read.
//!
//! RESP2, not RESP3: the subscriber connection then speaks the classic
//! pub/sub protocol, in which a subscribed connection cannot run other
//! commands — hence the link's two connections.

use super::down::LinkDown;
use super::tuning::{INPUT_KEEP, INPUT_LIMIT};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, OwnedFrame};
use std::io::{self, Read};

/// The encoding of `args` as a command (an array of bulk strings).
pub fn command_frame<'a>(args: &[&'a [u8]]) -> Vec<BorrowedFrame<'a>> {
    args.iter()
        .map(|arg| BorrowedFrame::BulkString(arg))
        .collect()
}

/// Bytes `args` take once encoded.
pub fn encoded_len(parts: &[BorrowedFrame<'_>]) -> usize {
    BorrowedFrame::Array(parts).encode_len(false)
}

/// Encodes `parts` (from [`command_frame`]) into `out`, which must be
/// exactly [`encoded_len`] bytes long.
pub fn encode_into(out: &mut [u8], parts: &[BorrowedFrame<'_>]) -> Result<(), LinkDown> {
    match encode_borrowed(out, &BorrowedFrame::Array(parts), false) {
        Ok(written) if written == out.len() => Ok(()),
        Ok(written) => Err(LinkDown::Protocol(format!(
            "encoded {written} bytes of {}",
            out.len()
        ))),
        Err(error) => Err(LinkDown::Protocol(format!("encoding failed: {error}"))),
    }
}

/// The bytes received from one connection that do not make a whole frame
/// yet.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Received bytes; complete frames are removed from the front.
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// One `read` of at most `chunk` bytes from `src` onto the end of the
    /// buffer; returns what `read` returned (0 is end of stream).
    pub fn read_from(&mut self, src: &mut impl Read, chunk: usize) -> io::Result<usize> {
        let start = self.buf.len();
        self.buf.resize(start + chunk, 0);
        let result = src.read(&mut self.buf[start..]);
        self.buf.truncate(start + *result.as_ref().unwrap_or(&0));
        result
    }

    /// Appends bytes received some other way.
    #[cfg(test)]
    fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Moves every complete frame in the buffer to `frames`, in order.
    /// Fails on bytes that are not RESP2, and when what remains (the start
    /// of a frame) is over [`INPUT_LIMIT`].
    pub fn decode_into(&mut self, frames: &mut Vec<OwnedFrame>) -> Result<(), LinkDown> {
        let mut used = 0;
        while used < self.buf.len() {
            match decode(&self.buf[used..]) {
                Ok(Some((frame, len))) => {
                    frames.push(frame);
                    used += len;
                }
                Ok(None) => break,
                Err(error) => return Err(LinkDown::Protocol(error.to_string())),
            }
        }
        self.buf.drain(..used);
        if self.buf.len() > INPUT_LIMIT {
            return Err(LinkDown::InputTooLarge);
        }
        if self.buf.is_empty() && self.buf.capacity() > INPUT_KEEP {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Bytes held that are not a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(args: &[&[u8]]) -> Vec<u8> {
        let parts = command_frame(args);
        let mut out = vec![0; encoded_len(&parts)];
        encode_into(&mut out, &parts).unwrap();
        out
    }

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        assert_eq!(
            encode(&[b"SET", b"key", b"a\r\nb"]),
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$4\r\na\r\nb\r\n"
        );
        assert_eq!(encode(&[b"PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(encode(&[b"ECHO", b""]), b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n");
    }

    /// Every kind of reply Redis sends, pipelined.
    const REPLIES: &[u8] = b"+OK\r\n$5\r\nhello\r\n:42\r\n$-1\r\n-ERR wrong type\r\n\
        *3\r\n$7\r\nmessage\r\n$4\r\nroom\r\n$2\r\nhi\r\n*0\r\n";

    fn expected() -> Vec<OwnedFrame> {
        use OwnedFrame::*;
        vec![
            SimpleString(b"OK".to_vec()),
            BulkString(b"hello".to_vec()),
            Integer(42),
            Null,
            Error("ERR wrong type".to_owned()),
            Array(vec![
                BulkString(b"message".to_vec()),
                BulkString(b"room".to_vec()),
                BulkString(b"hi".to_vec()),
            ]),
            Array(vec![]),
        ]
    }

    #[test]
    fn frames_come_out_whole_and_in_order_however_the_bytes_are_split() {
        for split in 0..=REPLIES.len() {
            let mut decoder = Decoder::new();
            let mut frames = Vec::new();
            decoder.extend(&REPLIES[..split]);
            decoder.decode_into(&mut frames).unwrap();
            decoder.extend(&REPLIES[split..]);
            decoder.decode_into(&mut frames).unwrap();
            assert_eq!(frames, expected(), "split at {split}");
            assert_eq!(decoder.pending(), 0);
        }
        let mut decoder = Decoder::new();
        let mut frames = Vec::new();
        for byte in REPLIES {
            decoder.extend(&[*byte]);
            decoder.decode_into(&mut frames).unwrap();
        }
        assert_eq!(frames, expected(), "byte by byte");
    }

    #[test]
    fn bytes_that_are_not_resp2_are_a_protocol_error() {
        let mut decoder = Decoder::new();
        decoder.extend(b"+OK\r\nHTTP/1.1 400 Bad Request\r\n");
        let mut frames = Vec::new();
        let result = decoder.decode_into(&mut frames);
        assert!(matches!(result, Err(LinkDown::Protocol(_))), "{result:?}");
    }

    #[test]
    fn an_incomplete_reply_is_held_only_up_to_the_limit() {
        let mut decoder = Decoder::new();
        let mut frames = Vec::new();
        let header = format!("${}\r\n", INPUT_LIMIT + 10);
        decoder.extend(header.as_bytes());
        decoder.extend(&vec![b'x'; INPUT_LIMIT - header.len()]);
        decoder.decode_into(&mut frames).unwrap();
        decoder.extend(b"xx");
        assert!(matches!(
            decoder.decode_into(&mut frames),
            Err(LinkDown::InputTooLarge)
        ));
        assert!(frames.is_empty());
    }

    #[test]
    fn a_drained_decoder_gives_back_a_large_buffer() {
        let mut decoder = Decoder::new();
        let payload = vec![b'y'; 4 * INPUT_KEEP];
        decoder.extend(format!("${}\r\n", payload.len()).as_bytes());
        decoder.extend(&payload);
        decoder.extend(b"\r\n");
        let mut frames = Vec::new();
        decoder.decode_into(&mut frames).unwrap();
        assert_eq!(frames, vec![OwnedFrame::BulkString(payload)]);
        assert_eq!(decoder.heap_bytes(), 0);
    }
}
