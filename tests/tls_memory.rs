//! What one TLS connection costs the server in heap, counted by a global
//! allocator that keeps a per-thread tally: the test server's loop runs on
//! its own thread, so the clients' allocations (on the test thread) do not
//! mix in. Prints the figures (`cargo test --test tls_memory -- --nocapture`)
//! and checks them against the budget.

mod common;
mod tls_support;

use chatd::tls::Reloadable;
use rustls::crypto::ring::cipher_suite;
use rustls::version::{TLS12, TLS13};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use tls_support::*;

/// Counts live heap bytes and blocks per thread.
struct Counting;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static LIVE_BLOCKS: Cell<isize> = const { Cell::new(0) };
}

fn tally(bytes: isize, blocks: isize) {
    let _ = LIVE_BYTES.try_with(|live| live.set(live.get() + bytes));
    let _ = LIVE_BLOCKS.try_with(|live| live.set(live.get() + blocks));
}

// SAFETY: every call is forwarded to `System` unchanged; the tally only
// touches const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            tally(layout.size() as isize, 1);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            tally(layout.size() as isize, 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) };
        tally(-(layout.size() as isize), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's arguments.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            tally(new_size as isize - layout.size() as isize, 0);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn probe() -> (isize, isize) {
    (LIVE_BYTES.with(Cell::get), LIVE_BLOCKS.with(Cell::get))
}

/// Connections per measurement: enough to average out noise, few enough
/// for a debug build on 2 shared cores.
const CONNS: usize = 24;

/// The heap an idle TLS connection may hold (measured: 3,519 bytes with
/// TLS 1.3, rustls 0.23.46): the server's target is 8 KiB of RSS per idle
/// TLS connection, the connection's own state takes about 540 bytes, and
/// this leaves room for the allocator's overhead and rustls's next release.
const IDLE_HEAP_BUDGET: isize = 4 * 1024;

/// Heap per connection (bytes, blocks) on the server after `CONNS` clients
/// finished the handshake with `version` (and `suite`, if given) and echoed
/// one line each.
fn idle_cost(
    version: &'static SupportedProtocolVersion,
    suite: Option<SupportedCipherSuite>,
) -> (isize, isize) {
    let dir = TempDir::new("mem");
    let files = TestCert::new().write_to(&dir);
    let tls = Reloadable::load(files).expect("load");
    let server = TestServer::start_probed(tls, Mode::Echo, Some(probe));
    let config = client_config_with(version, suite);
    // One connection first, so one-time allocations are in the baseline.
    let mut warm = connect_with(server.addr, config.clone());
    send(&mut warm, b"warm\n");
    expect_bytes(&mut warm, b"warm\n");
    let (bytes_before, blocks_before) = server.heap();
    let mut clients = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let mut client = connect_with(server.addr, config.clone());
        send(&mut client, b"hello\n");
        expect_bytes(&mut client, b"hello\n");
        clients.push(client);
    }
    let (bytes_after, blocks_after) = server.heap();
    (
        (bytes_after - bytes_before) / CONNS as isize,
        (blocks_after - blocks_before) / CONNS as isize,
    )
}

/// Heap per connection that sent `first_flight` (or nothing) and stopped:
/// what handshakes in progress hold during their 10 s.
fn pending_cost(first_flight: Option<&[u8]>) -> (isize, isize) {
    let dir = TempDir::new("mem");
    let files = TestCert::new().write_to(&dir);
    let tls = Reloadable::load(files).expect("load");
    let server = TestServer::start_probed(tls, Mode::Echo, Some(probe));
    let warm = connect(server.addr, &TLS13);
    let (bytes_before, blocks_before) = server.heap();
    let mut socks = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let mut sock = tcp(server.addr);
        if let Some(flight) = first_flight {
            sock.write_all(flight).expect("hello");
            // The server's answer: its flight arrived, so it processed ours.
            let mut head = [0u8; 5];
            std::io::Read::read_exact(&mut sock, &mut head).expect("server flight");
        }
        socks.push(sock);
    }
    // Every connection was accepted before counting (the warm one's report
    // went by in the first `heap`).
    let mut accepted = 0;
    while accepted < CONNS {
        if matches!(server.next(), Report::Accepted { .. }) {
            accepted += 1;
        }
    }
    let (bytes_after, blocks_after) = server.heap();
    drop(warm);
    (
        (bytes_after - bytes_before) / CONNS as isize,
        (blocks_after - blocks_before) / CONNS as isize,
    )
}

#[test]
fn heap_per_idle_connection() {
    // AES-128-GCM and CHACHA20-POLY1305 cost the same as AES-256-GCM: ring
    // keeps every AEAD key in one enum sized for the largest.
    let cases: [(
        &str,
        &'static SupportedProtocolVersion,
        Option<SupportedCipherSuite>,
    ); 2] = [
        ("TLS 1.3, client's choice (AES-256-GCM)", &TLS13, None),
        (
            "TLS 1.2, ECDHE-ECDSA-CHACHA20-POLY1305",
            &TLS12,
            Some(cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
        ),
    ];
    for (name, version, suite) in cases {
        let (bytes, blocks) = idle_cost(version, suite);
        println!(
            "idle after handshake, {name}: {bytes} heap bytes in {blocks} blocks per connection"
        );
        assert!(
            bytes <= IDLE_HEAP_BUDGET,
            "{name}: {bytes} bytes per idle connection"
        );
    }
    let (bytes, blocks) = pending_cost(None);
    println!("accepted, nothing received: {bytes} heap bytes in {blocks} blocks per connection");
    let hello = client_hello(&TLS13);
    let (bytes, blocks) = pending_cost(Some(&hello));
    println!(
        "ClientHello answered, waiting for the client's Finished: {bytes} heap bytes in {blocks} blocks per connection"
    );
}
