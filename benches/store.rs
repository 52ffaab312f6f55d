//! The `--db` store on the event loop's thread: what a tick's flush and a
//! room's history read cost.
//!
//! - `flush_2000`: one tick's write of 2,000 waiting lines (20,000 lines/s,
//!   far above what a chat room produces) in one transaction.
//! - `recent_20`, `recent_1000`: the last 20 lines (a replay on entry) and
//!   the last 1,000 (a room's first entry after a restart, `/history 1000`)
//!   of one room in a database of 1,000,000 lines over 100 rooms, written
//!   interleaved as a busy server would.
//!
//! The database lives in the temp directory and is removed at the end.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chatd::store::Store;
use criterion::{Criterion, criterion_group, criterion_main};

const ROOMS: usize = 100;
const LINES: usize = 1_000_000;
const TICK_LINES: usize = 2_000;

/// A path in the temp directory, removed with its `-wal`/`-shm` on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(tag: &str) -> TempDb {
        let name = format!("chatd-bench-{}-{tag}.db", std::process::id());
        let db = TempDb(std::env::temp_dir().join(name));
        db.remove();
        db
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

fn open(db: &TempDb) -> Store {
    Store::open(db.path()).unwrap_or_else(|e| panic!("{e}"))
}

/// A chat line of a typical length (about 50 bytes).
fn line(i: usize) -> String {
    format!("user{}: line {i} of an ordinary conversation", i % 997)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    let db = TempDb::new("flush");
    let mut store = open(&db);
    let mut n = 0;
    group.bench_function("flush_2000", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                for _ in 0..TICK_LINES {
                    store.queue_line(&format!("room{}", n % ROOMS), n as i64, &line(n));
                    n += 1;
                }
                let started = Instant::now();
                let written = store.flush();
                spent += started.elapsed();
                assert_eq!(written, TICK_LINES);
            }
            spent
        });
    });
    drop(store);
    drop(db);

    let db = TempDb::new("recent");
    let mut store = open(&db);
    let started = Instant::now();
    for i in 0..LINES {
        store.queue_line(&format!("room{}", i % ROOMS), i as i64, &line(i));
        if store.pending_lines() == 10_000 {
            store.flush();
        }
    }
    while store.pending_lines() > 0 {
        store.flush();
    }
    eprintln!(
        "store: {LINES} lines over {ROOMS} rooms written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for n in [20, 1000] {
        let mut room = 0;
        group.bench_function(format!("recent_{n}"), |b| {
            b.iter(|| {
                room = (room + 1) % ROOMS;
                let lines = store
                    .recent(&format!("room{room}"), n)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(lines.len(), n);
                black_box(lines)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
