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
//! - channel `h2chat:room:R` — every event as `SEQ EPOCH FRAME`.
//!
//! Scripts encode events themselves (protobuf `chat.v1.ChatMessage`, field by field as the spec
//! lays them out, `sent_at` from Redis's clock), so every node receives the same bytes and only
//! copies them into its ring. Every script but the join checks the epoch it is given: a node
//! whose copy of the room belongs to a lost history learns so (`reset`) and retires it.

use redis::Script;

/// Prefix of a room's channel; the rest is the room id.
pub const CHANNEL_PREFIX: &str = "h2chat:room:";

/// The keys of room `room` in the order every script takes them.
pub fn keys(room: &str) -> [String; 7] {
    [
        format!("h2chat:meta:{room}"),
        format!("h2chat:stream:{room}"),
        format!("h2chat:names:{room}"),
        format!("h2chat:skels:{room}"),
        format!("h2chat:order:{room}"),
        format!("h2chat:alive:{room}"),
        format!("h2chat:posts:{room}"),
    ]
}

/// The channel room `room`'s events are published on.
pub fn channel(room: &str) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

/// Shared by every script. ARGV[1..=4]: room id, channel, history events, history bytes.
const PRELUDE: &str = r#"
local meta, stream, names, skels, order, alive = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local posts = KEYS[7]
local room, channel = ARGV[1], ARGV[2]
local max_events, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])

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
-- Numbers, encodes, stores (trimmed to the history bounds) and publishes one event.
local function append(epoch, sender, kind, text, reason)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  local t = redis.call('TIME')
  local ts = int_field(1, tonumber(t[1])) .. int_field(2, tonumber(t[2]) * 1000)
  local msg = len_field(1, room) .. len_field(2, sender) .. len_field(3, text)
    .. varint(4 * 8 + 2) .. varint(#ts) .. ts
    .. int_field(5, seq) .. int_field(6, kind) .. int_field(10, reason)
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
    append(epoch, name, 2, '', 2)
  end
end
"#;

/// ARGV[5..]: candidate epoch, name, skeleton, token, resume epoch (or ''), resume after (or
/// ''), claim ms. Replies `{ok, epoch, seq}`, `{exists, name}`, `{like, name}` or `{range, last}`.
const JOIN: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then
  redis.call('DEL', stream, names, skels, order, alive, posts)
  epoch = ARGV[5]
  redis.call('HSET', meta, 'epoch', epoch, 'seq', 0, 'bytes', 0)
end
sweep(epoch)
local name, skeleton, token = ARGV[6], ARGV[7], ARGV[8]
if redis.call('HEXISTS', names, name) == 1 then return {'exists', name} end
local like = redis.call('HGET', skels, skeleton)
if like then return {'like', like} end
local last = tonumber(redis.call('HGET', meta, 'seq'))
if ARGV[9] == epoch and ARGV[10] ~= '' and tonumber(ARGV[10]) > last then
  return {'range', tostring(last)}
end
redis.call('HSET', names, name, token .. ' ' .. skeleton)
redis.call('HSET', skels, skeleton, name)
redis.call('ZADD', alive, now_ms() + tonumber(ARGV[11]), name)
local seq = append(epoch, name, 1, '', 0)
redis.call('ZADD', order, seq, name)
return {'ok', epoch, tostring(seq)}
"#;

/// ARGV[5..]: epoch, name, token, text, the post's number in its claim (from 1). Replies
/// `{ok, seq}`, `{reset}`, `{gone}` or `{order, last}` (not the next number: an earlier post
/// of the claim did not get here).
const POST: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if epoch ~= ARGV[5] then return {'reset'} end
if not holds(ARGV[6], ARGV[7]) then return {'gone'} end
local last = tonumber(redis.call('HGET', posts, ARGV[6]) or '0')
if tonumber(ARGV[9]) ~= last + 1 then return {'order', tostring(last)} end
redis.call('HSET', posts, ARGV[6], ARGV[9])
return {'ok', tostring(append(epoch, ARGV[6], 0, ARGV[8], 0))}
"#;

/// ARGV[5..]: epoch, name, token, leave reason. Replies `{ok}`, `{reset}` or `{gone}`.
const LEAVE: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if epoch ~= ARGV[5] then return {'reset'} end
if not holds(ARGV[6], ARGV[7]) then return {'gone'} end
forget(ARGV[6])
append(epoch, ARGV[6], 2, '', tonumber(ARGV[8]))
return {'ok'}
"#;

/// ARGV[5..]: epoch, claim ms, then name and token of each local member. Renews their claims,
/// sweeps the expired ones. Replies `{ok, names no longer held...}` or `{reset}`.
const RENEW: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if epoch ~= ARGV[5] then return {'reset'} end
local until_ms = now_ms() + tonumber(ARGV[6])
local reply = {'ok'}
for i = 7, #ARGV, 2 do
  if holds(ARGV[i], ARGV[i + 1]) then
    redis.call('ZADD', alive, 'XX', until_ms, ARGV[i])
  else
    reply[#reply + 1] = ARGV[i]
  end
end
sweep(epoch)
return reply
"#;

/// No more ARGV. Sweeps, then replies the members in join order (empty for no room).
const MEMBERS: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {} end
sweep(epoch)
return redis.call('ZRANGE', order, 0, -1)
"#;

/// ARGV[5..]: first seq wanted. Replies `{epoch, seq, frame, seq, frame...}` (retained events
/// from that seq on, oldest first) or `{}` when the room has no history in Redis.
const READ: &str = r#"
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {} end
local out = {epoch}
for _, e in ipairs(redis.call('XRANGE', stream, ARGV[5], '+')) do
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
        let with = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            join: with(JOIN),
            post: with(POST),
            leave: with(LEAVE),
            renew: with(RENEW),
            members: with(MEMBERS),
            read: with(READ),
        }
    }
}
