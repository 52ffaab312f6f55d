//! How fast `LineFramer` turns a socket's byte stream into lines, in MB/s.
//!
//! Real reads split lines anywhere, so the stream is fed in random chunk
//! sizes (fixed seed: every run measures the same chunking) over a mix of
//! chat-sized lines, `\r\n` telnet lines and the odd long one. The figure
//! says how much of one core framing costs at a given inbound byte rate.

use std::hint::black_box;

use chatd::framing::{Frame, LineFramer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A tiny deterministic PRNG (xorshift64*), so no `rand` dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// About 1 MiB of chat traffic: mostly 20–120 byte lines, some `\r\n`,
/// a few 1–3 KiB pastes.
fn stream(rng: &mut XorShift) -> Vec<u8> {
    let words = [
        "hello",
        "anyone",
        "here",
        "the",
        "build",
        "is",
        "green",
        "again",
        "lunch",
        "?",
        "ok",
        "/who",
        "/me",
        "waves",
        "thanks",
        "deploying",
        "now",
        "lol",
    ];
    let mut out = Vec::with_capacity(1 << 20);
    while out.len() < 1 << 20 {
        let len = if rng.below(50) == 0 {
            1000 + rng.below(2000)
        } else {
            20 + rng.below(100)
        } as usize;
        let start = out.len();
        while out.len() - start < len {
            out.extend_from_slice(words[rng.below(words.len() as u64) as usize].as_bytes());
            out.push(b' ');
        }
        if rng.below(4) == 0 {
            out.push(b'\r');
        }
        out.push(b'\n');
    }
    out
}

/// Chunk boundaries like a socket's: 1 byte up to 16 KiB.
fn chunking(rng: &mut XorShift, total: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut left = total;
    while left > 0 {
        let n = match rng.below(4) {
            0 => 1 + rng.below(64),
            1 => 64 + rng.below(1024),
            _ => 1024 + rng.below(15 * 1024),
        } as usize;
        let n = n.min(left);
        sizes.push(n);
        left -= n;
    }
    sizes
}

fn frame_all(data: &[u8], sizes: &[usize]) -> usize {
    let mut framer = LineFramer::new(4096);
    let mut lines = 0;
    let mut at = 0;
    for &n in sizes {
        framer.push(&data[at..at + n]);
        at += n;
        while let Some(frame) = framer.next_frame() {
            match frame {
                Frame::Line(l) => {
                    black_box(l);
                    lines += 1;
                }
                Frame::TooLong => lines += 1,
            }
        }
    }
    if framer.finish().is_some() {
        lines += 1;
    }
    lines
}

fn bench(c: &mut Criterion) {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let data = stream(&mut rng);
    let random = chunking(&mut rng, data.len());
    let whole = vec![data.len()];
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("random_chunks", |b| {
        b.iter(|| frame_all(black_box(&data), &random))
    });
    group.bench_function("one_chunk", |b| {
        b.iter(|| frame_all(black_box(&data), &whole))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
