"""The inbox's counts by state, kept by the database's triggers (migration 0014), agree with the
events themselves after every kind of change the bridge makes, whichever code makes it; folding
them (the sweeper's compaction) changes no count, and on PostgreSQL neither do writers and a
compaction running at once."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
from arq.connections import ArqRedis
from httpx import AsyncClient
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.sql import Executable

from app.bridge import Bridge
from app.inbox import ops
from app.inbox.models import EventState, InboxEvent, InboxStateCount
from app.inbox.repository import InboxRepository, InboxWriter, NewEvent
from app.queue import Queue
from app.settings import Settings
from app.workers.main import compact_state_counts
from tests.conftest import WEBHOOK_SECRET
from tests.helpers import (
    Scheduled,
    lead_entry,
    moved,
    record_trigger,
    run_event,
    status_webhook,
)
from tests.upstreams import Upstreams

Maker = async_sessionmaker[AsyncSession]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
LATER = 1_760_000_100  # a newer move than lead_entry's default updated_at


async def record_groups(engine: AsyncEngine, *groups: list[NewEvent]) -> None:
    """As the webhooks' group commit stores them: one transaction on a bare connection."""
    async with engine.begin() as conn:
        await InboxWriter(conn).record_groups(list(groups))


async def counts_agree(sessionmaker: Maker) -> dict[str, int]:
    """The kept counts, once checked against a count of the events themselves."""
    async with sessionmaker() as session:
        return await _counts_agree(session)


async def _counts_agree(session: AsyncSession) -> dict[str, int]:
    kept = await InboxRepository(session).count_by_state()
    rows = await session.execute(select(InboxEvent.state, func.count()).group_by(InboxEvent.state))
    assert kept == {state: count for state, count in rows.all()}
    return kept


async def kept_rows(sessionmaker: Maker) -> list[str]:
    """The states of the counts' rows, one per row."""
    async with sessionmaker() as session:
        return list((await session.scalars(select(InboxStateCount.state))).all())


async def event_id(sessionmaker: Maker, deal_id: int) -> int:
    async with sessionmaker() as session:
        found = await session.scalar(
            select(InboxEvent.id).where(InboxEvent.deal_id == str(deal_id))
        )
    assert found is not None
    return found


async def execute(sessionmaker: Maker, statement: Executable) -> None:
    async with sessionmaker() as session:
        await session.execute(statement)
        await session.commit()


async def test_the_counts_follow_every_change_whichever_code_makes_it(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    queue: ArqRedis,
    bridge: tuple[Bridge, Scheduled],
    upstreams: Upstreams,
) -> None:
    upstreams.kommo.add_lead(1, products=[(102, 1)])
    engine = sessionmaker.kw["bind"]

    # One multi-row INSERT … ON CONFLICT: deal 1 twice (the second a conflict), a skipped move.
    await record_groups(engine, moved(1), moved(2) + moved(3, status_id=502), moved(1))
    await record_groups(engine, moved(2), moved(3, status_id=502))  # conflicts only
    assert await counts_agree(sessionmaker) == {"pending": 2, "skipped": 1}

    hook = status_webhook(lead_entry(4), lead_entry(2))
    response = await client.post(f"/webhooks/kommo/{WEBHOOK_SECRET}", content=hook, headers=FORM)
    assert response.status_code == 200
    assert await counts_agree(sessionmaker) == {"pending": 3, "skipped": 1}

    first = await event_id(sessionmaker, 1)
    assert await run_event(sessionmaker, bridge[0], first) == "invoiced"  # the runner's ORM
    assert await counts_agree(sessionmaker) == {"pending": 2, "invoiced": 1, "skipped": 1}

    assert await record_trigger(sessionmaker, settings, 1, updated_at=LATER) == first  # reopened
    assert await counts_agree(sessionmaker) == {"pending": 3, "skipped": 1}

    before = await kept_rows(sessionmaker)
    async with sessionmaker() as session:  # an UPDATE that moves no event writes no count
        assert await InboxRepository(session).claim(first, lease=timedelta(minutes=5))
    assert await kept_rows(sessionmaker) == before

    async with sessionmaker() as session:
        await ops.discard(session, await event_id(sessionmaker, 2), "invoiced by hand")
        await ops.replay(session, Queue(queue), await event_id(sessionmaker, 3))
    assert await counts_agree(sessionmaker) == {"pending": 3, "discarded": 1}

    await _a_bulk_update_and_a_rolled_back_one(sessionmaker)
    await _deletes(sessionmaker)
    if engine.dialect.name == "postgresql":
        await _truncate(sessionmaker)


async def _a_bulk_update_and_a_rolled_back_one(sessionmaker: Maker) -> None:
    # One UPDATE over four events: one stays discarded, three move.
    await execute(sessionmaker, update(InboxEvent).values(state=EventState.DISCARDED.value))
    assert await counts_agree(sessionmaker) == {"discarded": 4}
    await execute(
        sessionmaker,
        update(InboxEvent).where(InboxEvent.deal_id.in_(["1", "2"])).values(state="failed"),
    )
    assert await counts_agree(sessionmaker) == {"discarded": 2, "failed": 2}

    async with sessionmaker() as session:
        await session.execute(update(InboxEvent).values(state=EventState.KEPT.value))
        assert await _counts_agree(session) == {"kept": 4}  # the transaction sees its own
        await session.rollback()
    assert await counts_agree(sessionmaker) == {"discarded": 2, "failed": 2}


async def _deletes(sessionmaker: Maker) -> None:
    engine = sessionmaker.kw["bind"]
    await record_groups(engine, moved(5) + moved(6, status_id=502))
    # Deal 4's event and the two new ones: nothing refers to them (no log, task or invoice).
    await execute(sessionmaker, delete(InboxEvent).where(InboxEvent.deal_id.in_(["4", "5", "6"])))
    assert await counts_agree(sessionmaker) == {"discarded": 1, "failed": 2}


async def _truncate(sessionmaker: Maker) -> None:
    await execute(sessionmaker, text("TRUNCATE inbox_events CASCADE"))
    assert await counts_agree(sessionmaker) == {}
    assert await kept_rows(sessionmaker) == []
    await record_groups(sessionmaker.kw["bind"], moved(7))
    assert await counts_agree(sessionmaker) == {"pending": 1}


async def test_compaction_leaves_one_row_per_state_and_every_count_as_it_was(
    sessionmaker: Maker,
) -> None:
    engine = sessionmaker.kw["bind"]
    for deal in range(1, 9):
        await record_groups(engine, moved(deal), moved(deal, status_id=502))
    await execute(
        sessionmaker,
        update(InboxEvent).where(InboxEvent.state == "pending").values(state="invoiced"),
    )
    await execute(
        sessionmaker, update(InboxEvent).where(InboxEvent.deal_id == "1").values(state="failed")
    )
    counts = await counts_agree(sessionmaker)
    assert counts == {"invoiced": 7, "failed": 2, "skipped": 7}
    assert len(await kept_rows(sessionmaker)) > len(counts)

    await compact_state_counts(sessionmaker)

    assert await counts_agree(sessionmaker) == counts
    assert sorted(await kept_rows(sessionmaker)) == sorted(counts)  # pending, at 0, has none
    await record_groups(engine, moved(9))
    assert await counts_agree(sessionmaker) == {**counts, "pending": 1}


WRITERS = 4
ROUNDS = 25
DEALS = 60


async def test_concurrent_writers_and_compactions_end_with_exact_counts(
    sessionmaker: Maker,
) -> None:
    """Writers on connections of their own insert overlapping events (conflicts, waits on each
    other's uncommitted rows), move and delete theirs, while compactions run in between."""
    engine = sessionmaker.kw["bind"]
    if engine.dialect.name != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL (TEST_DATABASE_URL); SQLite has one")
    done = asyncio.Event()

    async def compact_until_done() -> int:
        runs = 0
        while not done.is_set():
            await compact_state_counts(sessionmaker)
            runs += 1
            await asyncio.sleep(0.005)
        return runs

    compactor = asyncio.create_task(compact_until_done())
    await asyncio.gather(*(_write(engine, writer) for writer in range(WRITERS)))
    done.set()

    assert await compactor > 1
    counts = await counts_agree(sessionmaker)
    assert sum(counts.values()) > 0
    await compact_state_counts(sessionmaker)
    assert await counts_agree(sessionmaker) == counts
    assert sorted(await kept_rows(sessionmaker)) == sorted(counts)


async def _write(engine: AsyncEngine, writer: int) -> None:
    """Rounds of inserts of any deal's events, and moves and deletes of this writer's own deals
    (deal % WRITERS == writer), so the writers' row locks never cross into a deadlock."""
    pick = random.Random(writer)
    states = [s.value for s in EventState]
    mine = [str(d) for d in range(DEALS) if d % WRITERS == writer]
    for _ in range(ROUNDS):
        deals = pick.sample(range(DEALS), 6)
        await record_groups(engine, *(moved(d, status_id=pick.choice((502, 503))) for d in deals))
        async with engine.begin() as conn:
            some = pick.sample(mine, 5)
            await conn.execute(
                update(InboxEvent)
                .where(InboxEvent.deal_id.in_(some))
                .values(state=pick.choice(states))
            )
            if pick.random() < 0.2:
                await conn.execute(
                    delete(InboxEvent).where(InboxEvent.deal_id == pick.choice(mine))
                )
