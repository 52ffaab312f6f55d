//! Per-address limits and bans (PROTOCOL.md, "Per-address limits" and the
//! `/ban` commands): what one address may cost the server, and who is not
//! let in at all.
//!
//! `--max-clients` protects the server, not its users: one host opening
//! connections in a loop can fill every place. So connections are also
//! counted per address ([`IpLimits`]: at most `--ip-max-connections` open at
//! once, at most `--ip-connect-rate` new ones a minute), operators can ban an
//! address ([`Bans`]), and both go by [`AddrKey`], which groups an IPv6 host
//! with its whole /64 (a single customer usually gets a /64 and can pick any
//! address in it, so counting single IPv6 addresses would limit nothing).
//! Addresses in the `--ip-exempt` list ([`Exempt`]; loopback by default, so
//! load tests run unlimited) bypass all of it.
//!
//! The tables here are filled by clients, so each is bounded and never
//! scanned per tick: an address is remembered only while it has a connection
//! open or a bucket not yet full again ([`IpLimits::expire`] forgets the
//! others in O(addresses due)), and bans are capped at [`MAX_BANS`] and
//! expire lazily. Nothing here reads a clock or a socket: every time is
//! passed in, so the tests can run a day in a microsecond.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Default `--ip-max-connections`: connections open at once per address.
pub const DEFAULT_IP_MAX_CONNECTIONS: u32 = 16;

/// Default `--ip-connect-rate`: new connections per address per minute.
pub const DEFAULT_IP_CONNECT_RATE: u32 = 60;

/// The period `--ip-connect-rate` counts over: a bucket holds the rate and
/// refills completely in this time.
pub const RATE_PERIOD: Duration = Duration::from_secs(60);

/// Default `--ip-exempt`: loopback, IPv4 and IPv6.
pub const DEFAULT_EXEMPT: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// The `--ip-exempt` value that exempts no one.
pub const EXEMPT_NONE: &str = "none";

/// The most bans held at once; past it [`Bans::ban`] refuses. A ban costs
/// a 24-byte table slot and its control byte, 29 to 57 bytes with the hash
/// table's load factor (7/8 before it grows, 7/16 after): a full list is
/// 2^17 buckets, 3.3 MB.
pub const MAX_BANS: usize = 100_000;

/// The prefix length that groups IPv6 addresses into one [`AddrKey`].
pub const IPV6_PREFIX_LEN: u8 = 64;

/// How PROTOCOL.md groups addresses: an IPv4 address as it is, an IPv6
/// address by its /64, and an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
/// what a dual-stack listener reports for an IPv4 client) as that IPv4
/// address. Ordered IPv4 first, then numerically.
///
/// Nine bytes, no heap: byte 0 is the family (4 or 6), then the IPv4 address and four zero bytes, or the /64
/// prefix, big-endian. Bytes rather than an enum of `u32`/`u64` so that the
/// key aligns to 1 and packs into table slots without padding, and hashes
/// in a single `write`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddrKey([u8; 9]);

/// Byte 0 of an IPv4 [`AddrKey`].
const FAMILY_V4: u8 = 4;

/// Byte 0 of an IPv6 /64 [`AddrKey`].
const FAMILY_V6: u8 = 6;

impl fmt::Debug for AddrKey {
    /// `AddrKey(203.0.113.7)`, `AddrKey(2001:db8::/64)`: the bytes would
    /// tell a reader of a log or a failed test nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddrKey({self})")
    }
}

impl std::hash::Hash for AddrKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

impl AddrKey {
    /// The key of a peer address.
    pub fn from_ip(ip: IpAddr) -> AddrKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let mut key = [FAMILY_V4, 0, 0, 0, 0, 0, 0, 0, 0];
                key[1..5].copy_from_slice(&v4.octets());
                AddrKey(key)
            }
            IpAddr::V6(v6) => AddrKey::from_v6_prefix(v6),
        }
    }

    /// The key of the /64 `v6` is in.
    fn from_v6_prefix(v6: Ipv6Addr) -> AddrKey {
        let mut key = [FAMILY_V6, 0, 0, 0, 0, 0, 0, 0, 0];
        key[1..].copy_from_slice(&v6.octets()[..8]);
        AddrKey(key)
    }

    /// The key of a `/ban` argument: `Some` only if `text` is an IP address
    /// (`203.0.113.7`, `2001:db8::1`); anything else is a user's name.
    pub fn parse_ip(text: &str) -> Option<AddrKey> {
        text.parse::<IpAddr>().ok().map(AddrKey::from_ip)
    }

    /// The key of an `/unban` argument: an IP address as for
    /// [`parse_ip`](Self::parse_ip), or an IPv6 /64 written as `/bans`
    /// writes it (`2001:db8:0:1::/64`; bits after the 64th are ignored).
    pub fn parse(text: &str) -> Option<AddrKey> {
        if let Some(key) = AddrKey::parse_ip(text) {
            return Some(key);
        }
        let prefix = text.strip_suffix("/64")?.parse::<Ipv6Addr>().ok()?;
        Some(AddrKey::from_v6_prefix(prefix))
    }

    /// Whether `ip` falls under this key (is this address, or in this /64).
    pub fn covers(&self, ip: IpAddr) -> bool {
        AddrKey::from_ip(ip) == *self
    }
}

impl fmt::Display for AddrKey {
    /// `203.0.113.7` for IPv4, `2001:db8:0:1::/64` for an IPv6 /64.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [family, bytes @ ..] = self.0;
        if family == FAMILY_V4 {
            let [a, b, c, d, ..] = bytes;
            write!(f, "{}", Ipv4Addr::new(a, b, c, d))
        } else {
            let mut octets = [0; 16];
            octets[..8].copy_from_slice(&bytes);
            write!(f, "{}/{IPV6_PREFIX_LEN}", Ipv6Addr::from(octets))
        }
    }
}

/// An address block, `127.0.0.0/8` or `::1/128`, for `--ip-exempt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address, host bits cleared.
    network: IpAddr,
    /// The prefix length: at most 32 for IPv4, 128 for IPv6.
    len: u8,
}

impl Cidr {
    /// Parses `ADDRESS/LEN` or a bare address (a block of one). Host bits
    /// set in ADDRESS are ignored (`10.1.2.3/8` is `10.0.0.0/8`). A block
    /// of IPv4-mapped IPv6 addresses (`::ffff:10.0.0.0/104`) is taken as
    /// the IPv4 block it maps, since IPv4 clients are matched as IPv4.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let bad = || format!("invalid address block {text:?} (expected e.g. 10.0.0.0/8, ::1/128)");
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            // Digits only: `u8::from_str` would also take `+8`.
            Some(len) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => {
                match len.parse::<u8>() {
                    Ok(len) if len <= max => len,
                    _ => return Err(bad()),
                }
            }
            Some(_) => return Err(bad()),
        };
        Ok(Cidr::new(network, len))
    }

    /// The block of `len` leading bits of `network`; `len` is capped at the
    /// address's width.
    pub fn new(network: IpAddr, len: u8) -> Cidr {
        if let IpAddr::V6(v6) = network
            && len >= 96
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return Cidr::new(IpAddr::V4(v4), len - 96);
        }
        match network {
            IpAddr::V4(v4) => {
                let len = len.min(32);
                let bits = u32::from(v4) & mask_u32(len);
                Cidr {
                    network: IpAddr::V4(Ipv4Addr::from(bits)),
                    len,
                }
            }
            IpAddr::V6(v6) => {
                let len = len.min(128);
                let bits = u128::from(v6) & mask_u128(len);
                Cidr {
                    network: IpAddr::V6(Ipv6Addr::from(bits)),
                    len,
                }
            }
        }
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask_u32(self.len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask_u128(self.len) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    /// `NETWORK/LEN`, e.g. `127.0.0.0/8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.len)
    }
}

/// The `len` leading bits of an IPv4 address.
fn mask_u32(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

/// The `len` leading bits of an IPv6 address.
fn mask_u128(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

/// The `--ip-exempt` list: addresses that per-address limits and bans never
/// apply to. A handful of blocks, checked in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exempt {
    /// The blocks; empty exempts no one.
    blocks: Vec<Cidr>,
}

impl Default for Exempt {
    /// Loopback ([`DEFAULT_EXEMPT`]), what chatd uses without the flag.
    fn default() -> Self {
        Exempt {
            // Both parse (a unit test says so).
            blocks: DEFAULT_EXEMPT
                .iter()
                .filter_map(|block| Cidr::parse(block).ok())
                .collect(),
        }
    }
}

impl Exempt {
    /// Nobody is exempt (`--ip-exempt none`).
    pub fn none() -> Exempt {
        Exempt { blocks: Vec::new() }
    }

    /// The list from every `--ip-exempt` value given, in order. No value
    /// at all is the default (loopback); any value replaces the default;
    /// `none` adds nothing, so `--ip-exempt none` alone exempts no one.
    pub fn from_flags<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Exempt, String> {
        let mut given = false;
        let mut blocks = Vec::new();
        for value in values {
            given = true;
            if value != EXEMPT_NONE {
                blocks.push(Cidr::parse(value)?);
            }
        }
        if given {
            Ok(Exempt { blocks })
        } else {
            Ok(Exempt::default())
        }
    }

    /// Whether `ip` is exempt.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(ip))
    }

    /// The blocks, for logging at start.
    pub fn blocks(&self) -> &[Cidr] {
        &self.blocks
    }
}

/// `--ip-max-connections` and `--ip-connect-rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpLimitConfig {
    /// Connections open at once per address; 0 = no limit.
    pub max_connections: u32,
    /// New connections per address per [`RATE_PERIOD`] (a bucket holding
    /// this many, refilled at this rate); 0 = no limit.
    pub connect_rate: u32,
}

impl Default for IpLimitConfig {
    fn default() -> Self {
        IpLimitConfig {
            max_connections: DEFAULT_IP_MAX_CONNECTIONS,
            connect_rate: DEFAULT_IP_CONNECT_RATE,
        }
    }
}

/// Why [`IpLimits::admit`] refused a connection. Both get the same line
/// (`Too many connections from your address, try again later`); the reason
/// is for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The address has `--ip-max-connections` open already.
    TooManyOpen,
    /// The address used up its `--ip-connect-rate` bucket.
    TooFast,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::TooManyOpen => "too many connections open from the address",
            Refused::TooFast => "too many new connections from the address",
        })
    }
}

/// A `u64` stored as two `u32` halves, so that a table entry aligns to 4
/// and a table slot (key and entry) is 24 bytes rather than 32.
#[derive(Debug, Clone, Copy, Default)]
struct SplitU64([u32; 2]);

impl SplitU64 {
    fn new(value: u64) -> Self {
        SplitU64([(value >> 32) as u32, value as u32])
    }

    fn get(self) -> u64 {
        (u64::from(self.0[0]) << 32) | u64::from(self.0[1])
    }
}

/// Set in [`AddrState::open`] while the key waits in the forget queue.
const QUEUED: u32 = 1 << 31;

/// What [`IpLimits`] remembers about one address. 12 bytes.
#[derive(Debug, Clone, Copy, Default)]
struct AddrState {
    /// When the bucket is full again, in nanoseconds since
    /// [`IpLimits::epoch`]; a time not after now means full. This is the
    /// whole bucket: it holds `rate - (full_at - now) / interval` tokens.
    full_at: SplitU64,
    /// Open connections in the low 31 bits (there are never 2^31: each is
    /// a file descriptor), and [`QUEUED`].
    open: u32,
}

impl AddrState {
    fn open(&self) -> u32 {
        self.open & !QUEUED
    }

    fn set_open(&mut self, open: u32) {
        self.open = (self.open & QUEUED) | open.min(!QUEUED);
    }

    fn queued(&self) -> bool {
        self.open & QUEUED != 0
    }

    fn set_queued(&mut self, queued: bool) {
        self.open = if queued {
            self.open | QUEUED
        } else {
            self.open & !QUEUED
        };
    }
}

/// Connections per address: `--ip-max-connections` open at once and
/// `--ip-connect-rate` new ones per minute, for every address that is not
/// [`Exempt`]. The server calls [`admit`](Self::admit) for every accepted
/// connection (before anything else: a refused one gets its line and is
/// closed), [`release`](Self::release) when an admitted one closes, and
/// [`expire`](Self::expire) once per tick.
///
/// The bucket is kept as the single time at which it will be full again
/// (the "generic cell rate algorithm"), so an address costs one table slot
/// of 24 bytes: a 9-byte [`AddrKey`], the 8-byte time and a 4-byte count.
/// With hashbrown's control byte and its load factor (7/8 just before it
/// grows, 7/16 just after) that is 29 to 57 bytes per address, plus a
/// 16-byte forget-queue entry (in a deque of twice as many at most) while
/// the address has no connection open and its bucket is refilling.
/// Measured with a counting allocator (`tests/iplimit_memory.rs`): a
/// million addresses hold 52.4 MB (52 bytes each, the table having just
/// doubled to 2^21 buckets), and the peak, while it doubles, is 78.6 MB
/// (78 bytes each). Once they are gone the memory is given back.
#[derive(Debug)]
pub struct IpLimits {
    /// The limits.
    config: IpLimitConfig,
    /// Who bypasses them.
    exempt: Exempt,
    /// Times are kept as nanoseconds since this instant (the one given to
    /// [`new`](Self::new)), in 8 bytes rather than an `Instant`'s 16.
    epoch: Instant,
    /// Nanoseconds for one token to come back: [`RATE_PERIOD`] / rate.
    interval: u64,
    /// Every address with a connection open or a bucket not full.
    table: HashMap<AddrKey, AddrState>,
    /// Addresses with no connection open whose bucket may be full by the
    /// given second since `epoch`, in order of that second. An address is
    /// in it at most once (its [`QUEUED`] bit).
    forget: VecDeque<(u32, AddrKey)>,
}

/// Below this capacity the table and queue are not shrunk.
const MIN_SHRINK_CAPACITY: usize = 1024;

impl IpLimits {
    /// Limits for every non-exempt address; `now` becomes the epoch of the
    /// internal clock (any earlier time passed later counts as `now`).
    pub fn new(config: IpLimitConfig, exempt: Exempt, now: Instant) -> IpLimits {
        let interval = match config.connect_rate {
            0 => 0,
            rate => (RATE_PERIOD.as_nanos() / u128::from(rate)) as u64,
        };
        IpLimits {
            config,
            exempt,
            epoch: now,
            interval,
            table: HashMap::new(),
            forget: VecDeque::new(),
        }
    }

    /// The limits.
    pub fn config(&self) -> IpLimitConfig {
        self.config
    }

    /// Whether limits and bans never apply to `ip`.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.contains(ip)
    }

    /// Addresses remembered now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Connections counted open for `ip`'s address (0 for an exempt one).
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.table
            .get(&AddrKey::from_ip(ip))
            .map_or(0, AddrState::open)
    }

    /// Heap bytes held by the table and the queue, from their capacities
    /// (hashbrown: one slot and one control byte per bucket, plus 16
    /// control bytes). A lower bound when the table holds deleted slots.
    pub fn heap_bytes(&self) -> usize {
        let capacity = self.table.capacity();
        let buckets = match capacity {
            0 => 0,
            1..8 => capacity + 1,
            _ => capacity / 7 * 8,
        };
        let slot = std::mem::size_of::<(AddrKey, AddrState)>();
        let table = if buckets == 0 {
            0
        } else {
            buckets * (slot + 1) + 16
        };
        table + self.forget.capacity() * std::mem::size_of::<(u32, AddrKey)>()
    }

    /// A new connection from `ip`: counted if both limits allow it,
    /// otherwise refused and counted toward neither. Exempt addresses are
    /// always admitted and never counted.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        if self.untracked(ip) {
            return Ok(());
        }
        let now = self.nanos(now);
        // One lookup; a vacant entry is only filled if the connection is
        // admitted, so a refused newcomer leaves no trace.
        let entry = self.table.entry(AddrKey::from_ip(ip));
        let state = match &entry {
            MapEntry::Occupied(held) => *held.get(),
            MapEntry::Vacant(_) => AddrState::default(),
        };
        let open = state.open();
        if self.config.max_connections != 0 && open >= self.config.max_connections {
            return Err(Refused::TooManyOpen);
        }
        let full_at = if self.config.connect_rate == 0 {
            0
        } else {
            // At least one token: the bucket is at most rate - 1 tokens
            // short of full.
            let short = state.full_at.get().saturating_sub(now);
            let tolerance = self.interval * u64::from(self.config.connect_rate - 1);
            if short > tolerance {
                return Err(Refused::TooFast);
            }
            state.full_at.get().max(now).saturating_add(self.interval)
        };
        let state = entry.or_default();
        state.full_at = SplitU64::new(full_at);
        state.set_open(open + 1);
        Ok(())
    }

    /// An admitted connection from `ip` closed. Calls for addresses that
    /// were not admitted (exempt ones, or more releases than admissions)
    /// change nothing.
    pub fn release(&mut self, ip: IpAddr, now: Instant) {
        if self.untracked(ip) {
            return;
        }
        let key = AddrKey::from_ip(ip);
        let now = self.nanos(now);
        let MapEntry::Occupied(mut entry) = self.table.entry(key) else {
            return;
        };
        let state = entry.get_mut();
        let open = state.open().saturating_sub(1);
        state.set_open(open);
        if open > 0 || state.queued() {
            // A queued address is forgotten by the queue alone, so that it
            // is never in the queue twice.
            return;
        }
        if state.full_at.get() <= now {
            entry.remove();
        } else {
            state.set_queued(true);
            self.forget.push_back((forget_second(now), key));
        }
    }

    /// Forgets the addresses with no connection open whose bucket is full:
    /// call once per tick. Costs O(addresses due), not O(addresses).
    pub fn expire(&mut self, now: Instant) {
        let now = self.nanos(now);
        while let Some(&(second, key)) = self.forget.front() {
            if u64::from(second) * 1_000_000_000 > now {
                break;
            }
            self.forget.pop_front();
            let MapEntry::Occupied(mut entry) = self.table.entry(key) else {
                continue;
            };
            let state = entry.get_mut();
            if state.open() > 0 {
                // In use again; its next release queues it again.
                state.set_queued(false);
            } else if state.full_at.get() <= now {
                entry.remove();
            } else {
                // Reused and closed again since it was queued: try later.
                // (Its bucket is full within one period of now, so the
                // queue stays in order.)
                self.forget.push_back((forget_second(now), key));
            }
        }
        shrink_map(&mut self.table);
        if self.forget.capacity() > MIN_SHRINK_CAPACITY
            && self.forget.len() < self.forget.capacity() / 4
        {
            self.forget.shrink_to(self.forget.len() * 2);
        }
    }

    /// Whether `ip` escapes the table: exempt, or no limit at all.
    fn untracked(&self, ip: IpAddr) -> bool {
        (self.config.max_connections == 0 && self.config.connect_rate == 0)
            || self.exempt.contains(ip)
    }

    /// `now` in nanoseconds since the epoch (584 years fit).
    fn nanos(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX)
    }
}

/// The whole second (since the epoch) by which a bucket last refilled at
/// `now` nanoseconds is certainly full: one [`RATE_PERIOD`] on, rounded up.
fn forget_second(now: u64) -> u32 {
    let due = now.saturating_add(RATE_PERIOD.as_nanos() as u64);
    u32::try_from(due.div_ceil(1_000_000_000)).unwrap_or(u32::MAX)
}

/// Gives memory back after a storm: when a map is down to a quarter of its
/// capacity, to half of it. Amortised O(1) per removal (each shrink moves
/// `len` entries after at least `len` removals).
fn shrink_map<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > MIN_SHRINK_CAPACITY && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

/// Unix seconds at which a ban of `minutes` from `now_unix` ends: `None`
/// (until unbanned) for 0, as `/ban NAME|ADDRESS 0` asks. Saturates, and
/// a ban that would outlast `i64` seconds is until unbanned too.
pub fn ban_expiry(minutes: u64, now_unix: i64) -> Option<i64> {
    if minutes == 0 {
        return None;
    }
    let seconds = i64::try_from(minutes)
        .unwrap_or(i64::MAX)
        .saturating_mul(60);
    Some(now_unix.saturating_add(seconds)).filter(|&until| until != FOREVER)
}

/// The stored expiry of a ban until unbanned.
const FOREVER: i64 = i64::MAX;

/// [`Bans::ban`] refused: the list holds [`MAX_BANS`] bans already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanListFull;

impl fmt::Display for BanListFull {
    /// The sentence an operator can be told.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Too many bans (max {MAX_BANS})")
    }
}

/// The ban list: which addresses ([`AddrKey`]s, so an IPv6 ban covers its
/// /64) are refused at connect, and until when. Expired bans go lazily,
/// when looked at, never by a scan per tick. [`Exempt`] addresses are not
/// this list's business: the server checks [`IpLimits::is_exempt`] first,
/// both before banning and before [`is_banned`](Self::is_banned).
///
/// Each ban is one 24-byte slot (key and expiry) plus a control byte; at
/// most [`MAX_BANS`].
#[derive(Debug, Clone, Default)]
pub struct Bans {
    /// Key → unix second the ban ends ([`FOREVER`] for until unbanned).
    until: HashMap<AddrKey, i64>,
}

impl Bans {
    /// No bans.
    pub fn new() -> Bans {
        Bans::default()
    }

    /// Bans held, expired ones not yet looked at included.
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// Whether no ban is held.
    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    /// Bans `key` until the unix second `until` (`None`: until unbanned),
    /// replacing any ban it had. A new key when the list is full first
    /// drops the expired bans (a scan, but only at the limit and only for
    /// an operator's command); if none had expired, refuses.
    pub fn ban(
        &mut self,
        key: AddrKey,
        until: Option<i64>,
        now_unix: i64,
    ) -> Result<(), BanListFull> {
        if self.until.len() >= MAX_BANS && !self.until.contains_key(&key) {
            self.until.retain(|_, &mut until| until > now_unix);
            if self.until.len() >= MAX_BANS {
                return Err(BanListFull);
            }
        }
        self.until.insert(key, until.unwrap_or(FOREVER));
        Ok(())
    }

    /// Lifts the ban on `key`; `false` if it had none (or one that had
    /// expired: `ADDRESS is not banned`).
    pub fn unban(&mut self, key: AddrKey, now_unix: i64) -> bool {
        let was_banned = self
            .until
            .remove(&key)
            .is_some_and(|until| until > now_unix);
        shrink_map(&mut self.until);
        was_banned
    }

    /// Whether a connection from `ip` is refused now. A ban found expired
    /// is dropped.
    pub fn is_banned(&mut self, ip: IpAddr, now_unix: i64) -> bool {
        let MapEntry::Occupied(entry) = self.until.entry(AddrKey::from_ip(ip)) else {
            return false;
        };
        if *entry.get() > now_unix {
            return true;
        }
        entry.remove();
        shrink_map(&mut self.until);
        false
    }

    /// The bans in force, as `/bans` lists them: soonest expiry first
    /// (ties by address), the ones until unbanned (`None`) last.
    pub fn list(&self, now_unix: i64) -> Vec<(AddrKey, Option<i64>)> {
        let mut bans: Vec<(AddrKey, i64)> = self
            .until
            .iter()
            .filter(|&(_, &until)| until > now_unix)
            .map(|(&key, &until)| (key, until))
            .collect();
        bans.sort_unstable_by_key(|&(key, until)| (until, key));
        bans.into_iter()
            .map(|(key, until)| (key, Some(until).filter(|&u| u != FOREVER)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    // --- AddrKey ---------------------------------------------------------

    #[test]
    fn ipv4_keys_are_the_address() {
        let key = AddrKey::from_ip(ip("203.0.113.7"));
        assert_eq!(key.to_string(), "203.0.113.7");
        assert_ne!(key, AddrKey::from_ip(ip("203.0.113.8")));
    }

    #[test]
    fn ipv6_keys_are_the_slash_64() {
        let a = AddrKey::from_ip(ip("2001:db8:0:1::1"));
        let b = AddrKey::from_ip(ip("2001:db8:0:1:ffff:ffff:ffff:ffff"));
        let c = AddrKey::from_ip(ip("2001:db8:0:2::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:0:1::/64");
        assert_eq!(AddrKey::from_ip(ip("::1")).to_string(), "::/64");
        assert_eq!(
            AddrKey::from_ip(ip("2001:db8:aa:bb:1:2:3:4")).to_string(),
            "2001:db8:aa:bb::/64"
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address() {
        let mapped = AddrKey::from_ip(ip("::ffff:203.0.113.7"));
        assert_eq!(mapped, AddrKey::from_ip(ip("203.0.113.7")));
        assert_eq!(mapped.to_string(), "203.0.113.7");
        // IPv4-compatible (deprecated) addresses are plain IPv6.
        assert_eq!(AddrKey::from_ip(ip("::203.0.113.7")).to_string(), "::/64");
    }

    #[test]
    fn ban_arguments_are_addresses_only_when_they_parse() {
        assert_eq!(
            AddrKey::parse_ip("2001:db8::1").map(|k| k.to_string()),
            Some("2001:db8::/64".to_string())
        );
        assert!(AddrKey::parse_ip("203.0.113.7").is_some());
        for name in [
            "bob",
            "2001:db8::/64",
            "127.0.0.1:5000",
            "[::1]:80",
            "1.2.3",
            "",
        ] {
            assert_eq!(AddrKey::parse_ip(name), None, "{name}");
        }
    }

    #[test]
    fn unban_arguments_also_take_the_listed_form() {
        let key = AddrKey::from_ip(ip("2001:db8:0:1::99"));
        assert_eq!(AddrKey::parse("2001:db8:0:1::/64"), Some(key));
        assert_eq!(AddrKey::parse("2001:db8:0:1::5"), Some(key));
        assert_eq!(AddrKey::parse("2001:db8:0:1::5/64"), Some(key));
        assert_eq!(AddrKey::parse(&key.to_string()), Some(key));
        let v4 = AddrKey::from_ip(ip("198.51.100.1"));
        assert_eq!(AddrKey::parse(&v4.to_string()), Some(v4));
        for bad in ["2001:db8::/48", "198.51.100.1/64", "bob", "::/", "/64"] {
            assert_eq!(AddrKey::parse(bad), None, "{bad}");
        }
        assert_eq!(format!("{key:?}"), "AddrKey(2001:db8:0:1::/64)");
        assert!(key.covers(ip("2001:db8:0:1::7")));
        assert!(!key.covers(ip("2001:db8:0:2::7")));
    }

    #[test]
    fn keys_pack_into_nine_bytes_and_slots_into_24() {
        assert_eq!(std::mem::size_of::<AddrKey>(), 9);
        assert_eq!(std::mem::size_of::<AddrState>(), 12);
        assert_eq!(std::mem::size_of::<(AddrKey, AddrState)>(), 24);
        assert_eq!(std::mem::size_of::<(u32, AddrKey)>(), 16);
        assert_eq!(std::mem::size_of::<(AddrKey, i64)>(), 24);
    }

    // --- Cidr and Exempt -------------------------------------------------

    #[test]
    fn cidrs_parse_and_contain() {
        let lo = Cidr::parse("127.0.0.0/8").unwrap_or_else(|e| panic!("{e}"));
        assert!(lo.contains(ip("127.1.2.3")));
        assert!(lo.contains(ip("::ffff:127.0.0.1")));
        assert!(!lo.contains(ip("128.0.0.1")));
        assert!(!lo.contains(ip("::1")));
        let one = Cidr::parse("::1/128").unwrap_or_else(|e| panic!("{e}"));
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
        assert!(!one.contains(ip("127.0.0.1")));
        let bare = Cidr::parse("192.0.2.1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bare.to_string(), "192.0.2.1/32");
        assert!(bare.contains(ip("192.0.2.1")) && !bare.contains(ip("192.0.2.2")));
        let all = Cidr::parse("0.0.0.0/0").unwrap_or_else(|e| panic!("{e}"));
        assert!(all.contains(ip("255.255.255.255")) && !all.contains(ip("::")));
        let net6 = Cidr::parse("2001:db8::/32").unwrap_or_else(|e| panic!("{e}"));
        assert!(net6.contains(ip("2001:db8:ffff::1")) && !net6.contains(ip("2001:db9::1")));
    }

    #[test]
    fn cidr_host_bits_are_cleared_and_mapped_blocks_become_ipv4() {
        assert_eq!(
            Cidr::parse("10.1.2.3/8").map(|c| c.to_string()),
            Ok("10.0.0.0/8".to_string())
        );
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        assert!(mapped.contains(ip("10.9.9.9")));
    }

    #[test]
    fn bad_cidrs_are_refused() {
        for bad in [
            "",
            "none",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0/8",
            "10.0.0.0/8/8",
            "fe80::1%eth0",
            "10.0.0.0/+8",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_exempt_flag_replaces_the_default() {
        let default = Exempt::from_flags([]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(default, Exempt::default());
        assert_eq!(default.blocks().len(), DEFAULT_EXEMPT.len());
        assert!(default.contains(ip("127.0.0.1")) && default.contains(ip("::1")));
        assert!(!default.contains(ip("10.0.0.1")));
        let none = Exempt::from_flags(["none"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(none, Exempt::none());
        assert!(!none.contains(ip("127.0.0.1")));
        let ten = Exempt::from_flags(["10.0.0.0/8"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(ten.contains(ip("10.0.0.1")) && !ten.contains(ip("127.0.0.1")));
        let both = Exempt::from_flags(["10.0.0.0/8", "::1"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(both.blocks().len(), 2);
        assert!(Exempt::from_flags(["10.0.0.0/8", "bogus"]).is_err());
    }

    // --- IpLimits --------------------------------------------------------

    #[test]
    fn open_connections_are_capped_per_address() {
        let t0 = Instant::now();
        let config = IpLimitConfig {
            max_connections: 3,
            connect_rate: 0,
        };
        let mut limits = IpLimits::new(config, Exempt::none(), t0);
        let a = ip("198.51.100.1");
        for _ in 0..3 {
            assert_eq!(limits.admit(a, t0), Ok(()));
        }
        assert_eq!(limits.admit(a, t0), Err(Refused::TooManyOpen));
        assert_eq!(limits.admit(a, t0), Err(Refused::TooManyOpen));
        assert_eq!(limits.open(a), 3, "refused ones are not counted");
        assert_eq!(limits.admit(ip("198.51.100.2"), t0), Ok(()));
        limits.release(a, t0);
        assert_eq!(limits.admit(a, t0), Ok(()));
        for _ in 0..3 {
            limits.release(a, t0);
        }
        assert_eq!(limits.open(a), 0);
        assert_eq!(limits.len(), 1, "no rate: forgotten at the last close");
    }

    #[test]
    fn ipv6_hosts_of_one_slash_64_share_a_limit() {
        let t0 = Instant::now();
        let config = IpLimitConfig {
            max_connections: 2,
            connect_rate: 0,
        };
        let mut limits = IpLimits::new(config, Exempt::none(), t0);
        assert_eq!(limits.admit(ip("2001:db8::1"), t0), Ok(()));
        assert_eq!(limits.admit(ip("2001:db8::2"), t0), Ok(()));
        assert_eq!(
            limits.admit(ip("2001:db8::3"), t0),
            Err(Refused::TooManyOpen)
        );
        assert_eq!(limits.admit(ip("2001:db8:0:1::3"), t0), Ok(()));
        // IPv4 through a dual-stack socket counts as IPv4.
        assert_eq!(limits.admit(ip("::ffff:192.0.2.1"), t0), Ok(()));
        assert_eq!(limits.admit(ip("192.0.2.1"), t0), Ok(()));
        assert_eq!(limits.admit(ip("192.0.2.1"), t0), Err(Refused::TooManyOpen));
    }

    #[test]
    fn the_connect_rate_is_a_bucket_of_n_refilled_per_minute() {
        let t0 = Instant::now();
        let config = IpLimitConfig {
            max_connections: 0,
            connect_rate: 60,
        };
        let mut limits = IpLimits::new(config, Exempt::none(), t0);
        let a = ip("198.51.100.1");
        for i in 0..60 {
            assert_eq!(limits.admit(a, t0), Ok(()), "connection {i}");
            limits.release(a, t0);
        }
        assert_eq!(limits.admit(a, t0), Err(Refused::TooFast));
        // One token per second comes back.
        let almost = t0 + Duration::from_millis(999);
        assert_eq!(limits.admit(a, almost), Err(Refused::TooFast));
        assert_eq!(limits.admit(a, t0 + secs(1)), Ok(()));
        assert_eq!(limits.admit(a, t0 + secs(1)), Err(Refused::TooFast));
        // Ten seconds later, ten.
        let later = t0 + secs(11);
        assert_eq!(
            (0..20).filter(|_| limits.admit(a, later).is_ok()).count(),
            10
        );
        // Another address has its own bucket.
        assert_eq!(limits.admit(ip("198.51.100.2"), t0), Ok(()));
        // A full minute of rest refills it completely, never beyond.
        let rested = t0 + secs(3600);
        assert_eq!(
            (0..100).filter(|_| limits.admit(a, rested).is_ok()).count(),
            60
        );
    }

    #[test]
    fn a_refused_connection_counts_toward_neither_limit() {
        let t0 = Instant::now();
        let config = IpLimitConfig {
            max_connections: 2,
            connect_rate: 3,
        };
        let mut limits = IpLimits::new(config, Exempt::none(), t0);
        let a = ip("198.51.100.1");
        assert_eq!(limits.admit(a, t0), Ok(()));
        assert_eq!(limits.admit(a, t0), Ok(()));
        // Refused for open connections: no token taken.
        for _ in 0..10 {
            assert_eq!(limits.admit(a, t0), Err(Refused::TooManyOpen));
        }
        limits.release(a, t0);
        assert_eq!(
            limits.admit(a, t0),
            Ok(()),
            "the third token was still there"
        );
        limits.release(a, t0);
        limits.release(a, t0);
        // Refused for rate: not opened.
        assert_eq!(limits.admit(a, t0), Err(Refused::TooFast));
        assert_eq!(limits.open(a), 0);
        // A refused newcomer leaves no trace in the table.
        let mut tight = IpLimits::new(
            IpLimitConfig {
                max_connections: 0,
                connect_rate: 1,
            },
            Exempt::none(),
            t0,
        );
        let b = ip("198.51.100.9");
        assert_eq!(tight.admit(b, t0), Ok(()));
        tight.release(b, t0);
        tight.expire(t0 + secs(61));
        assert!(tight.is_empty());
    }

    #[test]
    fn exempt_addresses_bypass_everything_and_are_not_remembered() {
        let t0 = Instant::now();
        let config = IpLimitConfig {
            max_connections: 1,
            connect_rate: 1,
        };
        let mut limits = IpLimits::new(config, Exempt::default(), t0);
        for _ in 0..1000 {
            assert_eq!(limits.admit(ip("127.0.0.1"), t0), Ok(()));
            assert_eq!(limits.admit(ip("::1"), t0), Ok(()));
            assert_eq!(limits.admit(ip("::ffff:127.0.0.2"), t0), Ok(()));
        }
        assert!(limits.is_exempt(ip("127.9.9.9")));
        assert!(limits.is_empty());
        limits.release(ip("127.0.0.1"), t0);
        assert!(limits.is_empty());
        assert_eq!(limits.admit(ip("10.0.0.1"), t0), Ok(()));
        assert_eq!(limits.admit(ip("10.0.0.1"), t0), Err(Refused::TooManyOpen));
    }

    #[test]
    fn no_limits_means_no_table() {
        let t0 = Instant::now();
        let config = IpLimitConfig {
            max_connections: 0,
            connect_rate: 0,
        };
        let mut limits = IpLimits::new(config, Exempt::none(), t0);
        for _ in 0..10_000 {
            assert_eq!(limits.admit(ip("10.0.0.1"), t0), Ok(()));
        }
        assert!(limits.is_empty());
    }

    #[test]
    fn stray_releases_change_nothing() {
        let t0 = Instant::now();
        let mut limits = IpLimits::new(IpLimitConfig::default(), Exempt::none(), t0);
        let a = ip("198.51.100.1");
        limits.release(a, t0);
        assert!(limits.is_empty());
        assert_eq!(limits.admit(a, t0), Ok(()));
        limits.release(a, t0);
        limits.release(a, t0);
        assert_eq!(limits.open(a), 0);
        for _ in 0..16 {
            assert_eq!(limits.admit(a, t0), Ok(()));
        }
        assert_eq!(limits.admit(a, t0), Err(Refused::TooManyOpen));
    }

    #[test]
    fn an_address_is_forgotten_once_closed_and_full_not_before() {
        let t0 = Instant::now();
        let mut limits = IpLimits::new(IpLimitConfig::default(), Exempt::none(), t0);
        let a = ip("198.51.100.1");
        assert_eq!(limits.admit(a, t0), Ok(()));
        limits.expire(t0 + secs(120));
        assert_eq!(limits.len(), 1, "open: kept");
        limits.release(a, t0 + secs(120));
        assert_eq!(
            limits.len(),
            0,
            "closed with a full bucket: forgotten at once"
        );

        assert_eq!(limits.admit(a, t0 + secs(200)), Ok(()));
        limits.release(a, t0 + secs(200));
        assert_eq!(limits.len(), 1, "bucket one short: kept");
        limits.expire(t0 + secs(200));
        assert_eq!(limits.len(), 1);
        limits.expire(t0 + secs(261));
        assert_eq!(limits.len(), 0);
        assert!(limits.forget.is_empty());
    }

    #[test]
    fn an_address_reused_while_queued_is_queued_once() {
        let t0 = Instant::now();
        let mut limits = IpLimits::new(IpLimitConfig::default(), Exempt::none(), t0);
        let a = ip("198.51.100.1");
        // Two connections a second, one token a second back: the bucket
        // drains by one a second, to 100 s from full at 49 s.
        for t in 0..50 {
            let now = t0 + secs(t);
            for _ in 0..2 {
                assert_eq!(limits.admit(a, now), Ok(()));
                limits.release(a, now);
            }
            assert!(limits.forget.len() <= 1, "at {t}: {:?}", limits.forget);
            limits.expire(now);
        }
        // Queued at 0 s for 60 s; not full by then, so looked at again.
        limits.expire(t0 + secs(60));
        assert_eq!(limits.len(), 1);
        assert_eq!(limits.forget.len(), 1);
        limits.expire(t0 + secs(121));
        assert!(limits.is_empty() && limits.forget.is_empty());
        // Still open when its turn comes: dropped from the queue, queued
        // again by its release.
        assert_eq!(limits.admit(a, t0 + secs(200)), Ok(()));
        limits.release(a, t0 + secs(200));
        assert_eq!(limits.admit(a, t0 + secs(201)), Ok(()));
        limits.expire(t0 + secs(300));
        assert_eq!((limits.len(), limits.forget.len()), (1, 0));
        limits.release(a, t0 + secs(301));
        assert_eq!(
            (limits.len(), limits.forget.len()),
            (0, 0),
            "bucket full by then"
        );
    }

    #[test]
    fn times_before_the_epoch_count_as_the_epoch() {
        let t0 = Instant::now();
        let later = t0 + secs(5);
        let mut limits = IpLimits::new(IpLimitConfig::default(), Exempt::none(), later);
        assert_eq!(limits.admit(ip("10.0.0.1"), t0), Ok(()));
        limits.release(ip("10.0.0.1"), t0);
        limits.expire(t0);
        assert_eq!(limits.len(), 1);
    }

    #[test]
    fn a_million_addresses() {
        let t0 = Instant::now();
        let started = Instant::now();
        let mut limits = IpLimits::new(IpLimitConfig::default(), Exempt::none(), t0);
        let million: u32 = 1_000_000;
        let addr = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        let mut peak = 0;
        for i in 0..million {
            assert_eq!(limits.admit(addr(i), t0), Ok(()));
            if i & 0xffff == 0 {
                peak = peak.max(limits.heap_bytes());
            }
        }
        peak = peak.max(limits.heap_bytes());
        let table = limits.heap_bytes();
        // Released at once: each bucket is one token short, so each
        // address stays, queued to be forgotten a minute later.
        for i in 0..million {
            limits.release(addr(i), t0);
            if i & 0xffff == 0 {
                peak = peak.max(limits.heap_bytes());
            }
        }
        peak = peak.max(limits.heap_bytes());
        assert_eq!(limits.len(), million as usize);
        assert_eq!(limits.forget.len(), million as usize);
        limits.expire(t0 + secs(30));
        assert_eq!(limits.len(), million as usize, "buckets not full yet");
        limits.expire(t0 + secs(62));
        assert!(limits.is_empty() && limits.forget.is_empty());
        let after = limits.heap_bytes();
        println!(
            "a million addresses: table {table} B ({} B/address), peak with queue {peak} B \
             ({} B/address), after expiry {after} B, in {:?}",
            table / million as usize,
            peak / million as usize,
            started.elapsed()
        );
        assert!(table / (million as usize) <= 57, "{table}");
        assert!(peak / (million as usize) <= 80, "{peak}");
        assert!(after < 64 * 1024, "{after}");
    }

    // --- Bans ------------------------------------------------------------

    fn key(text: &str) -> AddrKey {
        AddrKey::from_ip(ip(text))
    }

    #[test]
    fn bans_expire_and_cover_the_slash_64() {
        let mut bans = Bans::new();
        let now = 1_700_000_000;
        assert_eq!(bans.ban(key("203.0.113.7"), Some(now + 3600), now), Ok(()));
        assert_eq!(bans.ban(key("2001:db8:0:1::1"), None, now), Ok(()));
        assert!(bans.is_banned(ip("203.0.113.7"), now));
        assert!(bans.is_banned(ip("::ffff:203.0.113.7"), now));
        assert!(!bans.is_banned(ip("203.0.113.8"), now));
        assert!(bans.is_banned(ip("2001:db8:0:1::abcd"), now));
        assert!(!bans.is_banned(ip("2001:db8:0:2::1"), now));
        assert!(bans.is_banned(ip("203.0.113.7"), now + 3599));
        assert!(!bans.is_banned(ip("203.0.113.7"), now + 3600));
        assert_eq!(bans.len(), 1, "the expired ban was dropped when looked at");
        assert!(bans.is_banned(ip("2001:db8:0:1::1"), i64::MAX - 1));
    }

    #[test]
    fn unban_says_whether_there_was_a_ban_in_force() {
        let mut bans = Bans::new();
        let now = 1_000;
        assert!(!bans.unban(key("203.0.113.7"), now));
        assert_eq!(bans.ban(key("203.0.113.7"), Some(now + 60), now), Ok(()));
        assert_eq!(bans.ban(key("203.0.113.8"), Some(now + 60), now), Ok(()));
        assert!(bans.unban(key("203.0.113.7"), now));
        assert!(!bans.unban(key("203.0.113.7"), now));
        assert!(!bans.is_banned(ip("203.0.113.7"), now));
        assert!(!bans.unban(key("203.0.113.8"), now + 60), "expired");
        assert!(bans.is_empty());
    }

    #[test]
    fn a_new_ban_replaces_the_old_one() {
        let mut bans = Bans::new();
        assert_eq!(bans.ban(key("10.0.0.1"), None, 0), Ok(()));
        assert_eq!(bans.ban(key("10.0.0.1"), Some(100), 0), Ok(()));
        assert_eq!(bans.list(0), vec![(key("10.0.0.1"), Some(100))]);
        assert!(!bans.is_banned(ip("10.0.0.1"), 100));
    }

    #[test]
    fn bans_are_listed_soonest_first_unlimited_last() {
        let mut bans = Bans::new();
        let now = 5_000;
        let entries = [
            ("10.0.0.4", None),
            ("10.0.0.3", Some(now + 300)),
            ("2001:db8::1", Some(now + 60)),
            ("10.0.0.2", None),
            ("10.0.0.1", Some(now + 300)),
            ("10.0.0.9", Some(now - 1)),
        ];
        for (addr, until) in entries {
            assert_eq!(bans.ban(key(addr), until, now - 10), Ok(()));
        }
        let listed: Vec<(String, Option<i64>)> = bans
            .list(now)
            .into_iter()
            .map(|(k, until)| (k.to_string(), until))
            .collect();
        let want = [
            ("2001:db8::/64", Some(now + 60)),
            ("10.0.0.1", Some(now + 300)),
            ("10.0.0.3", Some(now + 300)),
            ("10.0.0.2", None),
            ("10.0.0.4", None),
        ];
        let want: Vec<(String, Option<i64>)> =
            want.iter().map(|&(a, u)| (a.to_string(), u)).collect();
        assert_eq!(listed, want);
    }

    #[test]
    fn ban_minutes_become_an_expiry() {
        assert_eq!(ban_expiry(0, 1_000), None);
        assert_eq!(ban_expiry(60, 1_000), Some(1_000 + 3_600));
        assert_eq!(
            ban_expiry(u64::MAX, 1_000),
            None,
            "beyond i64: until unbanned"
        );
    }

    #[test]
    fn the_ban_list_is_bounded() {
        let mut bans = Bans::new();
        let now = 0;
        let nth = |i: u32| AddrKey::from_ip(IpAddr::V4(Ipv4Addr::from(i)));
        for i in 0..MAX_BANS as u32 {
            let until = if i % 2 == 0 { Some(10) } else { None };
            assert_eq!(bans.ban(nth(i), until, now), Ok(()));
        }
        let extra = nth(MAX_BANS as u32);
        assert_eq!(bans.ban(extra, None, now), Err(BanListFull));
        assert_eq!(BanListFull.to_string(), "Too many bans (max 100000)");
        // Re-banning a held key is no new ban.
        assert_eq!(bans.ban(nth(1), Some(99), now), Ok(()));
        // Once half have expired, there is room again.
        assert_eq!(bans.ban(extra, None, 10), Ok(()));
        assert_eq!(bans.len(), MAX_BANS / 2 + 1);
    }

    proptest! {
        /// Whatever the order of connects, closes and ticks, the counts
        /// match a model, the limits hold, and once everything is closed
        /// and a period has passed the table is empty.
        #[test]
        fn the_table_matches_a_model_and_empties(
            ops in prop::collection::vec((0u8..3, 0usize..4, 0u64..3_000), 1..200),
        ) {
            let t0 = Instant::now();
            let config = IpLimitConfig { max_connections: 3, connect_rate: 5 };
            let mut limits = IpLimits::new(config, Exempt::none(), t0);
            let addrs = ["10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2"].map(ip);
            let mut open = [0u32; 4];
            let mut now = t0;
            for (op, who, step_ms) in ops {
                now += Duration::from_millis(step_ms * 10);
                let a = addrs[who];
                // The two IPv6 hosts share a /64.
                let group = |i: usize| if i >= 2 { 2 } else { i };
                let open_in = |open: &[u32; 4], g: usize| {
                    (0..4).filter(|&i| group(i) == g).map(|i| open[i]).sum::<u32>()
                };
                match op {
                    0 => match limits.admit(a, now) {
                        Ok(()) => {
                            open[who] += 1;
                            prop_assert!(open_in(&open, group(who)) <= 3);
                        }
                        Err(Refused::TooManyOpen) => {
                            prop_assert_eq!(open_in(&open, group(who)), 3);
                        }
                        Err(Refused::TooFast) => {}
                    },
                    1 => if open[who] > 0 {
                        open[who] -= 1;
                        limits.release(a, now);
                    },
                    _ => limits.expire(now),
                }
                prop_assert_eq!(limits.open(a), open_in(&open, group(who)));
                prop_assert!(limits.forget.len() <= limits.len());
            }
            for (i, &a) in addrs.iter().enumerate() {
                for _ in 0..open[i] {
                    limits.release(a, now);
                }
            }
            limits.expire(now + RATE_PERIOD + secs(1));
            prop_assert!(limits.is_empty());
            prop_assert!(limits.forget.is_empty());
        }
    }
}
