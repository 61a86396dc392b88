"""Client-side rate limits, shared by every process through Redis, so upstreams never say 429.

Kommo allows 7 requests/s per integration and Sage about 200/min per business (both
configurable). Each limit is a log in Redis (a sorted set, Redis's own clock) of the requests
still counting against the window. The upstream counts a request when it arrives, which is
somewhere between our sending it and our reading its answer, and a loaded machine can put tens
of milliseconds between the two. So a request counts from the moment it is let through until a
full window after its answer came back: whatever the delays, the upstream never sees more than
the limit in any window of its own. A request whose answer never comes (the process died) stops
counting after IN_FLIGHT_HOLD_SECONDS.

The budget adapts (additive increase, multiplicative decrease): a 429 means someone else spends
the same budget (Kommo's limit is per account, shared with the customer's other integrations),
so the limit in force halves, then grows back by a twentieth of the configured limit per window.
A short Retry-After on the 429 (≤ 5 s) stops every process from sending until it has passed.
"""

from __future__ import annotations

import asyncio
import uuid
from functools import partial

import httpx
import redis.asyncio as aioredis
import structlog
from limits import parse

from app.clients.http import SHORT_THROTTLE_SECONDS, UNANSWERED, retry_after_seconds

log = structlog.get_logger(__name__)
MAX_SLEEP = 1.0
# Re-check this often while every counted request is still waiting for its answer.
IN_FLIGHT_POLL_SECONDS = 0.02
IN_FLIGHT_HOLD_SECONDS = 30.0
# After a 429 the budget is halved, then grows by this share of the configured limit per window.
DECREASE_FACTOR = 0.5
RECOVERY_PER_WINDOW = 0.05
HIT_EXTENSION = "sagebridge.rate_hit"

# The budget in force: the configured limit, lowered by a recent 429 and recovering since.
_BUDGET = """
local function budget(key, limit, window, now)
  local lowered, at = unpack(redis.call('HMGET', key, 'limit', 'at'))
  if not lowered then return limit end
  local grown = tonumber(lowered) + (now - tonumber(at)) / window * limit * tonumber(ARGV[5])
  return math.min(limit, grown)
end
"""

# ARGV: limit, window (µs), member, take (1: count the request, 0: only look), recovery,
# hold (µs). Returns 0 when a request fits now (counted if `take`), else the µs to wait.
_ACQUIRE = (
    _BUDGET
    + """
local limit, window, hold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = tonumber(redis.call('HGET', KEYS[2], 'until') or '0')
if paused > now then return paused - now end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < math.max(1, math.floor(budget(KEYS[2], limit, window, now))) then
  if ARGV[4] == '1' then
    redis.call('ZADD', KEYS[1], now + hold, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], math.ceil((hold + window) / 1000))
  end
  return 0
end
local first = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
if first - now > window then return -1 end
return first - now
"""
)

# ARGV: window (µs), member. The answer came back: the request counts one more window.
_ANSWERED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
return 0
"""

# ARGV: limit, window (µs), retry-after (µs, 0: none), decrease, recovery.
# Returns the budget now in force (×1000, an integer for Redis).
_THROTTLED = (
    _BUDGET
    + """
local limit, window, pause = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local current = budget(KEYS[1], limit, window, now)
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '0')
if now - at >= window then
  current = math.max(1, current * tonumber(ARGV[4]))
  redis.call('HSET', KEYS[1], 'limit', tostring(current), 'at', tostring(now))
end
if pause > 0 then
  local paused = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
  redis.call('HSET', KEYS[1], 'until', tostring(math.max(paused, now + pause)))
end
local recovery = window / tonumber(ARGV[5]) + pause
redis.call('PEXPIRE', KEYS[1], math.ceil(recovery / 1000))
return math.floor(current * 1000)
"""
)


class SharedRateLimit:
    def __init__(
        self,
        redis_url: str,
        *,
        rate: str,
        key: str,
        hold_seconds: float = IN_FLIGHT_HOLD_SECONDS,
    ) -> None:
        """`rate` in the `limits` notation, e.g. "7/second" or "200/minute"."""
        item = parse(rate)
        self._limit = item.amount
        self._window_us = round(item.get_expiry() * 1_000_000)
        self._hold_us = round(hold_seconds * 1_000_000) + self._window_us
        self._key = f"sagebridge:ratelimit:{key}"
        self._budget_key = f"{self._key}:budget"
        self._redis = aioredis.Redis.from_url(redis_url)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._answered = self._redis.register_script(_ANSWERED)
        self._throttled = self._redis.register_script(_THROTTLED)

    async def _wait_us(self, member: str, *, take: bool) -> int:
        args = [
            self._limit,
            self._window_us,
            member,
            "1" if take else "0",
            RECOVERY_PER_WINDOW,
            self._hold_us,
        ]
        return int(await self._acquire(keys=[self._key, self._budget_key], args=args))

    async def try_acquire(self) -> bool:
        return await self._wait_us(uuid.uuid4().hex, take=True) == 0

    async def acquire(self) -> str:
        """Wait until one more request fits in the window, then count it; its id in the log."""
        member = uuid.uuid4().hex
        await self._wait(member, take=True)
        return member

    async def ready(self) -> None:
        """Wait until one more request would fit, without counting one: a coalescing client
        gathers what is asked for meanwhile, then sends it all as the request that fits."""
        await self._wait("", take=False)

    async def _wait(self, member: str, *, take: bool) -> None:
        while (wait_us := await self._wait_us(member, take=take)) != 0:
            wait = IN_FLIGHT_POLL_SECONDS if wait_us < 0 else min(MAX_SLEEP, wait_us / 1e6)
            log.debug("ratelimit.wait", key=self._key, wait_s=round(wait, 3))
            await asyncio.sleep(wait)

    async def answered(self, member: str) -> None:
        await self._answered(keys=[self._key], args=[self._window_us, member])

    async def throttled(self, retry_after: float | None) -> float:
        """A 429: lower the budget for every process (once per window), pause all of them for
        `retry_after` seconds if the upstream said so; the budget now in force."""
        pause_us = round((retry_after or 0.0) * 1_000_000)
        args = [self._limit, self._window_us, pause_us, DECREASE_FACTOR, RECOVERY_PER_WINDOW]
        budget = int(await self._throttled(keys=[self._budget_key], args=args)) / 1000
        log.warning(
            "ratelimit.throttled",
            key=self._key,
            budget=round(budget, 2),
            limit=self._limit,
            retry_after_s=retry_after,
        )
        return budget

    async def on_request(self, request: httpx.Request) -> None:
        """An httpx request hook: every call made through the client is counted."""
        member = await self.acquire()
        request.extensions[HIT_EXTENSION] = member
        request.extensions[UNANSWERED] = partial(self.answered, member)

    async def on_response(self, response: httpx.Response) -> None:
        """An httpx response hook: the call counts one window from now; a 429 lowers the
        budget."""
        member = response.request.extensions.get(HIT_EXTENSION)
        if isinstance(member, str):
            await self.answered(member)
        if response.status_code == httpx.codes.TOO_MANY_REQUESTS:
            await self.throttled(_shared_pause(retry_after_seconds(response)))

    async def aclose(self) -> None:
        await self._redis.aclose()


def _shared_pause(retry_after: float | None) -> float | None:
    """A short Retry-After pauses every process (each would otherwise try, and be refused, in
    turn). A long one is honoured by the throttled event alone, which is retried no sooner
    (the retry ladder reads it): pausing every process for minutes would hold every worker's
    job slots idle, while the halved budget already keeps the others well below the limit."""
    if retry_after is None or retry_after > SHORT_THROTTLE_SECONDS:
        return None
    return retry_after
