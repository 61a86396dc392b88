"""`sagebridge reset`: the bridge's data deleted, and in the sandbox the simulators' records
with it, so the next `run` starts both from the beginning, together."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

# Imported for their tables: drop_all drops every model's (as migrations/env.py sees them).
import app.alerts.models
import app.connections.models  # noqa: F401
from app.db import create_engine
from app.demo import state_file
from app.inbox.models import InboxEvent
from app.models import Base, DealInvoice
from app.settings import Settings


@dataclass(frozen=True)
class ResetPlan:
    """What a reset deletes, in words for the confirmation, and where it lives."""

    lines: list[str]
    redis_dir: Path | None
    sandbox_file: Path | None


async def plan(settings: Settings, *, database: str, sandbox: bool) -> ResetPlan:
    events, invoices = await _counts(settings.resolved_database_url)
    held = "no tables yet" if events is None else f"{events} event(s), {invoices} invoice(s)"
    lines = [f"the bridge's tables in {database} ({held})"]
    redis_dir = None
    if settings.redis_url:
        lines.append("nothing in REDIS_URL's Redis (jobs for deleted events do nothing)")
    else:
        redis_dir = settings.data_dir / "redis"
        lines.append(f"the embedded Redis's data ({redis_dir})")
    sandbox_file = state_file(settings) if sandbox else None
    if sandbox_file is not None:
        lines.append(f"the sandbox Kommo's and Sage's saved records ({sandbox_file})")
    return ResetPlan(lines, redis_dir, sandbox_file)


async def _counts(url: str) -> tuple[int | None, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            events = await conn.scalar(select(func.count()).select_from(InboxEvent))
            invoices = await conn.scalar(select(func.count()).select_from(DealInvoice))
    except SQLAlchemyError:
        return None, 0  # not migrated yet: nothing to count
    finally:
        await engine.dispose()
    return int(events or 0), int(invoices or 0)


async def carry_out(settings: Settings, reset: ResetPlan) -> None:
    """Drop the bridge's tables (the next start migrates afresh), then the files."""
    engine = create_engine(settings.resolved_database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
            await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        await engine.dispose()
    if reset.redis_dir is not None:
        shutil.rmtree(reset.redis_dir, ignore_errors=True)
    if reset.sandbox_file is not None:
        reset.sandbox_file.unlink(missing_ok=True)
