"""Coalesced Kommo calls (the DataLoader pattern): concurrent jobs' requests of one kind wait
together for the next rate-limit slot and go out as one request, each caller getting back its
own result or its own error.

A lone caller does not wait for company: when a slot is free its request goes out at once (one
loop tick later). Only when the budget is spent do requests pile up, and then they leave together
at the next slot, so the busier the bridge, the fuller each request.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# What one batch's request answers: per item, in the items' order, its result or its error.
Send = Callable[[list[T]], Awaitable[Sequence[R | Exception]]]
Ready = Callable[[], Awaitable[None]]


async def no_wait() -> None:
    """Without a shared rate limit (one-off scripts, some tests) every slot is free."""


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    context: contextvars.Context  # the caller's: its deal's sync log and log fields


@dataclass
class Batcher(Generic[T, R]):
    """Gathers `load(item)` calls into batches of at most `max_size` for `send`.

    `distinct` names what may appear once per batch (a lead's id for a write: two changes to one
    lead go in two requests, in the order they were asked for); None: anything may repeat. An
    item whose key is in a batch still being answered waits for that answer (retries included),
    so a later change never reaches Kommo before an earlier one and is overwritten by it.
    """

    send: Send[T, R]
    ready: Ready = no_wait
    max_size: int = 50
    distinct: Callable[[T], Hashable] | None = None
    _queue: list[_Waiting[T, R]] = field(default_factory=list)
    _flusher: asyncio.Task[None] | None = None
    _sending: set[asyncio.Task[None]] = field(default_factory=set)
    _in_flight: set[Hashable] = field(default_factory=set)  # `distinct` keys being answered

    async def load(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(item, future, contextvars.copy_context()))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._queue:
            await asyncio.sleep(0)  # callers scheduled in the same tick join this batch
            try:
                await self.ready()
            except Exception as exc:  # the limit cannot be read (Redis down): nobody may wait on
                for waiting in self._queue:
                    _settle(waiting.future, exc)
                self._queue = []
                return
            batch = self._take()
            if not batch and self._sending:
                # All that waits is a second change to a lead whose first is being answered.
                # Until one answer is in, a newcomer for another lead waits too (one request's
                # time, for what is rare: two write-backs to one deal at once).
                await asyncio.wait(set(self._sending), return_when=asyncio.FIRST_COMPLETED)
            if batch:  # sent in the background: the next batch waits for a slot, not for this
                # A lone caller's request is noted in its own deal's sync log, as before; a
                # shared one in no deal's, rather than in one deal's for all of them.
                context = batch[0].context if len(batch) == 1 else contextvars.Context()
                keys = {self.distinct(w.item) for w in batch} if self.distinct else set()
                self._in_flight |= keys  # from now, not from when the task first runs
                task = asyncio.create_task(self._answer(batch, keys), context=context)
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    def _take(self) -> list[_Waiting[T, R]]:
        """The oldest waiting items, at most one per `distinct` key; cancelled callers dropped."""
        batch: list[_Waiting[T, R]] = []
        kept: list[_Waiting[T, R]] = []
        seen: set[Hashable] = set(self._in_flight)
        for waiting in self._queue:
            if waiting.future.done():
                continue
            key = self.distinct(waiting.item) if self.distinct else None
            if len(batch) >= self.max_size or (key is not None and key in seen):
                kept.append(waiting)
                continue
            seen.add(key)
            batch.append(waiting)
        self._queue = kept
        return batch

    async def _answer(self, batch: list[_Waiting[T, R]], keys: set[Hashable]) -> None:
        try:
            results = await self.send([w.item for w in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except Exception as exc:  # the request itself failed: every caller in it gets the error
            for waiting in batch:
                _settle(waiting.future, exc)
            return
        finally:
            self._in_flight -= keys
        for waiting, result in zip(batch, results, strict=True):
            _settle(waiting.future, result)


def _settle(future: asyncio.Future[R], result: R | Exception) -> None:
    if future.done():  # the caller was cancelled (its job timed out) meanwhile
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
