"""What the worker's alerts job (every minute, `app.workers.main.alerts_job`) runs: scan for
causes, then send what is due.

It runs beside the invoicing jobs, never in their way: its own cron slot, bounded by the job
timeout, each send by ALERT_SEND_TIMEOUT_SECONDS; a slow or dead receiver costs only this job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerts.channels import open_channels
from app.alerts.check import check
from app.alerts.config import AlertConfig
from app.alerts.delivery import Clock, deliver_due
from app.models import utcnow
from app.queue import Queue

log = structlog.get_logger(__name__)
# Of the job timeout, what sending may use; the scan before it is a few queries.
SEND_SHARE = 0.8


async def run_alerts(
    sessionmaker: async_sessionmaker[AsyncSession],
    config: AlertConfig,
    *,
    hook: Mapping[str, Any] | None,
    budget: float,
    clock: Clock = utcnow,
) -> int:
    """One scan, then the outbox; returns how many alerts were sent."""
    async with sessionmaker() as session:
        await check(session, config, hook=hook, now=clock())
    async with open_channels(config) as channels:
        return await deliver_due(sessionmaker, channels, config, clock=clock, budget=budget)


async def last_hook_check(queue: Queue) -> dict[str, Any] | None:
    """What the reconciliation job last found about the Kommo hook; None when unknown."""
    try:
        return await queue.webhook_state()
    except (RedisError, OSError) as exc:
        log.warning("alerts.hook_state_unknown", error=type(exc).__name__)
        return None
