"""arq worker: thin jobs that open a session and call the business logic.

`process_event` runs one inbox event; `sweep` re-enqueues every event that is due but has no live
job (Redis flushed or restarted, a worker killed), so delivery never depends on Redis alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import structlog
from arq import cron
from arq.worker import Worker, func

from app.invoicing import Bridge, process_event
from app.models import utcnow
from app.queue import PROCESS_EVENT, QUEUE_NAME, enqueue_event, redis_settings
from app.repositories import InboxRepository
from app.runtime import Database, MappingHolder, Upstreams, pipeline_config
from app.settings import Settings

log = structlog.get_logger(__name__)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    ctx["db"] = Database.open(settings)
    ctx["upstreams"] = upstreams = Upstreams.open(settings)
    ctx["mapping"] = mapping = ctx.get("mapping") or MappingHolder.load(settings)

    async def schedule(event_id: int, attempt: int, at: datetime | None) -> None:
        await enqueue_event(ctx["redis"], event_id, attempt, at)

    ctx["bridge"] = Bridge(
        crm=upstreams.crm,
        accounting=upstreams.accounting,
        mapping=mapping.get,
        config=pipeline_config(settings),
        schedule=schedule,
    )
    log.info("worker.started", sandbox=settings.sandbox_mode)


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["upstreams"].close()
    await ctx["db"].close()


async def process_event_job(ctx: dict[str, Any], event_id: int) -> str | None:
    db: Database = ctx["db"]
    async with db.sessionmaker() as session:
        state = await process_event(session, ctx["bridge"], event_id)
    return state.value if state else None


async def sweep(ctx: dict[str, Any]) -> int:
    """Enqueue every due event; arq's deterministic job ids make this a no-op for live jobs."""
    db: Database = ctx["db"]
    async with db.sessionmaker() as session:
        due = await InboxRepository(session).due(now=utcnow())
    enqueued = 0
    for event in due:
        enqueued += await enqueue_event(ctx["redis"], event.id, event.attempts)
    if enqueued:
        log.info("sweeper.requeued", count=enqueued)
    return enqueued


def build_worker(settings: Settings, *, burst: bool = False, **overrides: Any) -> Worker:
    assert settings.redis_url, "REDIS_URL must be set before the worker starts"
    timeout = settings.job_timeout_seconds
    every = settings.sweeper_interval_seconds
    options: dict[str, Any] = {
        "functions": [func(process_event_job, name=PROCESS_EVENT, timeout=timeout, keep_result=0)],
        "cron_jobs": [
            cron(sweep, second=set(range(0, 60, every)), run_at_startup=True, timeout=timeout)
        ],
        "redis_settings": redis_settings(settings.redis_url),
        "queue_name": QUEUE_NAME,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": {"settings": settings},
        "burst": burst,
        # A killed worker's job becomes visible again after job_timeout + 10 s (arq's
        # in-progress key), well inside the 60 s recovery bound.
        "job_timeout": timeout,
        "keep_result": 0,
        "max_jobs": settings.worker_max_jobs,
        "handle_signals": False,
    }
    options.update(overrides)
    return Worker(**options)
