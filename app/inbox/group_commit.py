"""Group commit: webhooks that arrive together are stored in one transaction.

Each webhook still hears "yes" only after the transaction holding its rows has committed, and a
transaction that fails answers every webhook in it with a 503 (Kommo retries each) and stores
none of them. What the group saves is the per-request cost of a transaction: one session, one
multi-row INSERT, one COMMIT and one Redis round trip for the jobs, shared by every webhook that
arrived within `window_s` of the first (or while the previous group was being written).

On PostgreSQL (asyncpg) the group's new rows are one `UnnestInsert` statement, atomic without a
transaction around it; only reopening an already stored event needs one, after it (see
`_commit_unnest` for what a failure there means).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.errors import ServiceUnavailable
from app.inbox.intake import Events
from app.inbox.repository import (
    InboxWriter,
    NewEvent,
    UnnestInsert,
    due_ids,
    first_of_each_key,
)
from app.queue import Queue

log = structlog.get_logger(__name__)

# Long enough for webhooks arriving together to share a transaction (at 600/s, 2 ms gave 0.93 ms
# of API CPU per webhook, 5 ms 0.75 ms), short against Kommo's 2 s and the 25 ms p99 the ingest
# benchmark asks for.
WINDOW_S = 0.005
# Bounds one INSERT (each webhook carries at most 500 entries, usually one).
MAX_MEMBERS = 256
# Groups written at once: while one waits for its COMMIT (an fsync), the next can be collected
# and written, so a slow commit does not hold up everything behind it.
WRITERS = 2


@dataclass
class _Member:
    events: Events
    retry_hint: str
    done: asyncio.Future[list[int]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def resolve(self, due: list[int]) -> None:
        if not self.done.done():  # a sender that hung up no longer waits
            self.done.set_result(due)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class GroupCommit:
    """`accept` for webhooks arriving concurrently: store, commit, enqueue, then answer."""

    def __init__(
        self,
        engine: AsyncEngine,
        queue: Queue,
        *,
        window_s: float = WINDOW_S,
        max_members: int = MAX_MEMBERS,
    ) -> None:
        self._engine = engine
        # asyncpg is the driver the bridge's PostgreSQL URLs name; any other goes the ORM's way.
        self._unnest = UnnestInsert() if engine.dialect.driver == "asyncpg" else None
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # Connections the writers keep between groups (at most one each): taking one from the
        # pool and giving it back cost more CPU per group than its INSERT (bench/).
        self._idle: list[AsyncConnection] = []
        self._queue = queue
        self._window_s = window_s
        self._max_members = max_members
        self._waiting: list[_Member] = []
        # Writers running, and whether one is still collecting its group (inside its window).
        # Both change only between awaits, so a sender never waits with no writer to take it.
        self._writers = 0
        self._collecting = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def accept(self, events: Events, *, retry_hint: str) -> list[int]:
        """The ids now due, once committed; a 503 naming `retry_hint` if the store failed."""
        member = _Member(events, retry_hint)
        self._waiting.append(member)
        if not self._collecting and self._writers < WRITERS:
            self._writers += 1
            self._collecting = True
            task = asyncio.create_task(self._write_all())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await member.done

    async def close(self) -> None:
        """Let the groups being written finish (their senders are waiting for the answer)."""
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks)
        while self._idle:
            await self._idle.pop().close()

    async def _write_all(self) -> None:
        collecting = True
        try:
            await asyncio.sleep(self._window_s)
            self._collecting = collecting = False
            while self._waiting:
                group = self._waiting[: self._max_members]
                del self._waiting[: self._max_members]
                await self._write(group)
        finally:
            if collecting:  # cancelled in its window (shutdown)
                self._collecting = False
            self._writers -= 1

    async def _write(self, group: list[_Member]) -> None:
        try:
            due = await self._commit(group)
        except (SQLAlchemyError, OSError) as exc:
            log.error("inbox.store_failed", error=type(exc).__name__, webhooks=len(group))
            for member in group:
                member.fail(_unavailable(member.retry_hint, exc))
            return
        except Exception as exc:  # anything else is each sender's error, as it would be alone
            for member in group:
                member.fail(exc)
            return
        await self._queue.enqueue_events([event_id for ids in due for event_id in ids])
        for member, ids in zip(group, due, strict=True):
            member.resolve(ids)

    async def _commit(self, group: list[_Member]) -> list[list[int]]:
        plain = [m.events for m in group if isinstance(m.events, Sequence)]
        if self._unnest is not None and len(plain) == len(group):
            return await self._commit_unnest([list(events) for events in plain])
        return await self._commit_in_transaction(group)

    async def _commit_unnest(self, groups: list[list[NewEvent]]) -> list[list[int]]:
        """PostgreSQL: the group's new rows in one statement on the driver's connection (atomic
        alone: no BEGIN, no COMMIT). A pending event whose key is already stored may reopen a
        finished one, in a transaction of its own opened only then. If that fails, the group
        hears 503 although its new rows are stored: Kommo's retry finds them (duplicates) and
        the sweeper runs those that are due."""
        firsts = first_of_each_key(groups)
        inserted = await self._insert_unnest(list(firsts.values()))
        async with contextlib.AsyncExitStack() as transaction:
            writer: InboxWriter | None = None

            async def reopen(new: NewEvent) -> int | None:
                nonlocal writer
                if writer is None:
                    writer = InboxWriter(
                        await transaction.enter_async_context(self._engine.begin())
                    )
                return await writer.reopen(new)

            return await due_ids(groups, firsts, inserted, reopen)

    async def _insert_unnest(self, events: list[NewEvent]) -> dict[str, int]:
        assert self._unnest is not None
        conn = self._idle.pop() if self._idle else await self._autocommit.connect()
        try:
            inserted = await self._unnest(conn, events)
        except BaseException:
            await conn.close()  # after a failure (a broken connection, say), not kept
            raise
        self._idle.append(conn)
        return inserted

    async def _commit_in_transaction(self, group: list[_Member]) -> list[list[int]]:
        """On a bare connection: an ORM session (its identity map, its transaction bookkeeping)
        is opened only for a webhook whose events need a query first (a cancellation)."""
        async with self._engine.begin() as conn:
            session: AsyncSession | None = None
            try:
                stored = []
                for member in group:
                    if isinstance(member.events, Sequence):
                        stored.append(list(member.events))
                        continue
                    session = session or _joining(conn)
                    stored.append(list(await member.events(session)))
            finally:
                if session is not None:
                    await session.close()
            return await InboxWriter(conn).record_groups(stored)


def _joining(conn: AsyncConnection) -> AsyncSession:
    """A session inside the connection's transaction (closing it leaves that to commit)."""
    return AsyncSession(bind=conn, expire_on_commit=False)


def _unavailable(retry_hint: str, cause: BaseException) -> ServiceUnavailable:
    error = ServiceUnavailable(
        f"the event could not be stored (database unavailable); {retry_hint}"
    )
    error.__cause__ = cause
    return error
