//! The per-line work before fan-out: cleaning raw bytes and parsing the
//! command, over a realistic mix (mostly chat, some commands, some bytes
//! that need cleaning). Measured per line, because every inbound line pays
//! it exactly once, however many users it then reaches.

use std::hint::black_box;

use chatd::clean::clean_line;
use chatd::command::parse;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Raw client lines, as they come off the framer.
fn raw_lines() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        b"hello everyone".to_vec(),
        b"is the build green again?".to_vec(),
        b"deploying v2.3.1 to staging now, shout if anything looks off".to_vec(),
        b"/who".to_vec(),
        b"who".to_vec(),
        b"/nick alice_2".to_vec(),
        b"rename|bob".to_vec(),
        b"/msg carol lunch at noon?".to_vec(),
        b"/me waves".to_vec(),
        b"/quit see you tomorrow".to_vec(),
        b"//etc/passwd is not a command".to_vec(),
        b"/bogus thing".to_vec(),
        b"trailing blanks   \t ".to_vec(),
        b"colour \x1b[31mred\x1b[0m escape".to_vec(),
        b"caf\xc3\xa9 na\xefve bytes \xff\xfe".to_vec(),
        b"".to_vec(),
    ];
    v.push("x".repeat(400).into_bytes());
    v
}

fn bench(c: &mut Criterion) {
    let raw = raw_lines();
    let cleaned: Vec<String> = raw.iter().map(|l| clean_line(l)).collect();
    let mut group = c.benchmark_group("command");
    group.throughput(Throughput::Elements(raw.len() as u64));
    group.bench_function("clean_line", |b| {
        b.iter(|| {
            for l in &raw {
                black_box(clean_line(black_box(l)));
            }
        })
    });
    group.bench_function("parse", |b| {
        b.iter(|| {
            for l in &cleaned {
                black_box(parse(black_box(l)));
            }
        })
    });
    group.bench_function("clean_then_parse", |b| {
        b.iter(|| {
            for l in &raw {
                let text = clean_line(black_box(l));
                black_box(parse(&text));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
