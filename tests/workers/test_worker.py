"""Delivery with a real Redis and real arq workers: Redis is a courier, the inbox is the record."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from httpx import AsyncClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from app.db import create_engine, create_sessionmaker
from app.inbox.models import InboxEvent, InboxStateCount
from app.inbox.repository import InboxRepository
from app.models import utcnow
from app.queue import QUEUE_NAME, Queue
from app.settings import Settings
from app.workers.main import build_worker, compact_state_counts
from tests.conftest import WEBHOOK_SECRET
from tests.helpers import lead_entry, record_trigger, record_webhook, status_webhook
from tests.upstreams import Kommo, Sage

Maker = async_sessionmaker[AsyncSession]
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def kommo(kommo: Kommo) -> Kommo:
    """Deals 1-3 with a Widget each; the worker's own clients, built at its start-up, reach the
    sandbox through the routes tests/upstreams.py sets."""
    for lead_id in (1, 2, 3):
        kommo.add_lead(lead_id, products=[(102, 1)])
    return kommo


async def run_worker_until_idle(settings: Settings) -> None:
    worker = build_worker(settings, burst=True, poll_delay=0.05)
    try:
        await worker.main()
    finally:
        await worker.close()


async def states(sessionmaker: Maker) -> dict[str, str]:
    async with sessionmaker() as session:
        rows = await session.scalars(select(InboxEvent))
        return {row.deal_id: row.state for row in rows}


async def test_webhook_to_invoice_through_the_real_queue(
    client: AsyncClient, settings: Settings, sessionmaker: Maker, kommo: Kommo, sage: Sage
) -> None:
    body = status_webhook(lead_entry(1), lead_entry(2))
    assert (
        await client.post(f"/webhooks/kommo/{WEBHOOK_SECRET}", content=body, headers=FORM)
    ).status_code == 200

    await run_worker_until_idle(settings)

    assert await states(sessionmaker) == {"1": "invoiced", "2": "invoiced"}
    assert sorted(i.reference or "" for i in sage.invoices) == ["KOMMO-1", "KOMMO-2"]
    # Two jobs at once may share one batch PATCH /api/v4/leads (app/clients/kommo/coalesce.py).
    batched = {item["id"] for batch in kommo.batch_patches for item in batch}
    assert {lead for lead, _ in kommo.patches} | batched == {1, 2}


async def test_redis_flushed_after_the_2xx_the_sweeper_still_gets_the_invoice_made(
    client: AsyncClient,
    settings: Settings,
    sessionmaker: Maker,
    queue: ArqRedis,
    kommo: Kommo,
    sage: Sage,
) -> None:
    body = status_webhook(lead_entry(3))
    response = await client.post(f"/webhooks/kommo/{WEBHOOK_SECRET}", content=body, headers=FORM)
    assert response.json()["queued"] == 1

    await queue.flushdb()
    assert await queue.queued_jobs(queue_name=QUEUE_NAME) == []
    await run_worker_until_idle(settings)  # its sweeper runs at start-up

    assert await states(sessionmaker) == {"3": "invoiced"}
    assert [i.reference for i in sage.invoices] == ["KOMMO-3"]


async def test_an_event_held_by_a_dead_worker_is_picked_up_once_its_lease_ends(
    settings: Settings, sessionmaker: Maker, queue: ArqRedis, kommo: Kommo, sage: Sage
) -> None:
    event_id = await record_trigger(sessionmaker, settings, 1)
    async with sessionmaker() as session:  # a worker claimed it, then died: no job left in Redis
        await session.execute(
            update(InboxEvent)
            .where(InboxEvent.id == event_id)
            .values(lease_until=utcnow() + timedelta(minutes=5))
        )
        await session.commit()
    await run_worker_until_idle(settings)
    assert await states(sessionmaker) == {"1": "pending"}  # still leased: nobody touches it

    async with sessionmaker() as session:
        await session.execute(
            update(InboxEvent)
            .where(InboxEvent.id == event_id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    await run_worker_until_idle(settings)

    assert await states(sessionmaker) == {"1": "invoiced"}
    assert len(sage.invoices) == 1


async def test_enqueueing_a_live_job_again_is_refused(queue: ArqRedis) -> None:
    assert await Queue(queue).enqueue_event(99, 0) is True
    assert await Queue(queue).enqueue_event(99, 0) is False
    assert await Queue(queue).enqueue_event(99, 1) is True


def test_a_killed_workers_job_becomes_visible_again_within_the_recovery_bound(
    settings: Settings,
) -> None:
    worker = build_worker(settings)
    # arq hides a started job for job_timeout + 10 s; the sweeper runs every 15 s after that.
    assert worker.in_progress_timeout_s + settings.sweeper_interval_seconds <= 60


async def test_the_sweeper_folds_the_inbox_counts_into_a_row_per_state(
    settings: Settings, sessionmaker: Maker, kommo: Kommo
) -> None:
    for lead_id in (1, 2, 3):  # moves into another stage: nothing for the worker to run
        await record_webhook(
            sessionmaker, settings, status_webhook(lead_entry(lead_id, status_id=502))
        )
    assert await count_rows(sessionmaker) == ["skipped"] * 3

    await run_worker_until_idle(settings)  # its sweeper runs at start-up

    assert await count_rows(sessionmaker) == ["skipped"]
    async with sessionmaker() as session:
        assert await InboxRepository(session).count_by_state() == {"skipped": 3}


async def test_a_compaction_that_fails_is_logged_and_raises_nothing(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'not-migrated.db'}")
    with capture_logs() as logs:
        await compact_state_counts(create_sessionmaker(engine))
    await engine.dispose()

    failed = [(e["event"], e["error"]) for e in logs]
    assert failed == [("sweeper.counts_compaction_failed", "OperationalError")]


async def count_rows(sessionmaker: Maker) -> list[str]:
    """The states of the inbox's kept counts, a row each."""
    async with sessionmaker() as session:
        return list((await session.scalars(select(InboxStateCount.state))).all())
