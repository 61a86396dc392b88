"""An event's life under the awkward cases: timeouts, crashes, races with reopening, a CRM that
won't take a task, and ops ending one by hand."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.domain import Deal
from app.inbox.lifecycle import MAX_CRASHES, MAX_TASK_ATTEMPTS
from app.inbox.models import InboxEvent
from app.inbox.repository import InboxRepository
from app.models import DealInvoice, utcnow
from app.settings import Settings
from tests.helpers import Scheduled, load_event, record_trigger, run_event
from tests.upstreams import Kommo, Upstreams

Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
def upstreams(upstreams: Upstreams) -> Upstreams:
    """Deal 1 (a Widget, mapped) and deal 2 (a Mystery box, unmapped)."""
    upstreams.kommo.add_lead(1, products=[(102, 1)])
    upstreams.kommo.add_lead(2, products=[(104, 1)])
    return upstreams


async def set_event(sessionmaker: Maker, event_id: int, **values: Any) -> None:
    async with sessionmaker() as session:
        await session.execute(update(InboxEvent).where(InboxEvent.id == event_id).values(**values))
        await session.commit()


async def test_a_job_timeout_counts_as_an_attempt_on_the_ladder(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Scheduled], upstreams: Upstreams
) -> None:
    built, scheduled = bridge
    event_id = await record_trigger(sessionmaker, settings, 1)

    async def hang(*, deal_id: str) -> Deal:
        raise asyncio.CancelledError  # what arq's job timeout delivers

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(built.crm, "get_deal", hang)
        with pytest.raises(asyncio.CancelledError):
            await run_event(sessionmaker, built, event_id)

    event = await load_event(sessionmaker, event_id)
    assert (event.state, event.attempts, event.lease_until) == ("retrying", 1, None)
    assert "timed out" in (event.last_error or "")
    assert [c[:2] for c in scheduled.calls] == [(event_id, 1)]


async def test_an_event_that_keeps_killing_its_job_ends_failed_with_a_task(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Scheduled], upstreams: Upstreams
) -> None:
    kommo, sage = upstreams
    event_id = await record_trigger(sessionmaker, settings, 1)
    runs = len(settings.retry_delays_seconds) + MAX_CRASHES
    await set_event(sessionmaker, event_id, runs=runs)  # claimed that often, never finished

    assert await run_event(sessionmaker, bridge[0], event_id) == "failed"

    event = await load_event(sessionmaker, event_id)
    assert "stopped 6 times without finishing" in (event.last_error or "")
    assert len(kommo.tasks) == 1 and sage.invoice_posts == []


async def test_losing_the_race_for_the_deal_marker_is_a_retry_not_a_crash(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Scheduled], upstreams: Upstreams
) -> None:
    kommo, sage = upstreams
    event_id = await record_trigger(sessionmaker, settings, 1)
    real_get_deal = bridge[0].crm.get_deal

    async def another_worker_gets_there_first(*, deal_id: str) -> Deal:
        deal = await real_get_deal(deal_id=deal_id)
        async with sessionmaker() as other:
            other.add(
                DealInvoice(
                    crm="kommo",
                    account_id="29000001",
                    deal_id="1",
                    event_id=event_id,
                    state="posting",
                    reference="KOMMO-1",
                    idempotency_key="0" * 32,
                )
            )
            await other.commit()
        return deal

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(bridge[0].crm, "get_deal", another_worker_gets_there_first)
        assert await run_event(sessionmaker, bridge[0], event_id) == "retrying"
    event = await load_event(sessionmaker, event_id)
    assert "another attempt is raising this deal's invoice" in (event.last_error or "")
    assert event.lease_until is None and sage.invoice_posts == []


async def test_a_pending_event_without_a_next_attempt_time_is_still_due(
    sessionmaker: Maker, settings: Settings
) -> None:
    event_id = await record_trigger(sessionmaker, settings, 1)
    await set_event(sessionmaker, event_id, next_attempt_at=None)

    async with sessionmaker() as session:
        due = await InboxRepository(session).due(now=utcnow())

    assert [e.id for e in due] == [event_id]


async def test_a_newer_move_does_not_reopen_an_event_a_worker_holds(
    client: Any, sessionmaker: Maker, settings: Settings
) -> None:
    from tests.conftest import WEBHOOK_SECRET
    from tests.helpers import lead_entry, status_webhook

    event_id = await record_trigger(sessionmaker, settings, 1, updated_at=1000)
    held = utcnow() + timedelta(seconds=30)
    await set_event(sessionmaker, event_id, state="failed", lease_until=held)
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    response = await client.post(
        f"/webhooks/kommo/{WEBHOOK_SECRET}",
        content=status_webhook(lead_entry(1, updated_at=2000)),
        headers=form,
    )

    assert response.json()["queued"] == 0
    assert (await load_event(sessionmaker, event_id)).state == "failed"


async def test_a_discarded_event_stays_discarded_when_the_deal_moves_again(
    client: Any, sessionmaker: Maker, settings: Settings
) -> None:
    from tests.conftest import WEBHOOK_SECRET
    from tests.helpers import lead_entry, status_webhook

    event_id = await record_trigger(sessionmaker, settings, 1, updated_at=1000)
    await set_event(sessionmaker, event_id, state="discarded")

    response = await client.post(
        f"/webhooks/kommo/{WEBHOOK_SECRET}",
        content=status_webhook(lead_entry(1, updated_at=2000)),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.json()["queued"] == 0
    assert (await load_event(sessionmaker, event_id)).state == "discarded"


async def test_a_task_the_crm_refuses_waits_between_tries_and_is_given_up_in_the_end(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Scheduled], kommo: Kommo
) -> None:
    kommo.faults.refuse_next("POST", "/api/v4/tasks", status=400, count=MAX_TASK_ATTEMPTS)
    event_id = await record_trigger(sessionmaker, settings, 2)

    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"
    assert await run_event(sessionmaker, bridge[0], event_id) is None  # not due: it waits a minute
    for _ in range(MAX_TASK_ATTEMPTS - 1):
        await set_event(sessionmaker, event_id, next_attempt_at=utcnow() - timedelta(seconds=1))
        await run_event(sessionmaker, bridge[0], event_id)

    event = await load_event(sessionmaker, event_id)
    assert (event.task_state, event.task_attempts, event.next_attempt_at) == ("failed", 10, None)
    assert "the CRM task could not be opened" in (event.last_error or "")
    async with sessionmaker() as session:
        assert await InboxRepository(session).due(now=utcnow()) == []
