"""Client-side rate limits, shared by every process through Redis, so upstreams never say 429.

Kommo allows 7 requests/s per integration and Sage about 200/min per business (both
configurable). Each limit is a sliding log in Redis (a sorted set of send times, Redis's own
clock) whose window is a little longer than the upstream's: the upstream counts a request when
it arrives, not when we sent it, and a few milliseconds of jitter between the two would
otherwise let it see one request too many in its window.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import redis.asyncio as aioredis
import structlog
from limits import parse

log = structlog.get_logger(__name__)
MAX_SLEEP = 1.0
# 3 % of the window: 30 ms for Kommo's second, 1.8 s for Sage's minute; costs 3 % of throughput.
WINDOW_MARGIN = 0.03

# Returns 0 and records the hit when it fits, else the microseconds until the oldest hit leaves.
_ACQUIRE = """
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  return 0
end
local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
return oldest + window - now
"""


class SharedRateLimit:
    def __init__(
        self, redis_url: str, *, rate: str, key: str, margin: float = WINDOW_MARGIN
    ) -> None:
        """`rate` in the `limits` notation, e.g. "7/second" or "200/minute"."""
        item = parse(rate)
        self._limit = item.amount
        self._window_us = round(item.get_expiry() * (1 + margin) * 1_000_000)
        self._key = f"sagebridge:ratelimit:{key}"
        self._redis = aioredis.Redis.from_url(redis_url)
        self._script = self._redis.register_script(_ACQUIRE)

    async def _wait_us(self) -> int:
        args = [self._limit, self._window_us, uuid.uuid4().hex]
        return int(await self._script(keys=[self._key], args=args))

    async def try_acquire(self) -> bool:
        return await self._wait_us() == 0

    async def acquire(self) -> None:
        """Wait until one more request fits in the window, then count it."""
        while (wait_us := await self._wait_us()) > 0:
            wait = min(MAX_SLEEP, wait_us / 1_000_000)
            log.debug("ratelimit.wait", key=self._key, wait_s=round(wait, 3))
            await asyncio.sleep(wait)

    async def on_request(self, _request: httpx.Request) -> None:
        """An httpx request hook: every call made through the client is counted."""
        await self.acquire()

    async def aclose(self) -> None:
        await self._redis.aclose()
