"""Redis presence backend (``redis://host:port/db[?prefix=sb]``).

Shared by every tracker of a queue group. Each state change (refresh,
remove, expire, unwatch) is one Lua script, so it is atomic: when two
trackers race, each transition is returned by exactly one of them and is
published once. A watch is one script too (the per-watcher bound is
checked and the watches added atomically). Key layout (all under the hash tag ``{<prefix>}`` so that a
Redis Cluster keeps them in one slot; the scripts touch keys they compute,
so use a standalone Redis or Sentinel):

    {sb}:pr:exp          ZSET  "<edge> <user>" -> deadline ms (entry TTL)
    {sb}:pr:u:<user>     SET   edges holding an entry of <user> (online iff non-empty)
    {sb}:pr:ttl:<edge>   STR   TTL of the edge's last refresh (dates last_seen on expiry)
    {sb}:pr:seen         HASH  user -> last seen ms
    {sb}:pr:w:<user>     SET   watchers of <user>
    {sb}:pr:wg:<watcher> SET   users <watcher> watches (to drop them at once)

A space separates edge and user in ``exp`` members: ids never contain one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis.asyncio as aioredis

from switchboard.errors import ConfigError
from switchboard.frames import Presence
from switchboard.presence import Clock, system_clock

# Entries expired per expire() script call: bounds how long one script blocks
# Redis (a dead 20k-user edge is swept in a few calls, each a few ms).
EXPIRE_BATCH = 2000

_DROP_WATCHES = """
local function drop_watches(p, w)
  local key = p .. 'wg:' .. w
  for _, x in ipairs(redis.call('SMEMBERS', key)) do
    redis.call('SREM', p .. 'w:' .. x, w)
  end
  redis.call('DEL', key)
end
"""

# ARGV: prefix, now, ttl, edge, users... -> users that came online
_REFRESH = """
local p, now, ttl, edge = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local deadline = now + ttl
-- Real-time TTL only to garbage-collect the key of an edge that is gone.
redis.call('SET', p .. 'ttl:' .. edge, ttl, 'PX', math.max(2 * ttl, 60000))
local out = {}
for i = 5, #ARGV do
  local u = ARGV[i]
  if redis.call('ZADD', p .. 'exp', deadline, edge .. ' ' .. u) == 1 then
    local ukey = p .. 'u:' .. u
    redis.call('SADD', ukey, edge)
    if redis.call('SCARD', ukey) == 1 then out[#out + 1] = u end
  end
end
return out
"""

# ARGV: prefix, now, edge, users... -> users that went offline
_REMOVE = _DROP_WATCHES + """
local p, now, edge = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV do
  local u = ARGV[i]
  if redis.call('ZREM', p .. 'exp', edge .. ' ' .. u) == 1 then
    local ukey = p .. 'u:' .. u
    redis.call('SREM', ukey, edge)
    if redis.call('SCARD', ukey) == 0 then
      redis.call('HSET', p .. 'seen', u, now)
      drop_watches(p, u)
      out[#out + 1] = u
    end
  end
end
return out
"""

# ARGV: prefix, now, limit -> {entries swept, user, last_seen, user, last_seen...}
_EXPIRE = _DROP_WATCHES + """
local p, now, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', p .. 'exp', '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local out = {#dead / 2}
local ttls = {}
for i = 1, #dead, 2 do
  local member, deadline = dead[i], tonumber(dead[i + 1])
  redis.call('ZREM', p .. 'exp', member)
  local sp = string.find(member, ' ', 1, true)
  local edge, u = string.sub(member, 1, sp - 1), string.sub(member, sp + 1)
  local ukey = p .. 'u:' .. u
  redis.call('SREM', ukey, edge)
  if redis.call('SCARD', ukey) == 0 then
    if ttls[edge] == nil then ttls[edge] = tonumber(redis.call('GET', p .. 'ttl:' .. edge) or '0') end
    local seen = deadline - ttls[edge]
    local old = tonumber(redis.call('HGET', p .. 'seen', u) or '0')
    if old > seen then seen = old end
    redis.call('HSET', p .. 'seen', u, seen)
    drop_watches(p, u)
    out[#out + 1] = u
    out[#out + 1] = seen
  end
end
return out
"""

_UNWATCH = _DROP_WATCHES + """
drop_watches(ARGV[1], ARGV[2])
return 0
"""

# ARGV: prefix, watcher, limit (0: none), users... -> 1 (watched) or 0 (over the limit, nothing added)
_WATCH = """
local p, w, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local wg = p .. 'wg:' .. w
if limit > 0 then
  local n = redis.call('SCARD', wg)
  local seen = {}
  for i = 4, #ARGV do
    local u = ARGV[i]
    if not seen[u] and redis.call('SISMEMBER', wg, u) == 0 then
      seen[u] = true
      n = n + 1
    end
  end
  if n > limit then return 0 end
end
for i = 4, #ARGV do
  local u = ARGV[i]
  redis.call('SADD', wg, u)
  redis.call('SADD', p .. 'w:' .. u, w)
end
return 1
"""

_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _split_url(url: str) -> tuple[str, str]:
    """The URL for redis-py and the key prefix taken from ``?prefix=``."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    prefix = query.pop("prefix", ["sb"])[-1]
    if not _PREFIX.fullmatch(prefix):
        raise ConfigError(f"presence url: prefix {prefix!r} must match [A-Za-z0-9_-]{{1,32}}")
    rest = "&".join(f"{k}={v}" for k, vs in query.items() for v in vs)
    return urlunsplit(parts._replace(query=rest)), prefix


class RedisPresence:
    def __init__(self, *, url: str, clock: Clock = system_clock) -> None:
        self._url, prefix = _split_url(url)
        self._p = "{%s}:pr:" % prefix
        self._clock = clock
        self._r: aioredis.Redis | None = None

    async def open(self) -> None:
        r = aioredis.from_url(self._url, decode_responses=True)
        await r.ping()
        self._r = r
        self._refresh = r.register_script(_REFRESH)
        self._remove = r.register_script(_REMOVE)
        self._expire = r.register_script(_EXPIRE)
        self._unwatch = r.register_script(_UNWATCH)
        self._watch = r.register_script(_WATCH)

    async def close(self) -> None:
        r, self._r = self._r, None
        if r is not None:
            await r.aclose()

    @property
    def redis(self) -> aioredis.Redis:
        if self._r is None:
            raise RuntimeError("RedisPresence is not open")
        return self._r

    async def refresh(self, edge: str, users: Sequence[str], ttl_ms: int) -> list[Presence]:
        if not users:
            return []
        now = self._clock()
        came = await self._refresh(args=[self._p, now, int(ttl_ms), edge, *users])
        return [Presence(user=u, online=True, last_seen=now) for u in came]

    async def remove(self, edge: str, users: Sequence[str]) -> list[Presence]:
        if not users:
            return []
        now = self._clock()
        gone = await self._remove(args=[self._p, now, edge, *users])
        return [Presence(user=u, online=False, last_seen=now) for u in gone]

    async def expire(self) -> list[Presence]:
        now = self._clock()
        out: list[Presence] = []
        while True:
            swept, *flat = await self._expire(args=[self._p, now, EXPIRE_BATCH])
            out += [Presence(user=flat[i], online=False, last_seen=int(flat[i + 1]))
                    for i in range(0, len(flat), 2)]
            if int(swept) < EXPIRE_BATCH:
                return out

    async def online(self, users: Sequence[str]) -> dict[str, tuple[bool, int | None]]:
        if not users:
            return {}
        now = self._clock()
        pipe = self.redis.pipeline(transaction=False)
        for u in users:
            pipe.scard(self._p + "u:" + u)
        pipe.hmget(self._p + "seen", list(users))
        res = await pipe.execute()
        seen = res[-1]
        return {u: (True, now) if n else (False, None if s is None else int(s))
                for u, n, s in zip(users, res[:-1], seen)}

    async def watch(self, watcher: str, users: Sequence[str], *, limit: int | None = None) -> bool:
        if not users:
            return True
        return bool(await self._watch(args=[self._p, watcher, limit or 0, *users]))

    async def unwatch_all(self, watcher: str) -> None:
        await self._unwatch(args=[self._p, watcher])

    async def watchers_of(self, user: str) -> set[str]:
        # redis-py types members bytes | str; decode_responses=True (open()) makes them str.
        return set(await self.redis.smembers(self._p + "w:" + user))  # type: ignore[arg-type]

    async def watchers_of_many(self, users: Sequence[str]) -> dict[str, set[str]]:
        if not users:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for u in users:
            pipe.smembers(self._p + "w:" + u)
        return {u: set(ws) for u, ws in zip(users, await pipe.execute())}
