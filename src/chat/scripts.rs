//! The Redis side of a cluster: key names and the Lua scripts that change
//! the registry and publish the matching event in one atomic step.
//!
//! Redis runs a script to completion before anything else, so "claim the
//! name, record the user, take a sequence number, publish the event" is one
//! step that no other server can come between. That is what keeps names
//! unique across servers and the ordered channel consistent with the
//! registry a newly linked server reads.
//!
//! Every key starts with `--cluster-name` (`P` below), so clusters can
//! share one Redis:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:events` | channel | every event, in one order for all servers |
//! | `P:to:S` | channel | events for server `S` only (private messages, kicks, its snapshot) |
//! | `P:names` | hash | name skeleton → owner (`S` US `uid`) |
//! | `P:users:S` | hash | uid → `seq` US `room` US `name` US `addr` US `skeleton` |
//! | `P:servers` | set | servers that registered |
//! | `P:alive:S` | string with a TTL | server `S`'s heartbeat |
//! | `P:seq` | counter | entry and departure sequence numbers |
//! | `P:history:ROOM` | stream | the room's lines (`t` unix, `l` line), capped |
//! | `P:bans` | hash | address or /64 → end (unix seconds, `-` = until unbanned) |
//!
//! Scripts build their keys from the prefix they are given (`ARGV[1]`);
//! that suits one Redis server, which is what `--cluster` names. Every
//! call gives the server's id (`ARGV[2]`) and a deadline in Redis's clock
//! (`ARGV[3]`, milliseconds, 0 = none), which the prelude takes out, so
//! the ARGV below are numbered as if it were not there. A request that
//! Redis reaches after its deadline (it sat in the socket of a Redis that
//! was stopped, while its server gave up and did the thing locally) is
//! refused with -2 by the scripts that change what users see: a line said
//! during an outage stays on its own server, as PROTOCOL.md says.

/// The events channel.
pub fn events_channel(prefix: &str) -> String {
    format!("{prefix}:events")
}

/// Server `server`'s own channel.
pub fn server_channel(prefix: &str, server: &str) -> String {
    format!("{prefix}:to:{server}")
}

/// Shared pieces: separators, and a room's last lines as `h` records.
const PRELUDE: &str = r#"
local P = ARGV[1]
local S = ARGV[2]
local deadline = tonumber(table.remove(ARGV, 3))
local function late()
  if deadline == 0 then return false end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline
end
local US = '\31'
local RS = '\30'
local function hist(msg, room, n)
  if n <= 0 then return end
  local entries = redis.call('XREVRANGE', P .. ':history:' .. room, '+', '-', 'COUNT', n)
  for i = #entries, 1, -1 do
    local f = entries[i][2]
    local t, l = '0', ''
    for j = 1, #f, 2 do
      if f[j] == 't' then t = f[j + 1] elseif f[j] == 'l' then l = f[j + 1] end
    end
    msg[#msg + 1] = 'h' .. US .. t .. US .. l
  end
end
local function split(rec)
  return string.match(rec, '^([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31(.*)$')
end
local function release(server)
  local ukey = P .. ':users:' .. server
  local recs = redis.call('HGETALL', ukey)
  for i = 1, #recs, 2 do
    local _, _, _, _, skel = split(recs[i + 1])
    if skel and redis.call('HGET', P .. ':names', skel) == server .. US .. recs[i] then
      redis.call('HDEL', P .. ':names', skel)
    end
  end
  redis.call('DEL', ukey)
end
"#;

/// A newcomer: claims the first free name of the candidates (name,
/// skeleton pairs from `ARGV[7]` on), records the user in the lobby,
/// publishes `A` with the lobby's last lines. Returns the name, or nil if
/// every candidate is taken.
///
/// ARGV: prefix, server, uid, room, addr, replay, candidates...
pub const ARRIVE: &str = r#"
if late() then return -2 end
local uid, room, addr, replay = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local owner = S .. US .. uid
for i = 7, #ARGV, 2 do
  local name, skel = ARGV[i], ARGV[i + 1]
  if redis.call('HSETNX', P .. ':names', skel, owner) == 1 then
    local seq = redis.call('INCR', P .. ':seq')
    redis.call('HSET', P .. ':users:' .. S, uid,
      seq .. US .. room .. US .. name .. US .. addr .. US .. skel)
    local msg = {'A' .. US .. S .. US .. uid .. US .. seq .. US .. room .. US .. name .. US .. addr}
    hist(msg, room, replay)
    redis.call('PUBLISH', P .. ':events', table.concat(msg, RS))
    return name
  end
end
return false
"#;

/// A rename: takes the new name's skeleton unless another user holds it,
/// lets the old one go, publishes `R`. Returns 1, 0 if taken, -1 if the
/// user is not registered.
///
/// ARGV: prefix, server, uid, new name, new skeleton
pub const RENAME: &str = r#"
if late() then return -2 end
local uid, new, newskel = ARGV[3], ARGV[4], ARGV[5]
local owner = S .. US .. uid
local ukey = P .. ':users:' .. S
local rec = redis.call('HGET', ukey, uid)
if not rec then return -1 end
local seq, room, old, addr, oldskel = split(rec)
local holder = redis.call('HGET', P .. ':names', newskel)
if holder and holder ~= owner then return 0 end
if oldskel ~= newskel and redis.call('HGET', P .. ':names', oldskel) == owner then
  redis.call('HDEL', P .. ':names', oldskel)
end
redis.call('HSET', P .. ':names', newskel, owner)
redis.call('HSET', ukey, uid, seq .. US .. room .. US .. new .. US .. addr .. US .. newskel)
redis.call('PUBLISH', P .. ':events', 'R' .. US .. S .. US .. uid .. US .. old .. US .. new)
return 1
"#;

/// A move to another room: a new entry number, the record updated, `J`
/// published with the new room's last lines. Returns 1, or -1 if the user
/// is not registered.
///
/// ARGV: prefix, server, uid, room, replay
pub const MOVE: &str = r#"
if late() then return -2 end
local uid, to, replay = ARGV[3], ARGV[4], tonumber(ARGV[5])
local ukey = P .. ':users:' .. S
local rec = redis.call('HGET', ukey, uid)
if not rec then return -1 end
local _, from, name, addr, skel = split(rec)
local seq = redis.call('INCR', P .. ':seq')
redis.call('HSET', ukey, uid, seq .. US .. to .. US .. name .. US .. addr .. US .. skel)
local msg = {'J' .. US .. S .. US .. uid .. US .. seq .. US .. from .. US .. to}
hist(msg, to, replay)
redis.call('PUBLISH', P .. ':events', table.concat(msg, RS))
return 1
"#;

/// A departure: the name let go, the record removed, `L` published.
///
/// ARGV: prefix, server, uid, kind [, a [, b]]
pub const LEAVE: &str = r#"
local uid = ARGV[3]
local ukey = P .. ':users:' .. S
local rec = redis.call('HGET', ukey, uid)
if rec then
  local _, _, _, _, skel = split(rec)
  if redis.call('HGET', P .. ':names', skel) == S .. US .. uid then
    redis.call('HDEL', P .. ':names', skel)
  end
  redis.call('HDEL', ukey, uid)
end
local seq = redis.call('INCR', P .. ':seq')
local msg = 'L' .. US .. S .. US .. uid .. US .. seq
for i = 4, #ARGV do msg = msg .. US .. ARGV[i] end
redis.call('PUBLISH', P .. ':events', msg)
return 1
"#;

/// A chat line: appended to the room's stream (capped near `maxlen`) and
/// published as `C`, in the same order.
///
/// ARGV: prefix, server, uid, room, unix, line, maxlen
pub const SAY: &str = r#"
if late() then return -2 end
local uid, room, unix, line = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
redis.call('XADD', P .. ':history:' .. room, 'MAXLEN', '~', ARGV[7], '*', 't', unix, 'l', line)
redis.call('PUBLISH', P .. ':events', 'C' .. US .. S .. US .. uid .. US .. room .. US .. unix .. US .. line)
return 1
"#;

/// A ban: recorded and published as `B`.
///
/// ARGV: prefix, server, key, until, by
pub const BAN: &str = r#"
redis.call('HSET', P .. ':bans', ARGV[3], ARGV[4])
redis.call('PUBLISH', P .. ':events', 'B' .. US .. S .. US .. ARGV[3] .. US .. ARGV[4] .. US .. ARGV[5])
return 1
"#;

/// An unban: removed and published as `U`.
///
/// ARGV: prefix, server, key
pub const UNBAN: &str = r#"
redis.call('HDEL', P .. ':bans', ARGV[3])
redis.call('PUBLISH', P .. ':events', 'U' .. US .. S .. US .. ARGV[3])
return 1
"#;

/// The heartbeat: refreshes the server's TTL key. Returns 0 if the server
/// had been taken for dead meanwhile (it must register again), else 1.
///
/// ARGV: prefix, server, ttl in ms
pub const HEARTBEAT: &str = r#"
local was = redis.call('SISMEMBER', P .. ':servers', S)
redis.call('SET', P .. ':alive:' .. S, '1', 'PX', ARGV[3])
redis.call('SADD', P .. ':servers', S)
return was
"#;

/// Every registered server whose heartbeat expired is removed, its names
/// freed, and `X` published for it — by whichever server runs this first,
/// so exactly once. Returns how many were lost.
///
/// ARGV: prefix, server
pub const REAP: &str = r#"
local lost = 0
for _, x in ipairs(redis.call('SMEMBERS', P .. ':servers')) do
  if x ~= S and redis.call('EXISTS', P .. ':alive:' .. x) == 0 then
    release(x)
    redis.call('SREM', P .. ':servers', x)
    local seq = redis.call('INCR', P .. ':seq')
    redis.call('PUBLISH', P .. ':events', 'X' .. US .. x .. US .. seq)
    lost = lost + 1
  end
end
return lost
"#;

/// A graceful shutdown: the server's users and names go, `Q` published.
///
/// ARGV: prefix, server
pub const QUIT: &str = r#"
release(S)
redis.call('SREM', P .. ':servers', S)
redis.call('DEL', P .. ':alive:' .. S)
local seq = redis.call('INCR', P .. ':seq')
redis.call('PUBLISH', P .. ':events', 'Q' .. US .. S .. US .. seq)
return 1
"#;

/// After the link comes up: the server registers (heartbeat, its users
/// and names, its bans merged in), publishes `Y` with its users for the
/// others, and `Z` — everyone else and every ban — on its own channel.
/// Returns the uids of its users whose names another server holds now
/// (given away while this server was taken for dead).
///
/// `again` is 1 when the server registers while linked, because the others
/// took it for dead: the reap freed all it had, so a record Redis holds now
/// was written since (a request sent before this one) and is newer than
/// the server's own view, which only fills the gaps.
///
/// ARGV: prefix, server, ttl in ms, lowest next seq, again (0 or 1), ban
/// count, bans (key, until)..., users (uid, seq, room, name, addr,
/// skeleton)...
pub const RESYNC: &str = r#"
redis.call('SET', P .. ':alive:' .. S, '1', 'PX', ARGV[3])
redis.call('SADD', P .. ':servers', S)
local again = ARGV[5] == '1'
if not again then release(S) end
local ukey = P .. ':users:' .. S
local top = math.max(tonumber(redis.call('GET', P .. ':seq') or '0'), tonumber(ARGV[4]))
redis.call('SET', P .. ':seq', top)
local i = 7
for _ = 1, tonumber(ARGV[6]) do
  redis.call('HSETNX', P .. ':bans', ARGV[i], ARGV[i + 1])
  i = i + 2
end
local conflicts = {}
local sync = {'Y' .. US .. S}
while i + 5 <= #ARGV do
  local uid, seq, room, name, addr, skel = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local owner = S .. US .. uid
  local rec = seq .. US .. room .. US .. name .. US .. addr .. US .. skel
  if redis.call('HSETNX', ukey, uid, rec) == 1 or not again then
    redis.call('HSET', ukey, uid, rec)
    if redis.call('HSETNX', P .. ':names', skel, owner) == 0 and redis.call('HGET', P .. ':names', skel) ~= owner then
      conflicts[#conflicts + 1] = uid
    end
  end
  i = i + 6
end
local mine = redis.call('HGETALL', ukey)
for j = 1, #mine, 2 do sync[#sync + 1] = 'u' .. US .. S .. US .. mine[j] .. US .. mine[j + 1] end
redis.call('PUBLISH', P .. ':events', table.concat(sync, RS))
local snap = {'Z' .. US .. top}
local bans = redis.call('HGETALL', P .. ':bans')
for j = 1, #bans, 2 do snap[#snap + 1] = 'b' .. US .. bans[j] .. US .. bans[j + 1] end
for _, x in ipairs(redis.call('SMEMBERS', P .. ':servers')) do
  if x ~= S then
    local recs = redis.call('HGETALL', P .. ':users:' .. x)
    for j = 1, #recs, 2 do snap[#snap + 1] = 'u' .. US .. x .. US .. recs[j] .. US .. recs[j + 1] end
  end
end
redis.call('PUBLISH', P .. ':to:' .. S, table.concat(snap, RS))
return conflicts
"#;

/// A default name for a user whose name another server holds: unless its
/// name is its own again (a second request), claims the first free
/// candidate (name, skeleton pairs from `ARGV[4]` on), publishes
/// it as a rename `R`. Returns the name, nil if all are taken, -1 if the
/// user is not registered.
///
/// ARGV: prefix, server, uid, candidates...
pub const RECLAIM: &str = r#"
local uid = ARGV[3]
local owner = S .. US .. uid
local ukey = P .. ':users:' .. S
local rec = redis.call('HGET', ukey, uid)
if not rec then return -1 end
local seq, room, old, addr, oldskel = split(rec)
if redis.call('HGET', P .. ':names', oldskel) == owner then return old end
for i = 4, #ARGV, 2 do
  local name, skel = ARGV[i], ARGV[i + 1]
  local holder = redis.call('HGET', P .. ':names', skel)
  if not holder or holder == owner then
    redis.call('HSET', P .. ':names', skel, owner)
    redis.call('HSET', ukey, uid, seq .. US .. room .. US .. name .. US .. addr .. US .. skel)
    redis.call('PUBLISH', P .. ':events', 'R' .. US .. S .. US .. uid .. US .. old .. US .. name)
    return name
  end
end
return false
"#;

/// The whole text of a script: the prelude, then its body.
pub fn script(body: &str) -> String {
    format!("{PRELUDE}{body}")
}
