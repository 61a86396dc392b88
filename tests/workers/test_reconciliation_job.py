"""The daily reconciliation report runs in the background of one worker of the fleet: a Redis
claim picks the worker, so the report never holds a job slot nor needs a longer job timeout."""

from __future__ import annotations

from typing import Any, cast

from arq.connections import ArqRedis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.models import ReconciliationReport
from app.runtime import Database
from app.settings import Settings
from app.workers.main import WorkerContext, reconciliation_job
from tests.helpers import Scheduled
from tests.upstreams import Kommo

Maker = async_sessionmaker[AsyncSession]


async def test_one_worker_runs_the_days_report_in_the_background(
    settings: Settings,
    queue: ArqRedis,
    sessionmaker: Maker,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
) -> None:
    kommo.add_lead(3, status_id=142, products=[(102, 1)])
    db = Database.open(settings, for_worker=True)
    contexts = [
        cast(WorkerContext, {"settings": settings, "redis": queue, "db": db, "bridge": bridge[0]})
        for _ in range(2)
    ]
    try:
        started = [await reconciliation_job(ctx) for ctx in contexts]
        task: Any = contexts[0]["report"]
        await task
        again = await reconciliation_job(contexts[0])
    finally:
        await db.close()

    assert started == [True, False]
    assert again is False  # the day's claim still holds
    async with sessionmaker() as session:
        reports = list((await session.scalars(select(ReconciliationReport))).all())
    assert len(reports) == 1
