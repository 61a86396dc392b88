"""Sliding-window rate limiter, one window per key (integration token, Sage business…)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field


class RateLimit(BaseModel):
    """At most ``limit`` requests in any ``window_seconds``; ``enabled=False`` switches it off."""

    model_config = ConfigDict(frozen=True)

    limit: int = Field(ge=1)
    window_seconds: float = Field(gt=0)
    enabled: bool = True


class SlidingWindowLimiter:
    """Counts accepted requests per key in a sliding window (rejected ones do not count)."""

    def __init__(self, rule: RateLimit | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._rule = rule
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @property
    def rule(self) -> RateLimit | None:
        return self._rule

    def configure(self, rule: RateLimit | None) -> None:
        with self._lock:
            self._rule = rule
            self._hits.clear()

    def acquire(self, key: str) -> float | None:
        """Record a request for ``key``; ``None`` if allowed, else seconds until a slot frees."""
        rule = self._rule
        if rule is None or not rule.enabled:
            return None
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - rule.window_seconds:
                hits.popleft()
            if len(hits) >= rule.limit:
                return hits[0] + rule.window_seconds - now
            hits.append(now)
        return None


def retry_after_header(wait_seconds: float) -> str:
    """Retry-After carries whole seconds; round up so a client that obeys it is let through."""
    return str(max(1, math.ceil(wait_seconds)))
