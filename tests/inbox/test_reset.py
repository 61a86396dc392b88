"""Replay (ops) and reopen (a newer move into the stage) start an event over the same way.

Regression for issue 14, bug 1: replay kept `runs`, `task_attempts` and `task_id`, so an event
that had stopped too often failed again at once after a replay (a second task, no invoice
tried), and one that had used its retries got two tries instead of four."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.inbox.models import InboxEvent
from app.settings import Settings
from tests.conftest import OPS_TOKEN, WEBHOOK_SECRET
from tests.helpers import (
    Scheduled,
    lead_entry,
    load_event,
    make_due,
    record_trigger,
    run_event,
    status_webhook,
)
from tests.upstreams import Kommo, Upstreams

AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
Maker = async_sessionmaker[AsyncSession]
# What a finished event carries that a fresh start must not inherit.
WORN = {
    "state": "failed",
    "attempts": 4,
    "runs": 7,
    "task_state": "created",
    "task_text": "Sage invoice NOT raised",
    "task_id": "8000001",
    "task_attempts": 10,
    "last_error": "gave up",
}


@pytest.fixture
def upstreams(upstreams: Upstreams) -> Upstreams:
    upstreams.kommo.add_lead(1, products=[(102, 1)])
    return upstreams


async def set_event(sessionmaker: Maker, event_id: int, **values: Any) -> None:
    async with sessionmaker() as session:
        await session.execute(update(InboxEvent).where(InboxEvent.id == event_id).values(**values))
        await session.commit()


def counters(event: InboxEvent) -> dict[str, Any]:
    names = ("state", "attempts", "runs", "task_state", "task_text", "task_id", "task_attempts")
    return {name: getattr(event, name) for name in (*names, "last_error", "lease_until")}


FRESH = {
    "state": "pending",
    "attempts": 0,
    "runs": 0,
    "task_state": None,
    "task_text": None,
    "task_id": None,
    "task_attempts": 0,
    "last_error": None,
    "lease_until": None,
}


async def test_replay_and_reopen_leave_the_event_as_fresh_as_each_other(
    client: AsyncClient, sessionmaker: Maker, settings: Settings, upstreams: Upstreams
) -> None:
    replayed = await record_trigger(sessionmaker, settings, 1, updated_at=1000)
    reopened = await record_trigger(sessionmaker, settings, 2, updated_at=1000)
    await set_event(sessionmaker, replayed, **WORN)
    await set_event(sessionmaker, reopened, **WORN)

    response = await client.post(f"/ops/events/{replayed}/replay", headers=AUTH)
    hook = await client.post(
        f"/webhooks/kommo/{WEBHOOK_SECRET}",
        content=status_webhook(lead_entry(2, updated_at=2000)),
        headers=FORM,
    )

    assert (response.status_code, hook.json()["queued"]) == (200, 1)
    assert (response.json()["task_id"], response.json()["attempt"]) == (None, 0)
    assert counters(await load_event(sessionmaker, replayed)) == FRESH
    assert counters(await load_event(sessionmaker, reopened)) == FRESH


async def test_an_event_that_stopped_too_often_is_invoiced_after_a_replay(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    upstreams: Upstreams,
) -> None:
    kommo, sage = upstreams
    event_id = await record_trigger(sessionmaker, settings, 1)
    await set_event(sessionmaker, event_id, runs=6)  # claimed six times, never finished
    assert await run_event(sessionmaker, bridge[0], event_id) == "failed"
    assert len(kommo.tasks) == 1 and sage.invoice_posts == []

    await client.post(f"/ops/events/{event_id}/replay", headers=AUTH)

    assert await run_event(sessionmaker, bridge[0], event_id) == "invoiced"
    assert len(sage.invoice_posts) == 1
    assert len(kommo.tasks) == 1  # the replay tried to invoice; it opened no second task


async def test_an_event_that_used_its_retries_gets_every_try_again_after_a_replay(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
) -> None:
    kommo.faults.fail_next("GET", "/api/v4/leads/{id}", status=503, count=8)
    event_id = await record_trigger(sessionmaker, settings, 1)
    tries = len(settings.retry_delays_seconds) + 1

    first = [await _try(sessionmaker, bridge[0], event_id) for _ in range(tries)]
    await client.post(f"/ops/events/{event_id}/replay", headers=AUTH)
    second = [await _try(sessionmaker, bridge[0], event_id) for _ in range(tries)]

    assert first == second == ["retrying", "retrying", "retrying", "failed"]
    event = await load_event(sessionmaker, event_id)
    assert event.attempts == tries and "after 4 attempts" in (event.task_text or "")


async def _try(sessionmaker: Maker, bridge: Bridge, event_id: int) -> str | None:
    state = await run_event(sessionmaker, bridge, event_id)
    await make_due(sessionmaker, event_id)
    return state
