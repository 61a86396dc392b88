"""0014 starts the inbox's kept counts from the events already stored, on SQLite and
PostgreSQL; its downgrade takes the triggers away with the table (events can still be stored),
and migrating up again (as after `sagebridge reset`) counts afresh."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import func, select

from app.cli import migrate_database
from app.db import create_engine, create_sessionmaker
from app.inbox.models import InboxEvent
from app.inbox.repository import InboxRepository, InboxWriter, NewEvent
from app.settings import Settings
from tests.helpers import moved

ROOT = Path(__file__).resolve().parents[2]


def downgrade(url: str, revision: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = url
    command.downgrade(config, revision)


async def store(url: str, *events: list[NewEvent]) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await InboxWriter(conn).record_groups(list(events))
    await engine.dispose()


async def kept_and_counted(url: str) -> tuple[dict[str, int], dict[str, int]]:
    engine = create_engine(url)
    async with create_sessionmaker(engine)() as session:
        kept = await InboxRepository(session).count_by_state()
        rows = await session.execute(
            select(InboxEvent.state, func.count()).group_by(InboxEvent.state)
        )
        counted = {state: count for state, count in rows.all()}
    await engine.dispose()
    return kept, counted


def test_0014_counts_the_events_already_stored_and_comes_off_cleanly(fresh_url: str) -> None:
    settings = Settings(database_url=fresh_url)
    migrate_database(settings, "0013_inbox_scale_indexes")
    asyncio.run(store(fresh_url, moved(1), moved(2), moved(3, status_id=502)))

    migrate_database(settings)
    assert asyncio.run(kept_and_counted(fresh_url)) == ({"pending": 2, "skipped": 1},) * 2

    downgrade(fresh_url, "0013_inbox_scale_indexes")
    asyncio.run(store(fresh_url, moved(4)))  # no trigger left writing to a table that is gone
    migrate_database(settings)
    asyncio.run(store(fresh_url, moved(5, status_id=502)))
    assert asyncio.run(kept_and_counted(fresh_url)) == ({"pending": 3, "skipped": 2},) * 2
