"""Client-side rate limits, shared by every process through Redis, so upstreams never say 429.

Kommo allows 7 requests/s per integration and Sage about 200/min per business (both
configurable). The `limits` package keeps a moving window in Redis; a request that would exceed
it waits for the window to move instead of being sent.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import structlog
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

log = structlog.get_logger(__name__)
MAX_SLEEP = 1.0


class SharedRateLimit:
    def __init__(self, redis_url: str, *, rate: str, key: str) -> None:
        """`rate` in the `limits` notation, e.g. "7/second" or "200/minute"."""
        storage = RedisStorage(_limits_url(redis_url), implementation="redispy")
        self._limiter = MovingWindowRateLimiter(storage)
        self._item: RateLimitItem = parse(rate)
        self._key = key

    async def try_acquire(self) -> bool:
        return await self._limiter.hit(self._item, "sagebridge", self._key)

    async def acquire(self) -> None:
        """Wait until one more request fits in the window, then count it."""
        while not await self.try_acquire():
            stats = await self._limiter.get_window_stats(self._item, "sagebridge", self._key)
            wait = min(MAX_SLEEP, max(0.01, stats.reset_time - time.time()))
            log.debug("ratelimit.wait", key=self._key, wait_s=round(wait, 3))
            await asyncio.sleep(wait)

    async def on_request(self, _request: httpx.Request) -> None:
        """An httpx request hook: every call made through the client is counted."""
        await self.acquire()


def _limits_url(redis_url: str) -> str:
    scheme, rest = redis_url.split("://", 1)
    return f"async+{scheme}://{rest}"
