"""The small, fast versions of the reliability scenarios (reliability/, issue 7) share one
running stack per module: a private redis-server, a database of their own on the PostgreSQL
server the suite uses (through a TCP proxy that the "database down" test cuts), the sandbox
upstreams as a process, and the bridge's API and worker as real processes.

They need PostgreSQL on 127.0.0.1 (TEST_DATABASE_URL's server, else 127.0.0.1:5432) and skip
without it; nothing they do touches the machine's shared Redis. Pass/fail never depends on
timing: every wait is bounded but generous, and timings are only reported."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

from reliability import common
from reliability.environment import Servers, servers
from reliability.infra import drop_database, port_open
from reliability.profiles import FAST
from reliability.stack import Stack, open_stack

# One database per test session: engineers run the suite side by side on one machine, and two
# sessions sharing a database would process (and drop) each other's events.
DATABASE = f"sagebridge_reliability_{os.getpid()}"
# Shorter pauses before counting and faster polling: timing is not what these tests judge.
common.PACE.update(quiet=0.25, poll_s=0.2)


def fast_database_url() -> str | None:
    base = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/x")
    url = make_url(base)
    if not url.drivername.startswith("postgresql") or not port_open(
        url.port or 5432, url.host or "127.0.0.1"
    ):
        return None
    return url.set(database=DATABASE).render_as_string(hide_password=False)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reliability_servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Servers]:
    url = fast_database_url()
    if url is None:
        # The database-down scenario cuts a PostgreSQL connection; SQLite has none to cut.
        pytest.skip("the reliability scenarios need PostgreSQL on 127.0.0.1 (TEST_DATABASE_URL)")
    workdir: Path = tmp_path_factory.mktemp("reliability")
    try:
        async with servers(workdir, private_pg=False, shared_pg_url=url) as s:
            yield s
    finally:
        await drop_database(url)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    reliability_servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    s = reliability_servers
    async with open_stack(
        tmp_path_factory.mktemp("stack"),
        bridge_database_url=s.bridge_database_url,
        harness_database_url=s.harness_database_url,
        redis=s.redis,
        overrides=dict(FAST.base_settings),
    ) as running:
        yield running
