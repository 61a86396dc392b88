"""One task per deal and reason, completed when the deal is invoiced.

Regression for issue 14, bug 3: replaying a still-unmapped event opened another identical task,
and once the invoice was made the "NOT raised" tasks stayed open in Kommo."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.inbox.models import DealTask
from app.settings import Settings
from tests.conftest import OPS_TOKEN, WEBHOOK_SECRET
from tests.fakes import FakeKommo, FakeSage, sage_error
from tests.helpers import (
    Scheduled,
    fake_upstreams,
    lead_entry,
    load_event,
    make_due,
    record_trigger,
    run_event,
    status_webhook,
)

AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
Maker = async_sessionmaker[AsyncSession]
DONE = (
    "Sage invoice SI-1 was raised for this deal (https://app.sage.test/invoices/1): the bridge "
    "needs nothing more here."
)


@pytest.fixture
def fakes() -> Iterator[tuple[FakeKommo, FakeSage]]:
    with fake_upstreams(pass_through="bridge.test") as (kommo, sage):
        kommo.add_element(106, "Gift card", "5", sku="GIFT-1")  # unmapped, like the box
        kommo.add_lead(1, products=[(104, 1)])
        yield kommo, sage


async def move_again(client: AsyncClient, lead_id: int, updated_at: int) -> None:
    """The manager moves the deal into the invoice stage again (after fixing it)."""
    response = await client.post(
        f"/webhooks/kommo/{WEBHOOK_SECRET}",
        content=status_webhook(lead_entry(lead_id, updated_at=updated_at)),
        headers=FORM,
    )
    assert response.json()["queued"] == 1


async def test_replaying_a_still_unmapped_deal_opens_no_second_task(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    fakes: Any,
) -> None:
    kommo, _ = fakes
    event_id = await record_trigger(sessionmaker, settings, 1)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"

    await client.post(f"/ops/events/{event_id}/replay", headers=AUTH)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"

    assert len(kommo.tasks) == 1  # one POST /api/v4/tasks, in the first run
    assert kommo.task_reads == [8001] and kommo.task_patches == []  # still open, same text
    event = await load_event(sessionmaker, event_id)
    assert (event.task_state, event.task_id) == ("created", "8001")


async def test_an_open_task_whose_text_changed_is_updated_not_opened_again(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    fakes: Any,
) -> None:
    kommo, _ = fakes
    event_id = await record_trigger(sessionmaker, settings, 1, updated_at=1000)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"
    kommo.add_lead(1, products=[(104, 1), (106, 1)])

    await move_again(client, 1, 2000)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"

    assert len(kommo.tasks) == 1
    [[patch]] = kommo.task_patches
    assert patch["id"] == 8001 and set(patch) == {"id", "text"}
    assert "'Gift card' (element 106, SKU GIFT-1)" in patch["text"]
    assert kommo.task_store[8001]["text"] == patch["text"]


async def test_a_task_the_manager_completed_or_deleted_is_not_reused(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    fakes: Any,
) -> None:
    kommo, _ = fakes
    event_id = await record_trigger(sessionmaker, settings, 1)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"

    kommo.task_store[8001]["is_completed"] = True
    await client.post(f"/ops/events/{event_id}/replay", headers=AUTH)
    await run_event(sessionmaker, bridge[0], event_id)
    del kommo.task_store[8002]
    await client.post(f"/ops/events/{event_id}/replay", headers=AUTH)
    await run_event(sessionmaker, bridge[0], event_id)

    assert len(kommo.tasks) == 3 and kommo.task_patches == []
    assert (await load_event(sessionmaker, event_id)).task_id == "8003"


async def test_invoicing_the_deal_completes_the_open_task_of_every_reason(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    fakes: Any,
) -> None:
    kommo, sage = fakes
    event_id = await record_trigger(sessionmaker, settings, 1, updated_at=1000)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"
    kommo.add_lead(1, products=[(102, 1)])  # the manager swaps the box for a widget
    sage.faults.add("post_invoice", sage_error(422, "RecordInvalid", "Contact is on hold"))
    await move_again(client, 1, 2000)
    assert await run_event(sessionmaker, bridge[0], event_id) == "failed"
    assert len(kommo.tasks) == 2  # another reason: another task

    await move_again(client, 1, 3000)
    assert await run_event(sessionmaker, bridge[0], event_id) == "invoiced"

    done = {"is_completed": True, "result": {"text": DONE}}
    assert kommo.task_patches == [[{"id": 8001, **done}, {"id": 8002, **done}]]
    assert [kommo.task_store[i]["is_completed"] for i in (8001, 8002)] == [True, True]
    assert len(kommo.tasks) == 2
    event = await load_event(sessionmaker, event_id)
    assert (event.state, event.task_state, event.last_error) == ("invoiced", "closed", None)
    assert await run_event(sessionmaker, bridge[0], event_id) is None  # nothing left to do


async def test_a_task_that_cannot_be_completed_never_holds_up_the_invoice(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    fakes: Any,
) -> None:
    kommo, sage = fakes
    event_id = await record_trigger(sessionmaker, settings, 1, updated_at=1000)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"
    kommo.add_lead(1, products=[(102, 1)])
    kommo.faults.add("patch_tasks", httpx.Response(502, text="Bad gateway"))
    await move_again(client, 1, 2000)

    assert await run_event(sessionmaker, bridge[0], event_id) == "invoiced"
    assert len(sage.invoice_posts) == 1 and len(kommo.patches) == 1  # raised and written back
    event = await load_event(sessionmaker, event_id)
    assert (event.state, event.task_state, event.task_attempts) == ("invoiced", "pending", 1)
    assert kommo.task_store[8001]["is_completed"] is False
    log = await client.get("/ops/sync-log?deal_id=1&record=task", headers=AUTH)
    assert [i["action"] for i in log.json()["items"]][:1] == ["complete_failed"]

    await make_due(sessionmaker, event_id)
    assert await run_event(sessionmaker, bridge[0], event_id) == "invoiced"

    assert kommo.task_store[8001]["is_completed"] is True
    assert len(sage.invoice_posts) == 1
    assert (await load_event(sessionmaker, event_id)).task_state == "closed"


async def test_the_deal_tasks_table_keeps_what_the_bridge_opened_and_closed(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    fakes: Any,
) -> None:
    kommo, _ = fakes
    event_id = await record_trigger(sessionmaker, settings, 1, updated_at=1000)
    await run_event(sessionmaker, bridge[0], event_id)
    kommo.add_lead(1, products=[(102, 1)])
    await move_again(client, 1, 2000)
    await run_event(sessionmaker, bridge[0], event_id)

    async with sessionmaker() as session:
        rows = (await session.scalars(select(DealTask))).all()
    assert [(r.deal_id, r.reason, r.task_id, r.completed_at is not None) for r in rows] == [
        ("1", "needs_mapping", "8001", True)
    ]
    completed_at = rows[0].completed_at
    assert "Mystery box" in rows[0].text
    assert completed_at is not None and rows[0].opened_at <= completed_at


async def test_a_refused_write_back_has_its_own_task_completed_once_it_is_written(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    fakes: Any,
) -> None:
    kommo, sage = fakes
    kommo.add_lead(1, products=[(102, 1)])
    refusal = {"title": "Bad Request", "status": 400, "detail": "Field 900 is read-only"}
    kommo.faults.add("patch_lead", httpx.Response(400, json=refusal))
    event_id = await record_trigger(sessionmaker, settings, 1)
    assert await run_event(sessionmaker, bridge[0], event_id) == "failed"
    [task] = kommo.tasks
    assert task["text"].startswith(
        "Sage invoice SI-1 WAS raised (https://app.sage.test/invoices/1), but Kommo refused to "
        "show it on this deal: PATCH /api/v4/leads/1 → 400: Field 900 is read-only. Do not "
        "raise it again"
    )

    await client.post(f"/ops/events/{event_id}/replay", headers=AUTH)
    assert await run_event(sessionmaker, bridge[0], event_id) == "invoiced"

    assert len(sage.invoice_posts) == 1 and len(kommo.patches) == 1
    assert kommo.task_patches == [[{"id": 8001, "is_completed": True, "result": {"text": DONE}}]]
    async with sessionmaker() as session:
        [row] = (await session.scalars(select(DealTask))).all()
    assert (row.reason, row.completed_at is not None) == ("write_back_refused", True)
