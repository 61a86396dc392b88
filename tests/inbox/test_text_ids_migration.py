"""0010 turns the inbox's CRM ids into text on SQLite and PostgreSQL: the values are kept as
their decimal text, and a stored event keeps its dedupe key, so a newer move of the same deal
reopens it instead of starting a second event."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from app.cli import migrate_database
from app.clients.kommo.webhook import parse_webhook
from app.db import create_engine, create_sessionmaker
from app.inbox.intake import kommo_events
from app.inbox.repository import InboxRepository
from app.models import utcnow
from app.settings import Settings
from tests.helpers import lead_entry, status_webhook

KEY = "kommo:29000001:lead:7:trigger:500:503"
# inbox_events as 0009 left it: the ids are integers.
OLD_INBOX = sa.table(
    "inbox_events",
    sa.column("source", sa.String),
    sa.column("dedupe_key", sa.String),
    sa.column("account_id", sa.String),
    sa.column("deal_id", sa.String),
    sa.column("action", sa.String),
    sa.column("pipeline_id", sa.BigInteger),
    sa.column("status_id", sa.BigInteger),
    sa.column("responsible_user_id", sa.BigInteger),
    sa.column("changed_at", sa.BigInteger),
    sa.column("state", sa.String),
    sa.column("attempts", sa.Integer),
    sa.column("payload", sa.JSON),
    sa.column("received_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)


async def store_old_event(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(OLD_INBOX).values(
                source="kommo",
                dedupe_key=KEY,
                account_id="29000001",
                deal_id="7",
                action="leads.status",
                pipeline_id=500,
                status_id=503,
                responsible_user_id=9_000_000_000,
                changed_at=1000,
                state="failed",
                attempts=4,
                payload={},
                received_at=utcnow(),
                updated_at=utcnow(),
            )
        )
    await engine.dispose()


async def read_ids(url: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    async with engine.connect() as conn:
        query = "SELECT id, pipeline_id, status_id, responsible_user_id FROM inbox_events"
        rows = [tuple(r) for r in (await conn.execute(sa.text(query))).all()]
    await engine.dispose()
    return rows


async def move_again(url: str) -> list[int]:
    """The deal moves into the stage again, as the webhook route records it."""
    hook = parse_webhook(status_webhook(lead_entry(7, updated_at=2000)))
    events = kommo_events(
        hook, account_id="29000001", trigger_pipeline_id="500", trigger_status_id="503"
    )
    engine = create_engine(url)
    async with create_sessionmaker(engine)() as session:
        due = await InboxRepository(session).record(events)
        await session.commit()
    await engine.dispose()
    return due


def test_0010_keeps_the_ids_as_text_and_the_dedupe_keys(fresh_url: str) -> None:
    settings = Settings(database_url=fresh_url)
    migrate_database(settings, "0009_deal_tasks")
    asyncio.run(store_old_event(fresh_url))

    migrate_database(settings)

    [(event_id, *ids)] = asyncio.run(read_ids(fresh_url))
    assert ids == ["500", "503", "9000000000"]
    assert asyncio.run(move_again(fresh_url)) == [event_id]  # reopened, not a second event
    assert [row[0] for row in asyncio.run(read_ids(fresh_url))] == [event_id]
