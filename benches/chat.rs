//! The chat state's own cost, with no socket: what a `/join` into a room
//! with 20 lines of history costs the server (the block is built and handed
//! to the outboxes), and what one chat line costs per recipient when its
//! room is one of ten busy rooms rather than the only one. The lines go to a
//! counting `Outbound`, so this is the chat's work alone; copying into real
//! outboxes is `benches/fanout.rs`, and the `write`s are the kernel's.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use chatd::chat::{Chat, Now, Outbound, Security, Settings};
use chatd::command::parse;
use chatd::config::{HISTORY_MAX_BYTES, HISTORY_PER_ROOM};
use chatd::id::ConnId;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Counts what would be queued, so nothing allocates on the sink's side.
#[derive(Default)]
struct Count(u64);

impl Outbound for Count {
    fn line(&mut self, _to: ConnId, line: &str) {
        self.0 += line.len() as u64;
    }
    fn block(&mut self, _to: ConnId, lines: &[String]) {
        self.0 += lines.iter().map(|l| l.len() as u64).sum::<u64>();
    }
}

fn chat() -> Chat {
    Chat::new(
        Settings {
            history_replay: 20,
            max_rooms: 1000,
            history_per_room: HISTORY_PER_ROOM,
            history_max_bytes: HISTORY_MAX_BYTES,
        },
        None,
        Security::default(),
    )
}

fn now() -> Now {
    Now::read()
}

/// `users` users, spread evenly over `rooms` rooms (`r0`, `r1`, …).
fn populated(users: usize, rooms: usize) -> (Chat, Vec<ConnId>) {
    let mut chat = chat();
    let mut sink = Count::default();
    let mut ids = Vec::with_capacity(users);
    for i in 0..users {
        let id = ConnId::new(i, 1);
        let port = 10_000 + (i % 50_000) as u16;
        let addr = SocketAddr::from((
            Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8),
            port,
        ));
        chat.join(id, addr, now(), &mut sink);
        chat.execute(
            id,
            parse(&format!("/join r{}", i % rooms)),
            now(),
            &mut sink,
        );
        ids.push(id);
    }
    chat.flush_presence(&mut sink);
    (chat, ids)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("chat");

    // /join into a room with 20 lines of history, and back: two joins, each
    // replaying a 20-line block.
    let (mut chat, ids) = populated(2, 2);
    let mut sink = Count::default();
    for i in 0..20 {
        chat.execute(ids[0], parse(&format!("line {i} in r0")), now(), &mut sink);
        chat.execute(ids[1], parse(&format!("line {i} in r1")), now(), &mut sink);
    }
    let mover = ids[0];
    let at = now();
    group.throughput(Throughput::Elements(2));
    group.bench_function("join_with_20_lines_of_history", |b| {
        b.iter(|| {
            chat.execute(mover, parse("/join r1"), at, &mut sink);
            chat.execute(mover, parse("/join r0"), at, &mut sink);
            chat.flush_presence(&mut sink);
        })
    });

    // One chat line to a room of 1,000: alone, and as one of ten rooms of
    // 1,000 (10,000 users). Per recipient.
    for (name, rooms) in [
        ("line_to_1000_one_room", 1),
        ("line_to_1000_of_10_rooms", 10),
    ] {
        let (mut chat, ids) = populated(1000 * rooms, rooms);
        let sender = ids[0];
        let mut sink = Count::default();
        let at = now();
        group.throughput(Throughput::Elements(1000));
        group.bench_function(name, |b| {
            b.iter(|| chat.execute(sender, parse(black_box("hello everyone")), at, &mut sink))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
