"""arq worker: thin jobs that open a session and call the business logic.

`process_event` runs one inbox event; `sweep` re-enqueues every event that is due but has no live
job (Redis flushed or restarted, a worker killed), so delivery never depends on Redis alone, and
folds the inbox's counts by state.
The daily reconciliation report runs in the background of one worker (`reconciliation_job`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypedDict, cast

import structlog
from arq import cron
from arq.connections import ArqRedis
from arq.typing import WorkerCoroutine
from arq.worker import Worker, func
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerts.config import AlertConfig
from app.alerts.job import SEND_SHARE, last_hook_check, run_alerts
from app.bridge import Bridge
from app.connections.config import ConnectionsConfig
from app.connections.keepalive import keep_alive
from app.connections.runtime import Connections
from app.inbox.reconcile import check_webhook, reconcile_trigger_stage
from app.inbox.repository import InboxRepository
from app.inbox.runner import process_event, resume_waiting
from app.mapping_store import Mappings, start_mappings
from app.metrics import KOMMO_WEBHOOK_DISABLED
from app.models import utcnow
from app.payment_status import poll_statuses
from app.queue import (
    HEARTBEAT_SECONDS,
    JOB_SERIALIZERS,
    PROCESS_EVENT,
    QUEUE_NAME,
    Queue,
    redis_settings,
)
from app.reconciliation import report_now
from app.runtime import Database, Upstreams, pipeline_config
from app.settings import Settings

log = structlog.get_logger(__name__)
# One worker in the fleet runs each day's report; the claim outlives the run, not the day.
REPORT_CLAIM_SECONDS = 20 * 3600


class WorkerContext(TypedDict, total=False):
    """What arq hands every job: `settings` (given) and `redis` (arq's), the rest built by
    `startup`."""

    settings: Settings
    redis: ArqRedis
    db: Database
    connections: Connections
    upstreams: Upstreams
    mapping: Mappings
    bridge: Bridge
    report: asyncio.Task[None]


async def startup(ctx: WorkerContext) -> None:
    settings = ctx["settings"]
    ctx["db"] = Database.open(settings, for_worker=True)
    ctx["connections"] = connections = Connections.open(
        ConnectionsConfig.from_settings(settings), ctx["db"].sessionmaker, settings.redis_url
    )
    ctx["upstreams"] = upstreams = Upstreams.open(settings, connections)
    ctx["mapping"] = mappings = await start_mappings(
        settings, ctx["db"].sessionmaker, upstreams.accounting, process="worker"
    )

    async def schedule(event_id: int, attempt: int, at: datetime | None) -> None:
        await Queue(ctx["redis"]).enqueue_event(event_id, attempt, at)

    ctx["bridge"] = Bridge(
        crm=upstreams.crm,
        accounting=upstreams.accounting,
        mapping=mappings.mapping,
        config=pipeline_config(settings),
        schedule=schedule,
    )
    log.info("worker.started", sandbox=settings.sandbox_mode)


async def shutdown(ctx: WorkerContext) -> None:
    if "report" in ctx:
        ctx["report"].cancel()
    await ctx["upstreams"].close()
    await ctx["connections"].close()
    await ctx["db"].close()


async def process_event_job(ctx: WorkerContext, event_id: int) -> str | None:
    db = ctx["db"]
    async with db.sessionmaker() as session:
        state = await process_event(session, ctx["bridge"], event_id)
    return state.value if state else None


async def sweep(ctx: WorkerContext) -> int:
    """Enqueue every due event; arq's deterministic job ids make this a no-op for live jobs.

    It also picks up an edit of this host's mapping file (validated whole, stored as the version
    in force; a bad edit changes nothing). Jobs read the version in force, not the file."""
    await ctx["mapping"].pick_up_edit(ctx["upstreams"].accounting)
    db = ctx["db"]
    async with db.sessionmaker() as session:
        await resume_waiting(session, ctx["connections"].is_active)
    async with db.sessionmaker() as session:
        due = await InboxRepository(session).due(now=utcnow())
    enqueued = 0
    for event in due:
        enqueued += await Queue(ctx["redis"]).enqueue_event(event.id, event.attempts)
    if enqueued:
        log.info("sweeper.requeued", count=enqueued)
    await compact_state_counts(db.sessionmaker)
    return enqueued


async def compact_state_counts(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """The inbox's counts by state, one row per state again, in a short transaction of its own.
    A failure only leaves more rows to fold at the next sweep."""
    try:
        async with sessionmaker() as session:
            await InboxRepository(session).compact_state_counts()
            await session.commit()
    except (SQLAlchemyError, OSError) as exc:
        log.warning("sweeper.counts_compaction_failed", error=type(exc).__name__)


async def poll_statuses_job(ctx: WorkerContext) -> int:
    """Sage → deal payment statuses (Sage Accounting has no webhooks of its own)."""
    bridge, db = ctx["bridge"], ctx["db"]
    async with db.sessionmaker() as session:
        return await poll_statuses(session, bridge.crm, bridge.accounting, now=utcnow())


async def reconcile_job(ctx: WorkerContext) -> int:
    """Deals in the invoice stage whose webhook never came; and is our hook still enabled?"""
    bridge, db, queue = ctx["bridge"], ctx["db"], Queue(ctx["redis"])
    async with db.sessionmaker() as session:
        due = await reconcile_trigger_stage(session, bridge, now=utcnow())
    for event_id in due:
        await queue.enqueue_event(event_id)
    state = await check_webhook(bridge)
    KOMMO_WEBHOOK_DISABLED.set(1 if state == "disabled" else 0)
    await queue.record_webhook_state(state)
    return len(due)


async def reconciliation_job(ctx: WorkerContext) -> bool:
    """Start the daily reconciliation report in the background of this worker, if no worker
    has today. It reads every recent deal and invoice, which may take longer than a job may run
    (and a longer job timeout would delay the recovery of every killed job)."""
    running = ctx.get("report")
    if running is not None and not running.done():
        return False
    if not await Queue(ctx["redis"]).claim("reconciliation_report", seconds=REPORT_CLAIM_SECONDS):
        return False
    ctx["report"] = asyncio.create_task(_daily_report(ctx))
    return True


async def _daily_report(ctx: WorkerContext) -> None:
    try:
        days = ctx["settings"].reconcile_report_days
        await report_now(ctx["db"].sessionmaker, ctx["bridge"], days=days)
    except Exception:  # a background task: nobody else would see it fail
        log.exception("reconcile_report.failed")


async def keep_alive_job(ctx: WorkerContext) -> list[str]:
    """Refresh idle Sage grants before their 31-day refresh token expires."""
    return [str(key) for key in await keep_alive(ctx["connections"])]


async def alerts_job(ctx: WorkerContext) -> int:
    """What needs a person (app/alerts/): found in durable state, sent by email and/or webhook."""
    settings = ctx["settings"]
    return await run_alerts(
        ctx["db"].sessionmaker,
        AlertConfig.from_settings(settings),
        hook=await last_hook_check(Queue(ctx["redis"])),
        budget=settings.job_timeout_seconds * SEND_SHARE,
    )


def _job(job: Callable[..., Awaitable[Any]]) -> WorkerCoroutine:
    """arq types a job's context as a plain dict; ours declares what that dict holds."""
    return cast(WorkerCoroutine, job)


def build_worker(settings: Settings, *, burst: bool = False, **overrides: Any) -> Worker:
    assert settings.redis_url, "REDIS_URL must be set before the worker starts"
    timeout = settings.job_timeout_seconds
    every = settings.sweeper_interval_seconds
    options: dict[str, Any] = {
        "functions": [
            func(_job(process_event_job), name=PROCESS_EVENT, timeout=timeout, keep_result=0)
        ],
        "cron_jobs": [
            cron(_job(keep_alive_job), hour={3, 15}, minute=7, second=0, timeout=timeout),
            cron(
                _job(sweep), second=set(range(0, 60, every)), run_at_startup=True, timeout=timeout
            ),
            cron(
                _job(poll_statuses_job),
                minute=set(range(0, 60, settings.status_poll_minutes)),
                second=30,
                timeout=timeout,
            ),
            cron(
                _job(reconcile_job),
                minute=set(range(0, 60, settings.reconcile_minutes)),
                second=45,
                timeout=timeout,
            ),
            cron(_job(alerts_job), second=20, run_at_startup=True, timeout=timeout),
            cron(
                _job(reconciliation_job),
                hour=settings.reconcile_report_hour,
                minute=23,
                second=0,
                timeout=timeout,
            ),
        ],
        "redis_settings": redis_settings(settings.redis_url),
        "queue_name": QUEUE_NAME,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "ctx": {"settings": settings},
        "burst": burst,
        # A killed worker's job becomes visible again after the longest function timeout + 10 s
        # (arq's in-progress key), so every function, cron jobs too, keeps job_timeout: the
        # status poll and reconciliation are incremental and bounded per run to fit in it.
        "job_timeout": timeout,
        "keep_result": 0,
        "max_jobs": settings.worker_max_jobs,
        # arq's default 0.5 s poll adds up to half a second before a job starts (bench/).
        "poll_delay": 0.05,
        # arq writes "<queue>:health-check" with this period (and a TTL just over it): the
        # worker heartbeat /readyz looks for.
        "health_check_interval": HEARTBEAT_SECONDS,
        "handle_signals": False,
        # JSON, never pickle: a job planted in Redis must not run code here.
        **JOB_SERIALIZERS,
    }
    options.update(overrides)
    return Worker(**options)
