//! Fan-out of one chat line to 10,000 recipients: the server's hot path.
//!
//! Two designs are compared, each including the drain that follows (so the
//! allocation of fresh buffers is part of the price):
//!
//! - `outbox_copy`: chatd's design, each recipient's [`Outbox`] gets its own
//!   copy of the bytes, later written with one `write` per recipient;
//! - `rc_shared`: one `Rc<[u8]>` per message, each recipient's
//!   `VecDeque` holds a clone of the pointer (the usual alternative);
//! - `rc_shared_release_when_empty`: the same, but a drained queue gives
//!   its memory back like an `Outbox` does, to separate the cost of the copy
//!   from the cost of allocating a fresh buffer per burst.
//!
//! Throughput is per recipient, so criterion reports ns per delivery.

use std::collections::VecDeque;
use std::hint::black_box;
use std::io::{self, Write};
use std::rc::Rc;

use chatd::outbox::Outbox;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const RECIPIENTS: usize = 10_000;
const LIMIT: usize = 256 * 1024;
/// `NAME: TEXT` as the server sends it, about 60 bytes.
const LINE: &[u8] = b"127.0.0.1:50412: is the build green again? deploying at 5";

/// A sink that takes everything, like a socket with room (`io::sink` with
/// the bytes counted so the write is not optimised away).
struct Count(usize);

impl Write for Count {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0 += data.len();
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_10k");
    group.throughput(Throughput::Elements(RECIPIENTS as u64));

    group.bench_function("outbox_copy", |b| {
        let mut boxes: Vec<Outbox> = (0..RECIPIENTS).map(|_| Outbox::new()).collect();
        let mut sink = io::sink();
        b.iter(|| {
            for o in &mut boxes {
                if o.push_line(black_box(LINE), LIMIT).is_err() {
                    o.discard();
                }
            }
            for o in &mut boxes {
                let _ = o.flush_to(&mut sink);
            }
        });
    });

    group.bench_function("outbox_copy_counted_sink", |b| {
        let mut boxes: Vec<Outbox> = (0..RECIPIENTS).map(|_| Outbox::new()).collect();
        let mut sink = Count(0);
        b.iter(|| {
            for o in &mut boxes {
                let _ = o.push_line(black_box(LINE), LIMIT);
            }
            for o in &mut boxes {
                let _ = o.flush_to(&mut sink);
            }
            black_box(sink.0)
        });
    });

    group.bench_function("rc_shared", |b| rc_fanout(b, false));
    // Same, but each queue hands its memory back once drained, as an
    // Outbox did before it kept buffers while busy: isolates the allocation share.
    group.bench_function("rc_shared_release_when_empty", |b| rc_fanout(b, true));

    group.finish();
}

/// One `Rc<[u8]>` per message, a pointer clone per recipient, then every
/// queue drained; with `release`, each drained queue frees its memory.
fn rc_fanout(b: &mut criterion::Bencher<'_>, release: bool) {
    let mut queues: Vec<VecDeque<Rc<[u8]>>> = (0..RECIPIENTS).map(|_| VecDeque::new()).collect();
    let mut sink = Count(0);
    b.iter(|| {
        let mut msg = Vec::with_capacity(LINE.len() + 1);
        msg.extend_from_slice(black_box(LINE));
        msg.push(b'\n');
        let msg: Rc<[u8]> = Rc::from(msg);
        for q in &mut queues {
            q.push_back(Rc::clone(&msg));
        }
        for q in &mut queues {
            while let Some(m) = q.pop_front() {
                let _ = sink.write(&m);
            }
            if release {
                *q = VecDeque::new();
            }
        }
        black_box(sink.0)
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
