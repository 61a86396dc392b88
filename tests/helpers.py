"""Building blocks for job tests: a Bridge on real clients (the sandbox upstreams underneath)
and inbox events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.clients.kommo.webhook import parse_webhook
from app.inbox.intake import KommoBatch, kommo_events
from app.inbox.models import EventState, InboxEvent
from app.inbox.repository import InboxRepository, NewEvent
from app.inbox.runner import process_event
from app.mapping_store import start_mappings
from app.models import utcnow
from app.runtime import Database, Upstreams, pipeline_config
from app.settings import Settings

Maker = async_sessionmaker[AsyncSession]


@dataclass
class Scheduled:
    calls: list[tuple[int, int, datetime | None]] = field(default_factory=list)

    async def __call__(self, event_id: int, attempt: int, at: datetime | None) -> None:
        self.calls.append((event_id, attempt, at))


@asynccontextmanager
async def bridge_for(settings: Settings) -> AsyncIterator[tuple[Bridge, Scheduled]]:
    """As the worker builds it, the mapping in force read from the database."""
    upstreams = Upstreams.open(settings)
    db = Database.open(settings, for_worker=True)
    scheduled = Scheduled()
    try:
        mappings = await start_mappings(
            settings, db.sessionmaker, upstreams.accounting, process="worker"
        )
        bridge = Bridge(
            crm=upstreams.crm,
            accounting=upstreams.accounting,
            mapping=mappings.mapping,
            config=pipeline_config(settings),
            schedule=scheduled,
        )
        yield bridge, scheduled
    finally:
        await db.close()
        await upstreams.close()


def status_webhook(
    *entries: dict[str, Any], account_id: int = 29000001, subdomain: str = "testco"
) -> bytes:
    """A Kommo form body with one leads[status][i] block per entry."""
    pairs: list[tuple[str, str]] = []
    for i, entry in enumerate(entries):
        for key, value in entry.items():
            pairs.append((f"leads[status][{i}][{key}]", str(value)))
    pairs += [
        ("account[subdomain]", subdomain),
        ("account[id]", str(account_id)),
        ("account[_links][self]", f"https://{subdomain}.kommo.com"),
    ]
    return urlencode(pairs).encode()


def lead_entry(
    lead_id: int, *, status_id: int = 503, pipeline_id: int = 500, **extra: Any
) -> dict[str, Any]:
    return {
        "id": lead_id,
        "status_id": status_id,
        "old_status_id": 502,
        "pipeline_id": pipeline_id,
        "responsible_user_id": 42,
        "updated_at": extra.pop("updated_at", 1_760_000_000),
        **extra,
    }


def moved(lead_id: int, *, status_id: int = 503) -> list[NewEvent]:
    """The events of a webhook moving the deal into the trigger stage (503: pending work) or
    another one (skipped), to store as the route would."""
    hook = parse_webhook(status_webhook(lead_entry(lead_id, status_id=status_id)))
    return kommo_events(
        hook, account_id="29000001", trigger_pipeline_id="500", trigger_status_id="503"
    )


async def record_webhook(sessionmaker: Maker, settings: Settings, body: bytes) -> list[int]:
    """Store a Kommo webhook's lead entries as the route does (the database decides which
    lost or deleted deals are work); return the ids now due."""
    batch = KommoBatch(
        kommo_events(
            parse_webhook(body),
            account_id=str(settings.kommo_account_id),
            trigger_pipeline_id="500",
            trigger_status_id="503",
        )
    )
    async with sessionmaker() as session:
        ids = await InboxRepository(session).record(await batch.decide(session))
        await session.commit()
    return ids


def lead_deleted(*lead_ids: int, account_id: int = 29000001) -> bytes:
    """A Kommo `leads[delete]` body, as public handlers read it."""
    pairs = [(f"leads[delete][{i}][id]", str(lead_id)) for i, lead_id in enumerate(lead_ids)]
    pairs += [("account[subdomain]", "testco"), ("account[id]", str(account_id))]
    return urlencode(pairs).encode()


async def record_trigger(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, lead_id: int, **extra: Any
) -> int:
    """Store a trigger event as the webhook route would; return its id."""
    hook = parse_webhook(status_webhook(lead_entry(lead_id, **extra)))
    events = kommo_events(
        hook,
        account_id=str(settings.kommo_account_id),
        trigger_pipeline_id="500",
        trigger_status_id="503",
    )
    async with sessionmaker() as session:
        ids = await InboxRepository(session).record(events)
        await session.commit()
    assert len(ids) == 1
    return ids[0]


async def load_event(sessionmaker: async_sessionmaker[AsyncSession], event_id: int) -> InboxEvent:
    async with sessionmaker() as session:
        event = await session.get(InboxEvent, event_id)
        assert event is not None
        return event


async def run_event(sessionmaker: Maker, bridge: Bridge, event_id: int) -> EventState | None:
    """One job, as the worker runs it: its own session around process_event."""
    async with sessionmaker() as session:
        return await process_event(session, bridge, event_id)


async def make_due(sessionmaker: Maker, event_id: int, *, expire_lease: bool = False) -> None:
    """Time travel: the scheduled retry is due now (and, if asked, the lease has run out)."""
    past = utcnow() - timedelta(seconds=1)
    values: dict[str, Any] = {"next_attempt_at": past}
    if expire_lease:
        values["lease_until"] = past
    async with sessionmaker() as session:
        await session.execute(update(InboxEvent).where(InboxEvent.id == event_id).values(values))
        await session.commit()
