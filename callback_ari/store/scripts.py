"""Redis side of the callback store: the Lua scripts and the record codec they share.

Every script starts with the header ``keys.lua_header()`` generates (the key schema as Lua
names: ``K_QUEUES``, ``kcb(id)``, ``kq(q, I_READY)``, ``S_PENDING`` ...; a script never spells
a key, an index or a state itself), then the shared helpers below. Every script receives
KEYS[1] = ``<p>:queues`` (it carries the hash tag, so a cluster routes the script to the slot
that holds the whole namespace) and the common ARGV header:
ARGV[1] namespace ``<p>`` (e.g. ``{cbari}``), ARGV[2] now (ms, the caller's clock),
ARGV[3] audit stream MAXLEN (0: no audit), ARGV[4] terminal-record TTL in ms (0: keep).
Operation arguments start at ARGV[5]. Replies are arrays whose first element is a status:
``ok``/``new``/``old``/``same`` (with id, the record as a JSON object, corrupt reports),
``none``/``gated`` (nothing claimable), ``nf`` (no such id), ``bad`` (invalid transition, message),
``corrupt`` (key, reason: nothing was written). Corrupt reports are flat ``key, reason`` pairs that
the Python side logs as ``store.corrupt_record``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from callback_ari.errors import CorruptRecord
from callback_ari.models import Callback, Origin, State
from callback_ari.store import keys


def as_text(value: object) -> str:
    """A reply element as str, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_record(key: str, cb_id: str, fields: Mapping[Any, Any] | str) -> Callback:
    """A Callback from a hash (HGETALL map or the scripts' JSON); CorruptRecord if off-schema."""
    try:
        raw = json.loads(fields) if isinstance(fields, str) else fields
    except ValueError:
        raise CorruptRecord(key, "unreadable record") from None
    if not isinstance(raw, dict) or not raw:
        raise CorruptRecord(key, "empty or missing hash")
    if isinstance(fields, str):
        h: dict[str, str] = raw  # the scripts' JSON: str keys and values already
    else:
        h = {as_text(k): as_text(v) for k, v in raw.items()}
    try:
        ints = {f: int(h.get(f, "0")) for f in keys.INT_FIELDS}
        return Callback(
            id=cb_id,
            queue=h["q"],
            number=h["n"],
            caller_name=h.get("nm", ""),
            source_channel=h.get("ch", ""),
            join_time_ms=int(h["j"]),
            created_ms=int(h["c"]),
            state=State(h["s"]),
            attempts=int(h["a"]),
            last_outcome=h.get("o", ""),
            last_cause=h.get("ca", ""),
            next_attempt_ms=ints["na"],
            lease_owner=h.get("lo", ""),
            lease_expires_ms=ints["le"],
            updated_ms=ints["u"],
            priority=ints["pr"],
            origin=Origin(h.get("or", Origin.PHONE.value)),
            position=ints["po"],
            reason=h.get("rs", ""),
            recording=h.get("rc", ""),
        )
    except KeyError as exc:
        raise CorruptRecord(key, f"missing field {exc.args[0]}") from None
    except ValueError as exc:
        raise CorruptRecord(key, f"bad value: {exc}") from None


# How long a callback an agent has just answered still counts as dialing. The member is in a
# call from that AgentConnect on, but a dispatch pass that read the members a moment before
# (its own Redis round trips since, or another instance's AMI session that has not delivered
# that AgentConnect yet) still counts it as ready: the callback keeps its slot until then.
ANSWERED_GRACE_MS = 1000

_COMMON = (
    keys.lua_header()
    + r"""
local NOW = tonumber(ARGV[2])
local AUDIT_MAX = tonumber(ARGV[3])
local TTL = tonumber(ARGV[4])
local MOVE_LIMIT = 1000
local ANSWERED_GRACE = """
    + str(ANSWERED_GRACE_MS)
    + r"""

local function num(x) return string.format('%.0f', x) end
local function report(list, key, why) table.insert(list, key); table.insert(list, why) end

-- (fields) for a sound record, (nil, reason) for a corrupt one, (nil, nil) when absent.
local function load(id)
  local flat = redis.pcall('HGETALL', kcb(id))
  if flat.err then return nil, 'not a hash' end
  if #flat == 0 then return nil, nil end
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  for _, f in ipairs(REQUIRED) do
    if h[f] == nil then return nil, 'missing field ' .. f end
  end
  for _, f in ipairs(INTS) do
    if h[f] ~= nil and not string.match(h[f], '^%-?%d+$') then
      return nil, 'non-integer field ' .. f
    end
  end
  if not STATES[h.s] then return nil, 'unknown state' end
  return h, nil
end

-- The record as one JSON object: one bulk reply parses far faster than a 34-element array.
local function rec(id)
  local flat = redis.call('HGETALL', kcb(id))
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return cjson.encode(h)
end

local function score(h) return tonumber(h.j) - tonumber(h.pr or '0') * 1000 end

-- A foreign key where an index should be would make a script fail half-way: refuse up front.
-- ``parts``: the indexes the caller touches (nil: all of them); ``globals``: check seq/queues too.
local function check_indexes(q, parts, globals)
  for part, kind in pairs(INDEXES) do
    if parts == nil or parts[part] then
      local t = redis.call('TYPE', kq(q, part)).ok
      if t ~= 'none' and t ~= kind then
        return {kq(q, part), 'expected ' .. kind .. ', found ' .. t}
      end
    end
  end
  if globals then
    for _, key in ipairs({K_QUEUES, K_SEQ}) do
      local kind = GLOBAL_KEYS[key]
      local t = redis.call('TYPE', key).ok
      if t ~= 'none' and t ~= kind then return {key, 'expected ' .. kind .. ', found ' .. t} end
    end
  end
  return nil
end

-- Drop an index entry that does not lead to a sound record of the expected kind, and say so.
local function skip(id, h, why, where, reports)
  if why then
    redis.pcall('SADD', K_CORRUPT, id)
    report(reports, kcb(id), why)
  elseif h then
    report(reports, kcb(id), 'state ' .. h.s .. ' of queue ' .. h.q .. ' found in ' .. where)
  else
    report(reports, kcb(id), 'missing record listed in ' .. where)
  end
end

local function audit(id, q, from, to, outcome, cause, attempt, extra)
  if AUDIT_MAX <= 0 then return end
  local ts = num(NOW)
  local f = {'id', id, 'queue', q, 'from', from, 'to', to, 'outcome', outcome, 'cause', cause,
             'attempt', attempt, 'ts', ts}
  for _, v in ipairs(extra or {}) do f[#f + 1] = v end
  -- Entry ids follow the caller's clock; if it ever runs backwards, let Redis pick the id.
  local r = redis.pcall('XADD', K_AUDIT, 'MAXLEN', '~', AUDIT_MAX, ts .. '-*', unpack(f))
  if type(r) == 'table' and r.err then
    redis.pcall('XADD', K_AUDIT, 'MAXLEN', '~', AUDIT_MAX, '*', unpack(f))
  end
end

-- A number is dialled by at most one callback at a time, whatever the queue.
local function release_number(id, h)
  local key = K_DIALNUM
  if redis.call('HGET', key, h.n) == id then redis.call('HDEL', key, h.n) end
end

-- Leave every live index; terminal records keep their hash (with a TTL) for reports.
local function finish(id, h, to, outcome, cause, keep_outcome)
  local q = h.q
  release_number(id, h)
  for _, part in ipairs(LIVE_INDEXES) do
    redis.call('ZREM', kq(q, part), id)
  end
  if redis.call('HGET', kq(q, I_NUMS), h.n) == id then redis.call('HDEL', kq(q, I_NUMS), h.n) end
  local done = kq(q, DONE_INDEX[to])
  redis.call('ZADD', done, num(NOW), id)
  if keep_outcome then
    redis.call('HSET', kcb(id), 's', to, 'le', '0', 'u', num(NOW))
  else
    redis.call('HSET', kcb(id), 's', to, 'o', outcome, 'ca', cause, 'le', '0', 'u', num(NOW))
  end
  if TTL > 0 then
    redis.call('ZREMRANGEBYSCORE', done, '-inf', '(' .. num(NOW - TTL))
    redis.call('PEXPIRE', kcb(id), num(TTL))
  end
  audit(id, q, h.s, to, outcome, cause, h.a)
end

-- Due retry_wait and scheduled pending callbacks join the ready set (oldest due first).
local function promote(q, reports)
  for _, part in ipairs({I_RETRY, I_SCHED}) do
    local src = kq(q, part)
    local want = (part == I_RETRY) and S_RETRY_WAIT or S_PENDING
    local due = redis.call('ZRANGEBYSCORE', src, '-inf', num(NOW), 'LIMIT', 0, MOVE_LIMIT)
    for _, id in ipairs(due) do
      redis.call('ZREM', src, id)
      local h, why = load(id)
      if h and h.s == want and h.q == q then
        redis.call('ZADD', kq(q, I_READY), num(score(h)), id)
        if want == S_RETRY_WAIT then
          redis.call('HSET', kcb(id), 's', S_PENDING, 'u', num(NOW))
          audit(id, q, S_RETRY_WAIT, S_PENDING, '', '', h.a)
        end
      else
        skip(id, h, why, src, reports)
      end
    end
  end
end
"""
)

ENQUEUE = (
    _COMMON
    + r"""
-- ARGV: 5 queue, 6 number, 7 name, 8 channel, 9 join, 10 origin, 11 priority, 12 position,
--       13 wanted id ('' = generate), 14 next_attempt_ms, 15 reason ('' = none)
local q, n, given = ARGV[5], ARGV[6], ARGV[13]
local bad = check_indexes(q, {nums = true, age = true, sched = true, ready = true}, true)
if bad then return {'corrupt', bad[1], bad[2]} end
local reports = {}
if given ~= '' then
  local h, why = load(given)
  if why then return {'corrupt', kcb(given), why} end
  if h then return {'old', given, rec(given), reports} end
end
local cur = redis.call('HGET', kq(q, I_NUMS), n)
if cur then
  local h, why = load(cur)
  if h and LIVE[h.s] and h.q == q and h.n == n then
    return {'old', cur, rec(cur), reports}
  end
  if why then report(reports, kcb(cur), why) end
end
local id = given
if id == '' then
  repeat id = tostring(redis.call('INCR', K_SEQ)) until redis.call('EXISTS', kcb(id)) == 0
end
local na = tonumber(ARGV[14])
redis.call('HSET', kcb(id), 'q', q, 'n', n, 'nm', ARGV[7], 'ch', ARGV[8], 'j', ARGV[9],
  'c', num(NOW), 's', S_PENDING, 'a', '0', 'o', '', 'ca', '', 'na', num(na), 'lo', '', 'le', '0',
  'u', num(NOW), 'pr', ARGV[11], 'or', ARGV[10], 'po', ARGV[12])
if ARGV[15] ~= '' then redis.call('HSET', kcb(id), 'rs', ARGV[15]) end
redis.call('HSET', kq(q, I_NUMS), n, id)
redis.call('ZADD', kq(q, I_AGE), num(NOW), id)
redis.call('SADD', K_QUEUES, q)
if na > NOW then
  redis.call('ZADD', kq(q, I_SCHED), num(na), id)
else
  redis.call('ZADD', kq(q, I_READY), num(tonumber(ARGV[9]) - tonumber(ARGV[11]) * 1000), id)
end
audit(id, q, '', S_PENDING, '', '', '0', {'origin', ARGV[10], 'reason', ARGV[15]})
return {'new', id, rec(id), reports}
"""
)

CLAIM = (
    _COMMON
    + r"""
-- ARGV: 5 queue, 6 owner, 7 lease_ms, 8 join_before_ms ('' = no gate),
--       9 max_dialing ('' = no cap): callbacks dialing in this queue, all instances together
local q = ARGV[5]
local bad = check_indexes(
  q, {ready = true, retry = true, sched = true, dial = true, answered = true})
if bad then return {'corrupt', bad[1], bad[2]} end
local reports = {}
promote(q, reports)
if ARGV[9] ~= '' then
  local answered = kq(q, I_ANSWERED)
  redis.call('ZREMRANGEBYSCORE', answered, '-inf', num(NOW))
  local busy = redis.call('ZCARD', kq(q, I_DIAL)) + redis.call('ZCARD', answered)
  if busy >= tonumber(ARGV[9]) then return {'full', '', {}, reports} end
end
local ready = kq(q, I_READY)
local pos = 0
for _ = 1, 100 do
  local top = redis.call('ZRANGE', ready, pos, pos)
  if #top == 0 then break end
  local id = top[1]
  local h, why = load(id)
  local other = h and redis.call('HGET', K_DIALNUM, h.n)
  if h and h.s == S_PENDING and h.q == q and other and other ~= id then
    pos = pos + 1  -- its number is being called for another callback: next in line, keep it
  elseif h and h.s == S_PENDING and h.q == q then
    if ARGV[8] ~= '' and tonumber(h.j) >= tonumber(ARGV[8]) then
      return {'gated', id, {}, reports}
    end
    redis.call('HSET', K_DIALNUM, h.n, id)
    local a = num(tonumber(h.a) + 1)
    local le = num(NOW + tonumber(ARGV[7]))
    redis.call('ZREM', ready, id)
    redis.call('ZADD', kq(q, I_DIAL), le, id)
    redis.call('HSET', kcb(id), 's', S_DIALING, 'a', a, 'lo', ARGV[6], 'le', le, 'u', num(NOW))
    audit(id, q, S_PENDING, S_DIALING, '', '', a)
    return {'ok', id, rec(id), reports}
  else
    redis.call('ZREM', ready, id)
    skip(id, h, why, ready, reports)
  end
end
return {'none', '', {}, reports}
"""
)

RECORD = (
    _COMMON
    + r"""
-- ARGV: 5 id, 6 owner, 7 outcome, 8 cause, 9 retry_at ('' = no retry), 10 max_attempts,
--       11 attempt ('' = current)
local id, owner, outcome, cause, attempt = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[11]
local h, why = load(id)
if why then return {'corrupt', kcb(id), why} end
if not h then return {'nf', id} end
local bad = check_indexes(h.q)
if bad then return {'corrupt', bad[1], bad[2]} end
if attempt ~= '' and tonumber(attempt) ~= tonumber(h.a) then
  return {'bad', id, 'attempt ' .. attempt .. ' is stale, the callback is at attempt ' .. h.a}
end
if h.s ~= S_DIALING then
  local expect = {[S_RETRY_WAIT] = true, [S_PENDING] = true, [S_FAILED] = true}
  if outcome == O_CONNECTED then expect = {[S_CONNECTED] = true} end
  if h.lo == owner and h.o == outcome and h.ca == cause and expect[h.s] then
    return {'same', id, rec(id), {}}
  end
  return {'bad', id, 'callback is ' .. h.s .. ', not dialing'}
end
if h.lo ~= owner then return {'bad', id, 'the lease belongs to another worker'} end
if outcome == O_CONNECTED then
  finish(id, h, S_CONNECTED, outcome, cause, false)
  local answered = kq(h.q, I_ANSWERED)
  redis.call('ZADD', answered, num(NOW + ANSWERED_GRACE), id)
  redis.call('PEXPIRE', answered, ANSWERED_GRACE + 1000)
elseif ARGV[9] ~= '' and tonumber(h.a) < tonumber(ARGV[10]) then
  local at = num(tonumber(ARGV[9]))
  release_number(id, h)
  redis.call('ZREM', kq(h.q, I_DIAL), id)
  redis.call('ZADD', kq(h.q, I_RETRY), at, id)
  redis.call('HSET', kcb(id), 's', S_RETRY_WAIT, 'na', at, 'o', outcome, 'ca', cause, 'le', '0',
    'u', num(NOW))
  audit(id, h.q, S_DIALING, S_RETRY_WAIT, outcome, cause, h.a)
else
  finish(id, h, S_FAILED, outcome, cause, false)
end
return {'ok', id, rec(id), {}}
"""
)

CANCEL = (
    _COMMON
    + r"""
-- ARGV: 5 id, 6 reason
local id = ARGV[5]
local h, why = load(id)
if why then return {'corrupt', kcb(id), why} end
if not h then return {'nf', id} end
if h.s == S_CANCELLED then return {'same', id, rec(id), {}} end
if not LIVE[h.s] then return {'bad', id, 'callback is already ' .. h.s} end
local bad = check_indexes(h.q)
if bad then return {'corrupt', bad[1], bad[2]} end
finish(id, h, S_CANCELLED, '', ARGV[6], true)
return {'ok', id, rec(id), {}}
"""
)

EXPIRE = (
    _COMMON
    + r"""
-- ARGV: 5 queue, 6 cutoff (created before it expire; dialing ones wait for their outcome)
local q = ARGV[5]
local bad = check_indexes(q)
if bad then return {'corrupt', bad[1], bad[2]} end
local age = kq(q, I_AGE)
local out, reports = {}, {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', age, '-inf', '(' .. ARGV[6])) do
  local h, why = load(id)
  if h and h.q == q and LIVE[h.s] then
    if h.s ~= S_DIALING then
      finish(id, h, S_EXPIRED, '', 'max_age', true)
      table.insert(out, id)
    end
  else
    redis.call('ZREM', age, id)
    skip(id, h, why, age, reports)
  end
end
return {'ok', '', out, reports}
"""
)

RECLAIM = (
    _COMMON
    + r"""
-- A crashed worker's claim returns to pending; the attempt it used stays counted.
local out, reports = {}, {}
for _, q in ipairs(redis.call('SMEMBERS', K_QUEUES)) do
  local bad = check_indexes(q, {dial = true, ready = true})
  if bad then
    report(reports, bad[1], bad[2])
  else
    local dial = kq(q, I_DIAL)
    local due = redis.call('ZRANGEBYSCORE', dial, '-inf', num(NOW), 'LIMIT', 0, MOVE_LIMIT)
    for _, id in ipairs(due) do
      local h, why = load(id)
      if h and h.s == S_DIALING and h.q == q then
        if tonumber(h.le) <= NOW then
          release_number(id, h)
          redis.call('ZREM', dial, id)
          redis.call('ZADD', kq(q, I_READY), num(score(h)), id)
          redis.call('HSET', kcb(id), 's', S_PENDING, 'lo', '', 'le', '0', 'o', O_ERROR,
            'ca', 'lease_expired', 'u', num(NOW))
          audit(id, q, S_DIALING, S_PENDING, O_ERROR, 'lease_expired', h.a)
          table.insert(out, id)
        else
          redis.call('ZADD', dial, h.le, id)
        end
      else
        redis.call('ZREM', dial, id)
        skip(id, h, why, dial, reports)
      end
    end
  end
end
return {'ok', '', out, reports}
"""
)

RENEW = (
    _COMMON
    + r"""
-- ARGV: 5 id, 6 owner, 7 lease_ms
local id = ARGV[5]
local h = load(id)
if not h or h.s ~= S_DIALING or h.lo ~= ARGV[6] then return 0 end
local le = num(NOW + tonumber(ARGV[7]))
redis.call('HSET', kcb(id), 'le', le)
redis.call('ZADD', kq(h.q, I_DIAL), le, id)
return 1
"""
)

RELEASE = (
    _COMMON
    + r"""
-- A pending callback held back (sched) until its caller's line is down: bring its first attempt
-- forward to ARGV 6 (never later than it already was). Idempotent; anything else is left alone.
-- ARGV: 5 id, 6 due_ms. Reply: 1 moved, 0 left as it was.
local id, due = ARGV[5], tonumber(ARGV[6])
local h = load(id)
if not h or h.s ~= 'pending' then return 0 end
local sched = kq(h.q, 'sched')
local cur = redis.call('ZSCORE', sched, id)
if not cur or tonumber(cur) <= due then return 0 end
redis.call('HSET', kcb(id), 'na', num(due))
if due > NOW then
  redis.call('ZADD', sched, num(due), id)
else
  redis.call('ZREM', sched, id)
  redis.call('ZADD', kq(h.q, 'ready'), num(score(h)), id)
end
return 1
"""
)

SET_RECORDING = (
    _COMMON
    + r"""
-- The caller's recorded message belongs to the callback: keep its name on the record and say
-- so in the audit stream (from = to: no transition). Idempotent.
-- ARGV: 5 id, 6 recording name. Reply: 1 set, 0 no such record.
local id, name = ARGV[5], ARGV[6]
local h = load(id)
if not h then return 0 end
if h.rc == name then return 1 end
redis.call('HSET', kcb(id), 'rc', name)
audit(id, h.q, h.s, h.s, '', '', h.a, {'recording', name})
return 1
"""
)

FIND_LIVE = (
    _COMMON
    + r"""
-- ARGV: 5 queue, 6 number
local q, n = ARGV[5], ARGV[6]
local id = redis.pcall('HGET', kq(q, I_NUMS), n)
if type(id) == 'table' and id.err then return {'corrupt', kq(q, I_NUMS), 'not a hash'} end
if not id then return {'none'} end
local h, why = load(id)
if why then return {'corrupt', kcb(id), why} end
if not h or not LIVE[h.s] or h.q ~= q or h.n ~= n then return {'none'} end
return {'ok', id, rec(id), {}}
"""
)

LIST = (
    _COMMON
    + r"""
-- ARGV: 5 offset, 6 limit, 7.. index keys in order.
-- Reply: {{id, JSON record | '' (gone) | '!reason', ...}, reports}
local skipn, left = tonumber(ARGV[5]), tonumber(ARGV[6])
local out, reports = {}, {}
for i = 7, #ARGV do
  if left <= 0 then break end
  local k = ARGV[i]
  local size = redis.pcall('ZCARD', k)
  if type(size) == 'table' then
    report(reports, k, 'not a sorted set')
  elseif skipn >= size then
    skipn = skipn - size
  else
    for _, id in ipairs(redis.call('ZRANGE', k, skipn, skipn + left - 1)) do
      local r = redis.pcall('TYPE', kcb(id)).ok
      if r == 'hash' then r = rec(id) elseif r == 'none' then r = '' else r = '!not a hash' end
      table.insert(out, id)
      table.insert(out, r)
      left = left - 1
    end
    skipn = 0
  end
end
return {out, reports}
"""
)

COUNTS = (
    _COMMON
    + r"""
-- Reply: {{queue, ready, sched, retry, dial, connected, failed, expired, cancelled}, ...}, reports
local out, reports = {}, {}
local queues = redis.pcall('SMEMBERS', K_QUEUES)
if queues.err then
  report(reports, K_QUEUES, 'not a set')
  return {out, reports}
end
for _, q in ipairs(queues) do
  local row = {q}
  for _, part in ipairs(COUNT_INDEXES) do
    local n
    if TTL > 0 and TERMINAL_INDEXES[part] then
      n = redis.pcall('ZCOUNT', kq(q, part), num(NOW - TTL), '+inf')
    else
      n = redis.pcall('ZCARD', kq(q, part))
    end
    if type(n) == 'table' then
      report(reports, kq(q, part), 'not a sorted set')
      n = 0
    end
    table.insert(row, n)
  end
  table.insert(out, row)
end
return {out, reports}
"""
)

SCRIPTS: dict[str, str] = {
    "enqueue": ENQUEUE, "claim": CLAIM, "record_outcome": RECORD, "cancel": CANCEL,
    "expire": EXPIRE, "reclaim": RECLAIM, "renew": RENEW, "find_live": FIND_LIVE, "list": LIST,
    "counts": COUNTS, "set_recording": SET_RECORDING,
}  # fmt: skip

# Compare-and-swap of one member-reservation key (keys.MEMBER_KEYS), outside SCRIPTS: it needs
# no header. KEYS[1] the key; ARGV: 1 expected value, 2 new value ('' = delete), 3 TTL ms.
# Reply 1 if swapped, else 0.
SWAP_IF = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) return 1 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
return 1
"""
