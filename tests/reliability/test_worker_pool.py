"""Found by scenario 6 of `make reliability`: 20 concurrent jobs (WORKER_MAX_JOBS=20) with an
OAuth grant exhausted the worker's database pool — each job holds its session while the token
store opens another — and jobs failed with "QueuePool limit of size 10 overflow 10 reached,
connection timed out, timeout 1.00", each costing the event a rung of the retry ladder (60 s;
after the last rung, a task to the deal's manager for a purely local shortage)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from app.workers.main import WorkerContext, shutdown, startup
from reliability.infra import drop_database, ensure_database
from tests.conftest import make_settings
from tests.reliability.conftest import fast_database_url as session_database_url


def fast_database_url() -> str | None:
    url = session_database_url()
    return url.replace("/sagebridge_reliability_", "/sagebridge_pool_") if url else None


JOBS = 15


async def test_a_worker_can_hold_two_connections_per_concurrent_job(tmp_path: Path) -> None:
    url = fast_database_url()
    if url is None:
        # SQLite's engine has no bounded connection pool, so there is nothing to exhaust.
        pytest.skip("the pool limit is PostgreSQL's: needs PostgreSQL on 127.0.0.1")
    await ensure_database(url)
    try:
        await _hold_two_per_job(url, tmp_path)
    finally:
        await drop_database(url)


async def _hold_two_per_job(url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url=url,
        redis_url="redis://127.0.0.1:9/0",  # never used here: nothing is enqueued
        worker_max_jobs=JOBS,
        data_dir=tmp_path,
    )
    ctx = WorkerContext(settings=settings)
    await startup(ctx)  # the worker's own start-up builds its pool
    try:
        async with contextlib.AsyncExitStack() as held:
            for _ in range(2 * JOBS):
                await held.enter_async_context(ctx["db"].engine.connect())
    finally:
        await shutdown(ctx)
