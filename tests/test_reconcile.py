"""Lost Kommo webhooks are recovered by reconciliation; a disabled hook raises an alert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from arq.connections import ArqRedis
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.inbox.models import InboxEvent
from app.inbox.reconcile import check_webhook, reconcile_trigger_stage
from app.inbox.runner import process_event
from app.queue import Queue
from app.settings import Settings
from tests.conftest import OPS_TOKEN
from tests.helpers import bridge_for, record_trigger
from tests.test_payment_status import add_invoices
from tests.upstreams import Kommo, Sage

Maker = async_sessionmaker[AsyncSession]
NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


@pytest.fixture
async def bridge(settings: Settings) -> AsyncIterator[Bridge]:
    async with bridge_for(settings) as (built, _):
        yield built


async def trigger_events(sessionmaker: Maker) -> dict[str, InboxEvent]:
    async with sessionmaker() as session:
        rows = await session.scalars(select(InboxEvent).where(InboxEvent.action == "leads.status"))
        return {row.deal_id: row for row in rows}


async def test_a_lead_whose_webhook_was_lost_gets_exactly_one_event_and_its_invoice(
    sessionmaker: Maker, settings: Settings, bridge: Bridge, kommo: Kommo, sage: Sage
) -> None:
    recent = int(NOW.timestamp()) - 60
    for lead_id in (1, 2, 3):  # 1: hook lost; 2: hook arrived; 3: already invoiced
        kommo.add_lead(lead_id, products=[(102, 1)], updated_at=recent)
    kommo.add_lead(4, status_id=502, products=[(102, 1)], updated_at=recent)  # not listed
    await record_trigger(sessionmaker, settings, 2, updated_at=recent)
    await add_invoices(sessionmaker, ("3", "c" * 32))

    async with sessionmaker() as session:
        first = await reconcile_trigger_stage(session, bridge, now=NOW)
    async with sessionmaker() as session:
        second = await reconcile_trigger_stage(session, bridge, now=NOW)

    events = await trigger_events(sessionmaker)
    assert len(first) == 1 and second == []
    assert sorted(events) == ["1", "2"]
    assert events["1"].payload["recovered_by"] == "reconciliation"
    async with sessionmaker() as session:
        assert await process_event(session, bridge, first[0]) == "invoiced"
    assert [i.reference for i in sage.invoices] == ["KOMMO-1"]


async def test_only_leads_changed_since_the_last_run_are_listed(
    sessionmaker: Maker, bridge: Bridge, kommo: Kommo
) -> None:
    kommo.add_lead(1, products=[(102, 1)], updated_at=int(NOW.timestamp()) - 3600)
    async with sessionmaker() as session:
        await reconcile_trigger_stage(session, bridge, now=NOW)
    kommo.add_lead(5, products=[(102, 1)], updated_at=int(NOW.timestamp()) - 10)

    async with sessionmaker() as session:
        due = await reconcile_trigger_stage(session, bridge, now=NOW)

    assert len(due) == 1
    assert sorted(await trigger_events(sessionmaker)) == ["1", "5"]


@pytest.mark.parametrize(
    ("hooks", "state"),
    [
        ([], "not_registered"),
        ([{"destination": "https://x.test/webhooks/kommo/s", "disabled": False}], "enabled"),
        ([{"destination": "https://x.test/webhooks/kommo/s", "disabled": True}], "disabled"),
        ([{"destination": "https://other.test/hook", "disabled": True}], "not_registered"),
    ],
)
async def test_a_disabled_hook_is_noticed(
    bridge: Bridge, kommo: Kommo, hooks: list[dict[str, Any]], state: str
) -> None:
    for hook in hooks:
        kommo.add_webhook(hook["destination"], disabled=hook["disabled"])
    assert await check_webhook(bridge) == state


async def test_the_hook_state_is_shown_to_ops(client: AsyncClient, queue: ArqRedis) -> None:
    await Queue(queue).record_webhook_state("disabled")

    response = await client.get("/ops/status", headers={"Authorization": f"Bearer {OPS_TOKEN}"})

    assert response.status_code == 200
    assert response.json()["kommo_webhook"]["state"] == "disabled"


async def test_the_disabled_hook_is_a_metric(client: AsyncClient, queue: ArqRedis) -> None:
    await Queue(queue).record_webhook_state("disabled")
    disabled = (await client.get("/metrics")).text
    await Queue(queue).record_webhook_state("enabled")
    enabled = (await client.get("/metrics")).text

    assert "sagebridge_kommo_webhook_disabled 1.0" in disabled
    assert "sagebridge_kommo_webhook_disabled 0.0" in enabled
