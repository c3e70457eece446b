//! The Lua scripts that make a shared room's every change one atomic step in Redis, and the
//! names of a room's keys.
//!
//! Per room (`R` is the room id, as the key's tail, so no two rooms share a key):
//! - `h2chat:meta:R` — hash: `epoch` (this incarnation of the room's history), `seq` (the last
//!   number given), `bytes` (the stream's encoded size). Created by the first join; a join that
//!   finds it gone (a flush, a failover without persistence) starts a new epoch from seq 1.
//! - `h2chat:stream:R` — stream: one entry `SEQ-1` per event, field `f` the event's whole gRPC
//!   frame, trimmed to `--history` entries and `--history-bytes` bytes (the newest is kept).
//! - `h2chat:names:R` — hash: name → `TOKEN SKELETON` (the member's holder and its look-alike key).
//! - `h2chat:skels:R` — hash: skeleton → name (a name unique across nodes, look-alikes included).
//! - `h2chat:order:R` — sorted set: name by its join's seq (Members in join order).
//! - `h2chat:alive:R` — sorted set: name by the Redis time (ms) its node's claim runs out.
//! - `h2chat:posts:R` — hash: name → how many posts its current claim has made. A node numbers
//!   a member's posts as it reads them and may send several before the first is answered; the
//!   post script takes only the next number, so what Redis accepted of one call is always the
//!   call's first posts, in order (a post after one that failed is refused, never reordered).
//! - `h2chat:pending:R` — list: the joins (`j` + name) and leaves (`l` + name) of a room above
//!   `--presence-batch-above` not yet announced, at most [`PRESENCE_NAMES_MAX`] of each kind (the
//!   counts, `pj` and `pl`, and the last batch's Redis time in ms, `pt`, are fields of `meta`).
//! - channel `h2chat:room:R` — every event as `SEQ EPOCH FRAME`.
//!
//! Presence is batched as a local room batches it ([`crate::services::chat::presence`]): a room
//! of at most `--presence-batch-above` members announces each join and leave as an event of its
//! own; above it, a change waits in the room's pending batch, which becomes one
//! `EVENT_KIND_PRESENCE` event when it holds half the room's size in changes, when the interval
//! since the last batch has passed (the script that finds it due numbers it; a node that leaves a
//! batch pending looks again when it falls due, and every renewal looks too), before any post
//! (so a member's join is announced before its first message), and when the room shrinks to the
//! threshold. Every node must run with the same presence limits.
//!
//! Scripts encode events themselves (protobuf `chat.v1.ChatMessage`, field by field as the spec
//! lays them out, `sent_at` from Redis's clock), so every node receives the same bytes and only
//! copies them into its ring. Every script but the join checks the epoch it is given: a node
//! whose copy of the room belongs to a lost history learns so (`reset`) and retires it.

use redis::Script;

use crate::services::chat::presence::{FLUSH_SHARE, PRESENCE_NAMES_MAX};

/// Prefix of a room's channel; the rest is the room id.
pub const CHANNEL_PREFIX: &str = "h2chat:room:";

/// The keys of room `room` in the order every script takes them.
pub fn keys(room: &str) -> [String; 8] {
    [
        format!("h2chat:meta:{room}"),
        format!("h2chat:stream:{room}"),
        format!("h2chat:names:{room}"),
        format!("h2chat:skels:{room}"),
        format!("h2chat:order:{room}"),
        format!("h2chat:alive:{room}"),
        format!("h2chat:posts:{room}"),
        format!("h2chat:pending:{room}"),
    ]
}

/// The channel room `room`'s events are published on.
pub fn channel(room: &str) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

/// Shared by every script. ARGV[1..=7]: room id, channel, history events, history bytes, presence
/// batch above, presence interval per member (µs), presence max interval (µs).
const PRELUDE: &str = r#"
local meta, stream, names, skels, order, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local posts = KEYS[7]
local room, channel = ARGV[1], ARGV[2]
local max_events, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local pending = KEYS[8]
local batch_above = tonumber(ARGV[5])
local per_member_us, max_interval_us = tonumber(ARGV[6]), tonumber(ARGV[7])
local NAMES_MAX, FLUSH_SHARE = @NAMES_MAX@, @FLUSH_SHARE@

local char, floor = string.char, math.floor
-- Every byte at once (no table): a post encodes about ten of these.
local function varint(n)
  if n < 128 then return char(n) end
  if n < 16384 then return char(n % 128 + 128, floor(n / 128)) end
  local b = {}
  while n >= 128 do
    b[#b + 1] = n % 128 + 128
    n = floor(n / 128)
  end
  b[#b + 1] = n
  return char(unpack(b))
end
local function len_field(num, s)
  if s == '' then return '' end
  return varint(num * 8 + 2) .. varint(#s) .. s
end
local function int_field(num, v)
  if v == 0 then return '' end
  return varint(num * 8) .. varint(v)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function timestamp()
  local t = redis.call('TIME')
  return int_field(1, tonumber(t[1])) .. int_field(2, tonumber(t[2]) * 1000)
end
-- Stores event `seq` (its encoded ChatMessage `msg`) trimmed to the history bounds, and
-- publishes it.
local function store(epoch, seq, msg)
  local frame = string.char(0) .. struct.pack('>I4', #msg) .. msg
  redis.call('XADD', stream, seq .. '-1', 'f', frame)
  local bytes = redis.call('HINCRBY', meta, 'bytes', #frame)
  local len = redis.call('XLEN', stream)
  while len > 1 and (len > max_events or bytes > max_bytes) do
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    redis.call('XDEL', stream, oldest[1])
    bytes = redis.call('HINCRBY', meta, 'bytes', -#oldest[2][2])
    len = len - 1
  end
  redis.call('PUBLISH', channel, seq .. ' ' .. epoch .. ' ' .. frame)
  return seq
end
-- Numbers, encodes, stores and publishes one event.
local function append(epoch, sender, kind, text, reason)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  local ts = timestamp()
  local msg = len_field(1, room) .. len_field(2, sender) .. len_field(3, text)
    .. varint(4 * 8 + 2) .. varint(#ts) .. ts
    .. int_field(5, seq) .. int_field(6, kind) .. int_field(10, reason)
  return store(epoch, seq, msg)
end
local function changes()
  return tonumber(redis.call('HGET', meta, 'pj') or '0')
    + tonumber(redis.call('HGET', meta, 'pl') or '0')
end
-- Numbers the pending batch as one presence event (kind 5, covering its own seq); returns its
-- seq, or nil when nothing is pending.
local function flush(epoch)
  local pj = tonumber(redis.call('HGET', meta, 'pj') or '0')
  local pl = tonumber(redis.call('HGET', meta, 'pl') or '0')
  if pj + pl == 0 then return nil end
  local joined, left = {}, {}
  for _, e in ipairs(redis.call('LRANGE', pending, 0, -1)) do
    local name = string.sub(e, 2)
    local field = varint(14 * 8 + 2)
    if string.sub(e, 1, 1) == 'l' then field = varint(16 * 8 + 2) end
    local list = joined
    if string.sub(e, 1, 1) == 'l' then list = left end
    list[#list + 1] = field .. varint(#name) .. name
  end
  redis.call('DEL', pending)
  redis.call('HSET', meta, 'pj', 0, 'pl', 0, 'pjn', 0, 'pln', 0, 'pt', now_ms())
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  local ts = timestamp()
  local msg = len_field(1, room) .. varint(4 * 8 + 2) .. varint(#ts) .. ts
    .. int_field(5, seq) .. int_field(6, 5) .. int_field(13, seq)
    .. table.concat(joined) .. int_field(15, pj) .. table.concat(left) .. int_field(17, pl)
  return store(epoch, seq, msg)
end
-- Milliseconds until the pending batch is due in a room of `members` (0: now), -1 when nothing
-- is pending.
local function due_in(members)
  local n = changes()
  if n == 0 then return -1 end
  if members <= batch_above or n * FLUSH_SHARE >= members then return 0 end
  local pt = redis.call('HGET', meta, 'pt')
  if not pt then return 0 end
  local wait = tonumber(pt) + math.min(per_member_us * members, max_interval_us) / 1000 - now_ms()
  if wait <= 0 then return 0 end
  return math.ceil(wait)
end
-- Numbers the pending batch if it is due; returns its seq (or nil) and the milliseconds until
-- what stays pending is due (-1: nothing pending).
local function settle(epoch)
  local wait = due_in(redis.call('ZCARD', order))
  if wait ~= 0 then return nil, wait end
  return flush(epoch), -1
end
-- Announces the join (kind 1) or leave (kind 2) of `name` in a room of `size` members (the
-- leaving one counted): an event of its own at most `batch_above`, the batch pending first;
-- above it, a change in the batch. Returns the seq of the event that carries it now, or nil.
local function presence(epoch, name, kind, reason, size)
  if size <= batch_above then
    flush(epoch)
    return append(epoch, name, kind, '', reason)
  end
  local count, kept, tag = 'pj', 'pjn', 'j'
  if kind == 2 then count, kept, tag = 'pl', 'pln', 'l' end
  redis.call('HINCRBY', meta, count, 1)
  if tonumber(redis.call('HGET', meta, kept) or '0') < NAMES_MAX then
    redis.call('HINCRBY', meta, kept, 1)
    redis.call('RPUSH', pending, tag .. name)
  end
  return nil
end
local function forget(name)
  local held = redis.call('HGET', names, name)
  if not held then return end
  local sp = string.find(held, ' ', 1, true)
  redis.call('HDEL', skels, string.sub(held, sp + 1))
  redis.call('HDEL', names, name)
  redis.call('ZREM', order, name)
  redis.call('ZREM', alive, name)
  redis.call('HDEL', posts, name)
end
local function holds(name, token)
  local held = redis.call('HGET', names, name)
  return held and string.sub(held, 1, #token + 1) == token .. ' '
end
-- Members whose node stopped renewing its claim leave, disconnected.
local function sweep(epoch)
  local dead = redis.call('ZRANGEBYSCORE', alive, '-inf', now_ms())
  for _, name in ipairs(dead) do
    forget(name)
    presence(epoch, name, 2, 2, redis.call('ZCARD', order) + 1)
  end
end
"#;

/// ARGV[8..]: candidate epoch, name, skeleton, token, resume epoch (or ''), resume after (or
/// ''), claim ms. Replies `{ok, epoch, joined seq, first live seq, wait}` (the join's own event
/// if it was numbered now, both the same; else the last event before it and the next: the join
/// waits in the room's batch, due in `wait` ms), `{exists, name}`, `{like, name}` or
/// `{range, last}`.
const JOIN: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  redis.call('DEL', stream, names, skels, order, alive, posts, pending)
  epoch = ARGV[8]
  redis.call('HSET', meta, 'epoch', epoch, 'seq', 0, 'bytes', 0)
end
sweep(epoch)
local name, skeleton, token = ARGV[9], ARGV[10], ARGV[11]
if redis.call('HEXISTS', names, name) == 1 then return {'exists', name} end
local like = redis.call('HGET', skels, skeleton)
if like then return {'like', like} end
local last = tonumber(redis.call('HGET', meta, 'seq'))
if ARGV[12] == epoch and ARGV[13] ~= '' and tonumber(ARGV[13]) > last then
  return {'range', tostring(last)}
end
redis.call('HSET', names, name, token .. ' ' .. skeleton)
redis.call('HSET', skels, skeleton, name)
redis.call('ZADD', alive, now_ms() + tonumber(ARGV[14]), name)
redis.call('ZADD', order, redis.call('HINCRBY', meta, 'joins', 1), name)
local seq = presence(epoch, name, 1, 0, redis.call('ZCARD', order))
local wait = -1
if not seq then seq, wait = settle(epoch) end
if seq then return {'ok', epoch, tostring(seq), tostring(seq), '-1'} end
return {'ok', epoch, tostring(last), tostring(last + 1), tostring(wait)}
"#;

/// ARGV[8..]: epoch, name, token, text, the post's number in its claim (from 1). Replies
/// `{ok, seq}`, `{reset}`, `{gone}` or `{order, last}` (not the next number: an earlier post
/// of the claim did not get here). A pending presence batch is numbered first.
const POST: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if epoch ~= ARGV[8] then return {'reset'} end
if not holds(ARGV[9], ARGV[10]) then return {'gone'} end
local last = tonumber(redis.call('HGET', posts, ARGV[9]) or '0')
if tonumber(ARGV[12]) ~= last + 1 then return {'order', tostring(last)} end
redis.call('HSET', posts, ARGV[9], ARGV[12])
flush(epoch)
return {'ok', tostring(append(epoch, ARGV[9], 0, ARGV[11], 0))}
"#;

/// ARGV[8..]: epoch, name, token, leave reason. Replies `{ok, wait}` (`wait`: ms until the
/// room's pending batch is due, -1 for none), `{reset}` or `{gone}`.
const LEAVE: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if epoch ~= ARGV[8] then return {'reset'} end
if not holds(ARGV[9], ARGV[10]) then return {'gone'} end
forget(ARGV[9])
local wait = -1
if not presence(epoch, ARGV[9], 2, tonumber(ARGV[11]), redis.call('ZCARD', order) + 1) then
  local _, w = settle(epoch)
  wait = w
end
return {'ok', tostring(wait)}
"#;

/// ARGV[8..]: epoch, claim ms, then name and token of each local member. Renews their claims,
/// sweeps the expired ones, numbers the pending presence batch if it is due. Replies
/// `{ok, names no longer held...}` or `{reset}`.
const RENEW: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if epoch ~= ARGV[8] then return {'reset'} end
local until_ms = now_ms() + tonumber(ARGV[9])
local reply = {'ok'}
for i = 10, #ARGV, 2 do
  if holds(ARGV[i], ARGV[i + 1]) then
    redis.call('ZADD', alive, 'XX', until_ms, ARGV[i])
  else
    reply[#reply + 1] = ARGV[i]
  end
end
sweep(epoch)
settle(epoch)
return reply
"#;

/// No more ARGV. Sweeps, then replies the members in join order (empty for no room).
const MEMBERS: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {} end
sweep(epoch)
settle(epoch)
return redis.call('ZRANGE', order, 0, -1)
"#;

/// No more ARGV. Numbers the room's pending presence batch if it is due. Replies `{wait}`: ms
/// until what stays pending is due, -1 for nothing pending (or no room).
const FLUSH: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {'-1'} end
local _, wait = settle(epoch)
return {tostring(wait)}
"#;

/// ARGV[8..]: first seq wanted. Replies `{epoch, seq, frame, seq, frame...}` (retained events
/// from that seq on, oldest first) or `{}` when the room has no history in Redis.
const READ: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {} end
local out = {epoch}
for _, e in ipairs(redis.call('XRANGE', stream, ARGV[8], '+')) do
  out[#out + 1] = string.sub(e[1], 1, string.find(e[1], '-', 1, true) - 1)
  out[#out + 1] = e[2][2]
end
return out
"#;

/// The scripts, loaded once per process (redis-rs sends EVALSHA, and the source when Redis has
/// forgotten it, as after a restart).
pub struct Scripts {
    /// See `JOIN`.
    pub join: Script,
    /// See `POST`.
    pub post: Script,
    /// See `LEAVE`.
    pub leave: Script,
    /// See `RENEW`.
    pub renew: Script,
    /// See `MEMBERS`.
    pub members: Script,
    /// See `FLUSH`.
    pub flush: Script,
    /// See `READ`.
    pub read: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}

impl Scripts {
    /// Every script with the prelude.
    pub fn new() -> Scripts {
        // The presence constants are the local rooms' own.
        let prelude = PRELUDE
            .replace("@NAMES_MAX@", &PRESENCE_NAMES_MAX.to_string())
            .replace("@FLUSH_SHARE@", &FLUSH_SHARE.to_string());
        let with = |body: &str| Script::new(&format!("{prelude}{body}"));
        Scripts {
            join: with(JOIN),
            post: with(POST),
            leave: with(LEAVE),
            renew: with(RENEW),
            members: with(MEMBERS),
            flush: with(FLUSH),
            read: with(READ),
        }
    }
}
