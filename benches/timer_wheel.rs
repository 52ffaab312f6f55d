//! The idle-timeout wheel at 100,000 users.
//!
//! Two operations matter: a *touch* (a user was active, so it is scheduled
//! at its new deadline: one insert) and a *tick* (time moves one slot: the
//! entries due come out). With a 600-slot wheel and deadlines spread evenly,
//! each tick hands out 1/600 of the users, which is the steady state of a
//! 60 s timeout at 10 ticks/s.

use std::hint::black_box;

use chatd::timer_wheel::TimerWheel;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const USERS: u64 = 100_000;
const SLOTS: u64 = 600;

/// A wheel holding every user, deadlines spread over one turn.
fn full_wheel() -> TimerWheel<u32> {
    let mut w = TimerWheel::new(SLOTS as usize);
    for u in 0..USERS {
        w.insert(u % SLOTS, u as u32);
    }
    w
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer_wheel");
    group.throughput(Throughput::Elements(1));
    group.bench_function("touch_100k", |b| {
        let mut w = full_wheel();
        let mut u: u64 = 0;
        b.iter(|| {
            // Re-arm at a deadline one turn out, as activity does.
            w.insert(black_box(SLOTS + u % SLOTS), u as u32);
            u += 1;
        });
    });
    group.bench_function("tick_100k_1_in_600_due", |b| {
        b.iter_batched_ref(
            || {
                (
                    full_wheel(),
                    Vec::with_capacity((USERS / SLOTS + 1) as usize),
                )
            },
            |(w, due)| {
                due.clear();
                w.advance(black_box(0), due);
                black_box(due.len())
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("tick_and_rearm_100k", |b| {
        let mut w = full_wheel();
        let mut due = Vec::with_capacity((USERS / SLOTS + 1) as usize);
        let mut now: u64 = 0;
        b.iter(|| {
            due.clear();
            w.advance(now, &mut due);
            for &u in &due {
                w.insert(now + SLOTS, u);
            }
            now += 1;
            black_box(due.len())
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
