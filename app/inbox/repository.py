"""The inbox's SQL: storing events once, reopening, claiming with a lease, and the queries the
sweeper and ops use. Callers decide when to commit."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from asyncpg import (  # type: ignore[import-untyped]
    InterfaceError,
    InternalClientError,
    PostgresError,
)
from asyncpg.exceptions import PostgresConnectionError  # type: ignore[import-untyped]
from sqlalchemy import (
    JSON,
    BigInteger,
    BindParameter,
    DateTime,
    Integer,
    String,
    Table,
    TypeDecorator,
    bindparam,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.types import TypeEngine

from app.db import as_utc, dialect_name
from app.inbox import lifecycle
from app.inbox.models import (
    ACTIVE_STATES,
    REOPENABLE_STATES,
    DealTask,
    EventState,
    InboxEvent,
    InboxStateCount,
    TaskState,
)
from app.models import utcnow

# Built once, on the Table (Core, not the ORM's bulk-insert machinery): the webhook's hot path
# spent a quarter of its time building and running the ORM form (bench/). Executed with a list
# of rows it is one multi-row INSERT (SQLAlchemy's insertmanyvalues); the dedupe key comes back
# with each new id because rows that conflict return nothing.
_TABLE = cast(Table, InboxEvent.__table__)
_INSERT_EVENTS = {
    name: insert(_TABLE)
    .on_conflict_do_nothing(index_elements=["dedupe_key"])
    .returning(_TABLE.c.id, _TABLE.c.dedupe_key)
    for name, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


@dataclass(frozen=True)
class NewEvent:
    source: str
    dedupe_key: str
    account_id: str
    deal_id: str
    action: str
    pipeline_id: str | None
    status_id: str | None
    responsible_user_id: str | None
    changed_at: int
    state: EventState
    payload: dict[str, Any]
    last_error: str | None = None


class InboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(self, events: list[NewEvent]) -> list[int]:
        """Store each event once (by dedupe key); return the ids that now need a job."""
        return (await self.record_groups([events]))[0]

    async def record_groups(self, groups: list[list[NewEvent]]) -> list[list[int]]:
        return await InboxWriter(self.session).record_groups(groups)

    async def claim(self, event_id: int, *, lease: timedelta) -> InboxEvent | None:
        """Take the event for one worker until the lease ends; None if it is not ours to run."""
        now = utcnow()
        stmt = (
            update(InboxEvent)
            .where(InboxEvent.id == event_id, *_workable(now))
            .values(**lifecycle.claimed(now, lease))
            .returning(InboxEvent.id)
        )
        claimed = (await self.session.execute(stmt)).scalar_one_or_none()
        if claimed is None:
            return None
        await self.session.commit()
        return await self.session.get(InboxEvent, event_id, populate_existing=True)

    async def due(self, *, now: datetime, limit: int = 500) -> list[InboxEvent]:
        """Events a worker should be running now and that no worker holds (for the sweeper)."""
        stmt = select(InboxEvent).where(*_workable(now)).order_by(InboxEvent.id).limit(limit)
        return list((await self.session.scalars(stmt)).all())

    async def get(self, event_id: int) -> InboxEvent | None:
        return await self.session.get(InboxEvent, event_id)

    async def by_dedupe_keys(self, keys: list[str]) -> dict[str, InboxEvent]:
        if not keys:
            return {}
        rows = await self.session.scalars(select(InboxEvent).where(InboxEvent.dedupe_key.in_(keys)))
        return {row.dedupe_key: row for row in rows.all()}

    async def get_many(self, ids: set[int]) -> dict[int, InboxEvent]:
        rows = await self.session.scalars(select(InboxEvent).where(InboxEvent.id.in_(ids)))
        return {row.id: row for row in rows.all()}

    async def for_deal(self, deal_id: str, *, limit: int = 100) -> list[InboxEvent]:
        """The deal's newest events (moves into the stage, payment callbacks), newest first."""
        stmt = (
            select(InboxEvent)
            .where(InboxEvent.deal_id == deal_id)
            .order_by(InboxEvent.id.desc())
            .limit(limit)
        )
        return list((await self.session.scalars(stmt)).all())

    async def list(
        self, *, states: list[str] | None, limit: int, offset: int
    ) -> tuple[list[InboxEvent], int]:
        query = select(InboxEvent)
        if states:
            query = query.where(InboxEvent.state.in_(states))
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.scalars(
            query.order_by(InboxEvent.id.desc()).limit(limit).offset(offset)
        )
        return list(rows.all()), int(total or 0)

    async def oldest_active(self) -> datetime | None:
        stmt = select(func.min(InboxEvent.received_at)).where(
            InboxEvent.state.in_([s.value for s in ACTIVE_STATES])
        )
        value = await self.session.scalar(stmt)
        return as_utc(value)

    async def count_by_state(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        deal_id: str | None = None,
    ) -> dict[str, int]:
        """Events by state; states with none are left out. Unfiltered, from the counts the
        database keeps as events change (migration 0014): counting the events reads them all."""
        if not (since or until or deal_id):
            return await self._kept_counts()
        query = select(InboxEvent.state, func.count()).group_by(InboxEvent.state)
        if deal_id:
            query = query.where(InboxEvent.deal_id == deal_id)
        if since:
            query = query.where(InboxEvent.received_at >= since)
        if until:
            query = query.where(InboxEvent.received_at < until)
        rows = await self.session.execute(query)
        return {state: int(count) for state, count in rows.all()}

    async def _kept_counts(self) -> dict[str, int]:
        total = func.sum(InboxStateCount.n)
        query = select(InboxStateCount.state, total).group_by(InboxStateCount.state)
        rows = await self.session.execute(query.having(total != 0))
        return {state: int(count) for state, count in rows.all()}

    async def compact_state_counts(self) -> None:
        """Fold the counts' rows of changes into one row per state (none for a state at 0), so
        reading them stays quick. Rows that transactions still open are adding stay as they are."""
        if dialect_name(self.session) == "postgresql":
            await self.session.execute(text(_COMPACT_POSTGRESQL))
        else:
            await self._compact_sqlite()

    async def _compact_sqlite(self) -> None:
        # One writer at a time: the DELETE takes the write lock before it reads.
        deleted = delete(InboxStateCount).returning(InboxStateCount.state, InboxStateCount.n)
        totals: Counter[str] = Counter()
        for state, n in (await self.session.execute(deleted)).all():
            totals[state] += n
        rows = [{"state": state, "n": n} for state, n in totals.items() if n]
        if rows:
            await self.session.execute(insert(InboxStateCount), rows)


class InboxWriter:
    """Storing events, on an ORM session or on a bare connection (the webhooks' group commit
    skips the session's machinery: it only inserts, and reopens by UPDATE)."""

    def __init__(self, db: AsyncSession | AsyncConnection) -> None:
        self.db = db

    async def record_groups(self, groups: list[list[NewEvent]]) -> list[list[int]]:
        """Several senders' events in one INSERT; each group gets back its own due ids, as if
        the groups had been recorded one after another (an earlier group's new row makes a
        later group's duplicate a conflict, not a second row)."""
        firsts = first_of_each_key(groups)
        inserted = await self._insert_new(list(firsts.values()))
        return await due_ids(groups, firsts, inserted, self.reopen)

    async def _insert_new(self, events: list[NewEvent]) -> dict[str, int]:
        """The ids of the rows this INSERT created, by dedupe key (conflicts return none)."""
        now = utcnow()
        # In key order: two groups written at once then take the unique index's locks in the
        # same order, so a deal in both cannot deadlock them.
        rows = [_row(new, now) for new in sorted(events, key=lambda e: e.dedupe_key)]
        inserted: dict[str, int] = {}
        for chunk in _power_of_two_chunks(rows):
            result = await self.db.execute(_INSERT_EVENTS[self._dialect], chunk)
            inserted.update({key: event_id for event_id, key in result.all()})
        return inserted

    async def reopen(self, new: NewEvent) -> int | None:
        """A newer move into the trigger stage starts a finished (not invoiced) event over."""
        stmt = (
            update(InboxEvent)
            .where(
                InboxEvent.dedupe_key == new.dedupe_key,
                InboxEvent.state.in_([s.value for s in REOPENABLE_STATES]),
                InboxEvent.changed_at < new.changed_at,
                # Not under a worker's feet: it would save its stale copy over the reopening.
                # A move missed this way is found by reconciliation.
                or_(InboxEvent.lease_until.is_(None), InboxEvent.lease_until < utcnow()),
            )
            .values(
                **lifecycle.reopened(
                    changed_at=new.changed_at,
                    responsible_user_id=new.responsible_user_id,
                    payload=new.payload,
                )
            )
            .returning(InboxEvent.id)
        )
        return (await self.db.execute(stmt)).scalar_one_or_none()

    @property
    def _dialect(self) -> str:
        if isinstance(self.db, AsyncConnection):
            return self.db.dialect.name
        return dialect_name(self.db)


Reopen = Callable[[NewEvent], Awaitable[int | None]]


def first_of_each_key(groups: list[list[NewEvent]]) -> dict[str, NewEvent]:
    """The event each dedupe key is inserted as: its first, in the groups' order."""
    firsts: dict[str, NewEvent] = {}
    for new in (new for group in groups for new in group):
        firsts.setdefault(new.dedupe_key, new)
    return firsts


async def due_ids(
    groups: list[list[NewEvent]],
    firsts: dict[str, NewEvent],
    inserted: dict[str, int],
    reopen: Reopen,
) -> list[list[int]]:
    """Each group's ids now due: its new pending rows, and the finished events a newer pending
    move reopened (`reopen` runs only for pending events whose key was already stored).

    The reopens run in key order, as the INSERT writes its rows: two writers' groups reopening
    the same deals in opposite orders would otherwise wait on each other's row locks until
    PostgreSQL broke the deadlock with a 503 for one of them."""
    found: dict[tuple[int, int], int | None] = {}
    for at, new in _pending(groups):
        found[at] = inserted.get(new.dedupe_key) if firsts[new.dedupe_key] is new else None
    for at, new in sorted(_pending(groups), key=lambda item: item[1].dedupe_key):
        if found[at] is None:  # stable sort: one key's events are reopened in arrival order
            found[at] = await reopen(new)
    due: list[list[int]] = [[] for _ in groups]
    for (group, _), event_id in found.items():
        if event_id is not None:
            due[group].append(event_id)
    return due


def _pending(groups: list[list[NewEvent]]) -> Iterator[tuple[tuple[int, int], NewEvent]]:
    """Each pending event with its place: (group, position in the group)."""
    for g, group in enumerate(groups):
        for i, new in enumerate(group):
            if new.state == EventState.PENDING:
                yield (g, i), new


class UnnestInsert:
    """PostgreSQL on asyncpg: the new events as one prepared `INSERT … SELECT FROM unnest(one
    array per column) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key`, sent on
    the driver's connection. One statement text whatever the number of rows, and one round
    trip: through SQLAlchemy's execution machinery the webhooks' INSERT, BEGIN and COMMIT
    cost about 0.6 ms of the API's CPU per group (bench/). Being one statement, it is atomic
    on its own, so it needs no transaction around it."""

    def __init__(self) -> None:
        columns = list(_row(_SAMPLE, utcnow()))
        arrays, values = [], []
        for number, name in enumerate(columns, start=1):
            array_type, value = _unnested(name, _TABLE.c[name].type)
            arrays.append(f"${number}::{array_type}[]")
            values.append(value)
        names = ", ".join(columns)
        self.columns = columns
        # Built from the table's own column names and types, never from input.
        self.sql = (
            f"INSERT INTO {_TABLE.name} ({names}) SELECT {', '.join(values)}"  # noqa: S608
            f" FROM unnest({', '.join(arrays)}) AS new ({names})"
            " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key"
        )

    async def __call__(self, conn: AsyncConnection, events: list[NewEvent]) -> dict[str, int]:
        """The ids of the rows it created, by dedupe key, on `conn`'s asyncpg connection
        (asyncpg prepares the text once per connection and keeps it). Its errors come out as
        SQLAlchemy's would, and a connection that broke is dropped from the pool."""
        if not events:
            return {}
        now = utcnow()
        # In key order, as `InboxWriter` writes them (two groups cannot deadlock).
        rows = [_row(new, now) for new in sorted(events, key=lambda e: e.dedupe_key)]
        arrays = [[row[name] for row in rows] for name in self.columns]
        payload = self.columns.index("payload")
        arrays[payload] = [json.dumps(value) for value in arrays[payload]]
        driver: Any = (await conn.get_raw_connection()).driver_connection
        try:
            records = await driver.fetch(self.sql, *arrays)
        except (PostgresConnectionError, InterfaceError, InternalClientError, OSError) as exc:
            # InternalClientError: the protocol's state is broken, e.g. the server's FATAL
            # ("terminating connection") read before its hang-up; SQLAlchemy's own asyncpg
            # dialect also turns it into a DBAPIError.
            await conn.invalidate(exc)
            raise DBAPIError(self.sql, None, exc, connection_invalidated=True) from exc
        except PostgresError as exc:  # refused by the server; the connection is fine
            raise DBAPIError(self.sql, None, exc) from exc
        return {key: event_id for event_id, key in records}


def _unnested(name: str, column_type: TypeEngine[Any]) -> tuple[str, str]:
    """A column's array type in `UnnestInsert`, and how the SELECT hands its value on. Strings
    go as text, not as varchar(n): an explicit cast to varchar(n) would cut a long value short
    in silence, where assigning text to the column refuses it, as the ORM's INSERT would."""
    if isinstance(column_type, JSON):
        return "text", f"{name}::json"  # serialized here as SQLAlchemy would, parsed there
    if isinstance(column_type, String):
        return "text", name
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    if isinstance(column_type, DateTime) and column_type.timezone:
        return "timestamptz", name
    if isinstance(column_type, BigInteger):
        return "bigint", name
    if isinstance(column_type, Integer):
        return "integer", name
    raise TypeError(f"inbox_events.{name}: no array type for {column_type!r}")


class DealTaskRepository:
    """The tasks the bridge opened, by deal."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def open_for(
        self, *, crm: str, account_id: str, deal_id: str, reason: str | None = None
    ) -> list[DealTask]:
        """The deal's tasks not known to be completed, oldest first (one reason, or all)."""
        stmt = select(DealTask).where(
            DealTask.crm == crm,
            DealTask.account_id == account_id,
            DealTask.deal_id == deal_id,
            DealTask.completed_at.is_(None),
        )
        if reason is not None:
            stmt = stmt.where(DealTask.reason == reason)
        return list((await self.session.scalars(stmt.order_by(DealTask.id))).all())

    def add(self, task: DealTask) -> None:
        self.session.add(task)


# One statement, so one snapshot: what it deletes is exactly what it sums.
_COMPACT_POSTGRESQL = """
WITH gone AS (DELETE FROM inbox_state_counts RETURNING state, n)
INSERT INTO inbox_state_counts (state, n)
SELECT state, sum(n) FROM gone GROUP BY state HAVING sum(n) <> 0
"""


def _power_of_two_chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """13 rows as 8 + 4 + 1. Each multi-row INSERT's text depends on its row count, and asyncpg
    prepares and keeps each text per connection: a few shapes, not one per group size, keep
    the API's memory flat (bench/footprint.py's growth run)."""
    start = 0
    while start < len(rows):
        size = 1 << ((len(rows) - start).bit_length() - 1)
        yield rows[start : start + size]
        start += size


_SAMPLE = NewEvent("", "", "", "", "", None, None, None, 0, EventState.PENDING, {})


def _row(new: NewEvent, now: datetime) -> dict[str, Any]:
    return {
        "source": new.source,
        "dedupe_key": new.dedupe_key,
        "account_id": new.account_id,
        "deal_id": new.deal_id,
        "action": new.action,
        "pipeline_id": new.pipeline_id,
        "status_id": new.status_id,
        "responsible_user_id": new.responsible_user_id,
        "changed_at": new.changed_at,
        **lifecycle.arrived(new.state, now),
        "last_error": new.last_error,
        "payload": new.payload,
        "received_at": now,
        "updated_at": now,
    }


def _workable(now: datetime) -> list[Any]:
    """Due (work or a task to open), and not held by a live lease. The states are SQL literals,
    not parameters, so PostgreSQL matches them to the partial index `ix_inbox_events_workable`
    in every plan (a generic plan for parameters walks the whole primary key instead)."""
    return [
        or_(
            InboxEvent.state.in_(_literal(s.value for s in ACTIVE_STATES)),
            InboxEvent.task_state == literal(TaskState.PENDING.value, literal_execute=True),
        ),
        or_(InboxEvent.next_attempt_at.is_(None), InboxEvent.next_attempt_at <= now),
        or_(InboxEvent.lease_until.is_(None), InboxEvent.lease_until < now),
    ]


def _literal(values: Iterable[str]) -> BindParameter[Any]:
    return bindparam("workable_states", list(values), expanding=True, literal_execute=True)
