"""Sending webhooks as Kommo does (form bodies, 2 s patience), at a bounded concurrency, and
recording every answer: who was in the body, the status, how long it took."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

FORM = {
    "Content-Type": "application/x-www-form-urlencoded",
    "User-Agent": "amoCRM-WebHook-client/1.0",
}


@dataclass(frozen=True)
class Hook:
    """One webhook body and the deals in it (`trigger`: the ones moved to Raise Invoice)."""

    body: str
    trigger: tuple[int, ...] = ()
    other: tuple[int, ...] = ()


@dataclass
class Answer:
    hook: Hook
    status: int | None
    error: str | None
    sent_at: float  # time.monotonic()
    seconds: float

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Sender:
    """Posts hooks to the bridge; `answers` keeps every outcome in order of completion."""

    url: str
    timeout: float = 5.0
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
        self._http = httpx.AsyncClient(timeout=self.timeout, limits=limits)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(self, hook: Hook) -> Answer:
        started = time.monotonic()
        try:
            response = await self._http.post(self.url, content=hook.body, headers=FORM)
            answer = Answer(hook, response.status_code, None, started, time.monotonic() - started)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
            answer = Answer(hook, None, error, started, time.monotonic() - started)
        self.answers.append(answer)
        return answer

    async def send_all(self, hooks: Iterable[Hook], *, concurrency: int) -> list[Answer]:
        """Every hook once, at most `concurrency` in flight; bounded by the list's length."""
        queue: asyncio.Queue[Hook] = asyncio.Queue()
        for hook in hooks:
            queue.put_nowait(hook)
        results: list[Answer] = []

        async def worker() -> None:
            while not queue.empty():
                results.append(await self.send(queue.get_nowait()))

        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        return results


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]
