//! The per-address table's real heap, a million addresses at once.
//!
//! `IpLimits::heap_bytes` computes the footprint from capacities; this test
//! counts every byte the allocator hands out instead, so it also sees the
//! moments when a growing table or queue holds its old and new storage at
//! once, which is the true peak. It is its own test binary so that the
//! global allocator counts nothing but this test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chatd::iplimit::{Exempt, IpLimitConfig, IpLimits};

/// The system allocator, counting the bytes live now and at most.
struct Counting;

/// Bytes allocated and not yet freed.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most `LIVE` has been since the last [`reset_peak`].
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments;
// the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            // Counted as old + new: a moving realloc holds both at once.
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn reset_peak() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MILLION: usize = 1_000_000;

/// Connects, closes and forgets a million addresses, returning the peak
/// heap above the starting point and the heap with all of them held.
fn run(addr: impl Fn(u32) -> IpAddr) -> (usize, usize) {
    let t0 = Instant::now();
    let base = reset_peak();
    let mut limits = IpLimits::new(IpLimitConfig::default(), Exempt::none(), t0);
    for i in 0..MILLION as u32 {
        assert!(limits.admit(addr(i), t0).is_ok());
    }
    let held = LIVE.load(Ordering::Relaxed) - base;
    // Closed at once with a bucket one token short: all wait in the queue.
    for i in 0..MILLION as u32 {
        limits.release(addr(i), t0);
    }
    assert_eq!(limits.len(), MILLION);
    limits.expire(t0 + Duration::from_secs(61));
    assert!(limits.is_empty());
    let peak = PEAK.load(Ordering::Relaxed) - base;
    let left = LIVE.load(Ordering::Relaxed).saturating_sub(base);
    assert!(
        left < 4096,
        "{left} bytes left after everything was forgotten"
    );
    drop(limits);
    (peak, held)
}

/// A million different IPv6 /64s (what an attacker with a /32 could use;
/// IPv4 keys are the same size, so they cost the same).
#[test]
fn a_million_addresses_peak_heap() {
    let started = Instant::now();
    // 2001:db8:XXXX:XXXX::1, a different /64 each.
    let v6 = |i: u32| {
        let mut octets = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        octets[4..8].copy_from_slice(&i.to_be_bytes());
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    let (peak, held) = run(v6);
    println!(
        "a million addresses held in {held} B ({} B each), peak {peak} B ({} B each, \
         {:.1} MiB), in {:?}",
        held / MILLION,
        peak / MILLION,
        peak as f64 / (1024.0 * 1024.0),
        started.elapsed()
    );
    assert!(held / MILLION <= 57, "{held}");
    assert!(peak / MILLION <= 100, "{peak}");
}
