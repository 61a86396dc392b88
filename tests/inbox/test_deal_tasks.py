"""One task per deal and reason, completed when the deal is invoiced.

Regression for issue 14, bug 3: replaying a still-unmapped event opened another identical task,
and once the invoice was made the "NOT raised" tasks stayed open in Kommo."""

from __future__ import annotations

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.inbox.models import DealTask
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
from tests.upstreams import Kommo, Sage, Upstreams

AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
Maker = async_sessionmaker[AsyncSession]
FIRST, SECOND, THIRD = 8000001, 8000002, 8000003  # the sandbox Kommo's first task ids


@pytest.fixture
def upstreams(upstreams: Upstreams) -> Upstreams:
    upstreams.kommo.add_element(106, "Gift card", "5", sku="GIFT-1")  # unmapped, like the box
    upstreams.kommo.add_lead(1, products=[(104, 1)])
    return upstreams


def done(sage: Sage) -> str:
    """The result a completed task carries: the sandbox Sage's (only) invoice and its link."""
    [invoice] = sage.invoices
    link = f"https://api.accounting.sage.com/sandbox/ui/sales_invoices/{invoice.id}"
    return (
        f"Sage invoice SI-1 was raised for this deal ({link}): the bridge needs nothing more here."
    )


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
    kommo: Kommo,
) -> None:
    event_id = await record_trigger(sessionmaker, settings, 1)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"

    await client.post(f"/ops/events/{event_id}/replay", headers=AUTH)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"

    assert len(kommo.tasks) == 1  # one POST /api/v4/tasks, in the first run
    assert kommo.task_reads == [FIRST] and kommo.task_patches == []  # still open, same text
    event = await load_event(sessionmaker, event_id)
    assert (event.task_state, event.task_id) == ("created", str(FIRST))


async def test_an_open_task_whose_text_changed_is_updated_not_opened_again(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
) -> None:
    event_id = await record_trigger(sessionmaker, settings, 1, updated_at=1000)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"
    kommo.add_lead(1, products=[(104, 1), (106, 1)])

    await move_again(client, 1, 2000)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"

    assert len(kommo.tasks) == 1
    [[patch]] = kommo.task_patches
    assert patch["id"] == FIRST and set(patch) == {"id", "text"}
    assert "'Gift card' (element 106, SKU GIFT-1)" in patch["text"]
    assert kommo.task(FIRST).text == patch["text"]


async def test_a_task_the_manager_completed_or_deleted_is_not_reused(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
) -> None:
    event_id = await record_trigger(sessionmaker, settings, 1)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"

    kommo.task(FIRST).is_completed = True  # the manager ticks it off in Kommo
    await client.post(f"/ops/events/{event_id}/replay", headers=AUTH)
    await run_event(sessionmaker, bridge[0], event_id)
    del kommo.state.tasks[SECOND]  # the manager deletes the next one
    await client.post(f"/ops/events/{event_id}/replay", headers=AUTH)
    await run_event(sessionmaker, bridge[0], event_id)

    assert len(kommo.tasks) == 3 and kommo.task_patches == []
    assert (await load_event(sessionmaker, event_id)).task_id == str(THIRD)


async def test_invoicing_the_deal_completes_the_open_task_of_every_reason(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    upstreams: Upstreams,
) -> None:
    kommo, sage = upstreams
    event_id = await record_trigger(sessionmaker, settings, 1, updated_at=1000)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"
    kommo.add_lead(1, products=[(102, 1)])  # the manager swaps the box for a widget
    sage.faults.refuse_next(
        "POST", "/v3.1/sales_invoices", status=422, message="Contact is on hold"
    )
    await move_again(client, 1, 2000)
    assert await run_event(sessionmaker, bridge[0], event_id) == "failed"
    assert len(kommo.tasks) == 2  # another reason: another task

    await move_again(client, 1, 3000)
    assert await run_event(sessionmaker, bridge[0], event_id) == "invoiced"

    completed = {"is_completed": True, "result": {"text": done(sage)}}
    assert kommo.task_patches == [[{"id": FIRST, **completed}, {"id": SECOND, **completed}]]
    assert [kommo.task(i).is_completed for i in (FIRST, SECOND)] == [True, True]
    assert [kommo.task(i).result_text for i in (FIRST, SECOND)] == [done(sage)] * 2
    assert len(kommo.tasks) == 2
    event = await load_event(sessionmaker, event_id)
    assert (event.state, event.task_state, event.last_error) == ("invoiced", "closed", None)
    assert await run_event(sessionmaker, bridge[0], event_id) is None  # nothing left to do


async def test_a_task_that_cannot_be_completed_never_holds_up_the_invoice(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    upstreams: Upstreams,
) -> None:
    kommo, sage = upstreams
    event_id = await record_trigger(sessionmaker, settings, 1, updated_at=1000)
    assert await run_event(sessionmaker, bridge[0], event_id) == "needs_mapping"
    kommo.add_lead(1, products=[(102, 1)])
    kommo.faults.fail_next("PATCH", "/api/v4/tasks", status=502)
    await move_again(client, 1, 2000)

    assert await run_event(sessionmaker, bridge[0], event_id) == "invoiced"
    assert len(sage.invoice_posts) == 1 and len(kommo.patches) == 1  # raised and written back
    event = await load_event(sessionmaker, event_id)
    assert (event.state, event.task_state, event.task_attempts) == ("invoiced", "pending", 1)
    assert kommo.task(FIRST).is_completed is False
    log = await client.get("/ops/sync-log?deal_id=1&record=task", headers=AUTH)
    assert [i["action"] for i in log.json()["items"]][:1] == ["complete_failed"]

    await make_due(sessionmaker, event_id)
    assert await run_event(sessionmaker, bridge[0], event_id) == "invoiced"

    assert kommo.task(FIRST).is_completed is True
    assert len(sage.invoice_posts) == 1
    assert (await load_event(sessionmaker, event_id)).task_state == "closed"


async def test_the_deal_tasks_table_keeps_what_the_bridge_opened_and_closed(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
) -> None:
    event_id = await record_trigger(sessionmaker, settings, 1, updated_at=1000)
    await run_event(sessionmaker, bridge[0], event_id)
    kommo.add_lead(1, products=[(102, 1)])
    await move_again(client, 1, 2000)
    await run_event(sessionmaker, bridge[0], event_id)

    async with sessionmaker() as session:
        rows = (await session.scalars(select(DealTask))).all()
    assert [(r.deal_id, r.reason, r.task_id, r.completed_at is not None) for r in rows] == [
        ("1", "needs_mapping", str(FIRST), True)
    ]
    completed_at = rows[0].completed_at
    assert "Mystery box" in rows[0].text
    assert completed_at is not None and rows[0].opened_at <= completed_at


async def test_a_refused_write_back_has_its_own_task_completed_once_it_is_written(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    upstreams: Upstreams,
) -> None:
    kommo, sage = upstreams
    kommo.add_lead(1, products=[(102, 1)])
    kommo.faults.refuse_next(
        "PATCH", "/api/v4/leads/{id}", status=400, message="Field 900 is read-only"
    )
    event_id = await record_trigger(sessionmaker, settings, 1)
    assert await run_event(sessionmaker, bridge[0], event_id) == "failed"
    [task] = kommo.tasks
    link = f"https://api.accounting.sage.com/sandbox/ui/sales_invoices/{sage.invoices[0].id}"
    assert task["text"].startswith(
        f"Sage invoice SI-1 WAS raised ({link}), but Kommo refused to "
        "show it on this deal: PATCH /api/v4/leads/1 → 400: Field 900 is read-only. Do not "
        "raise it again"
    )

    await client.post(f"/ops/events/{event_id}/replay", headers=AUTH)
    assert await run_event(sessionmaker, bridge[0], event_id) == "invoiced"

    assert len(sage.invoice_posts) == 1 and len(kommo.patches) == 1
    completed = {"id": FIRST, "is_completed": True, "result": {"text": done(sage)}}
    assert kommo.task_patches == [[completed]]
    async with sessionmaker() as session:
        [row] = (await session.scalars(select(DealTask))).all()
    assert (row.reason, row.completed_at is not None) == ("write_back_refused", True)
