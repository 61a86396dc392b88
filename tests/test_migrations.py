"""Migrations on a real PostgreSQL server: a database migrated with the first 0004 (sync-log
columns of 16 characters) is repaired by 0006, so parking an event on a dead grant can log it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.cli import migrate_database
from app.inbox.models import EventState, InboxEvent
from app.models import SyncRecord
from app.settings import Settings
from reliability.infra import drop_database, ensure_database
from tests.reliability.conftest import fast_database_url as postgres_database_url


async def _execute(url: str, *statements: str) -> list[tuple[object, ...]]:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    rows: list[tuple[object, ...]] = []
    async with engine.connect() as conn:
        for statement in statements:
            result = await conn.execute(text(statement))
            rows = [tuple(r) for r in result.fetchall()] if result.returns_rows else []
    await engine.dispose()
    return rows


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    session_url = postgres_database_url()
    if session_url is None:
        # 0006 changes nothing on SQLite, which does not enforce varchar lengths.
        pytest.skip("0006 is PostgreSQL-only: needs PostgreSQL on 127.0.0.1 (TEST_DATABASE_URL)")
    url = session_url.replace(
        "/sagebridge_reliability_", f"/sagebridge_migrations_{uuid.uuid4().hex[:8]}_"
    )
    asyncio.run(ensure_database(url))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))


async def log_a_parked_event(url: str) -> None:
    engine = create_async_engine(url)
    async with AsyncSession(engine) as session:
        event = InboxEvent(
            source="kommo",
            dedupe_key="k",
            account_id="1",
            deal_id="1",
            action="raise_invoice",
            state=EventState.WAITING_CONNECTION,
            payload={},
        )
        session.add(event)
        await session.flush()
        session.add(
            SyncRecord(
                event_id=event.id,
                deal_id="1",
                record="event",
                action=EventState.WAITING_CONNECTION,
                detail={},
            )
        )
        await session.commit()
    await engine.dispose()


def widths(url: str) -> dict[str, object]:
    rows = asyncio.run(
        _execute(
            url,
            "SELECT column_name, character_maximum_length FROM information_schema.columns"
            " WHERE table_name = 'sync_records' AND column_name IN ('record', 'action')",
        )
    )
    return {str(name): width for name, width in rows}


def test_0006_widens_the_sync_log_columns_of_a_database_made_with_the_first_0004(
    empty_postgres: str,
) -> None:
    settings = Settings(database_url=empty_postgres)
    migrate_database(settings, "0005")
    asyncio.run(
        _execute(
            empty_postgres,
            "ALTER TABLE sync_records ALTER COLUMN record TYPE varchar(16)",
            "ALTER TABLE sync_records ALTER COLUMN action TYPE varchar(16)",
        )
    )
    assert widths(empty_postgres) == {"record": 16, "action": 16}

    migrate_database(settings)

    assert widths(empty_postgres) == {"record": 32, "action": 32}
    asyncio.run(log_a_parked_event(empty_postgres))


def test_0006_leaves_a_database_made_with_the_corrected_0004_as_it_is(
    empty_postgres: str,
) -> None:
    settings = Settings(database_url=empty_postgres)
    migrate_database(settings, "0005")
    assert widths(empty_postgres) == {"record": 32, "action": 32}

    migrate_database(settings)

    assert widths(empty_postgres) == {"record": 32, "action": 32}
