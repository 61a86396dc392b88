"""A deal lost (closed-lost, 143) or deleted after its invoice (CANCEL_POLICY), the job against
the sandbox Kommo and Sage on a real database: the invoice kept with a task (`task`), or voided
with a reason when nothing is paid on it (`void`); a paid or part-paid invoice never voided."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from arq.connections import ArqRedis
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge, CancelPolicy
from app.cancellation import NOT_INVOICED
from app.inbox import ops as operations
from app.inbox.models import EventState, InboxEvent, TaskReason
from app.models import InvoiceAdjustment, utcnow
from app.queue import Queue
from app.settings import Settings
from tests.conftest import WEBHOOK_SECRET, make_settings
from tests.helpers import (
    bridge_for,
    lead_deleted,
    lead_entry,
    load_event,
    record_trigger,
    record_webhook,
    run_event,
    status_webhook,
)
from tests.upstreams import Kommo, Sage

Maker = async_sessionmaker[AsyncSession]
LOST = 143
LOST_AT = 1_760_000_900


@pytest.fixture
async def voiding(database_url: str, redis_url: str) -> AsyncIterator[Bridge]:
    settings = make_settings(
        database_url=database_url, redis_url=redis_url, cancel_policy=CancelPolicy.VOID
    )
    async with bridge_for(settings) as (built, _):
        yield built


async def invoiced(sessionmaker: Maker, settings: Settings, bridge: Bridge, kommo: Kommo) -> None:
    kommo.add_lead(1, products=[(101, 2), (102, 3)])
    event_id = await record_trigger(sessionmaker, settings, 1)
    assert await run_event(sessionmaker, bridge, event_id) == EventState.INVOICED


async def lose(sessionmaker: Maker, settings: Settings, kommo: Kommo, lead_id: int = 1) -> int:
    """The manager moves the deal to closed-lost; Kommo's status hook arrives."""
    kommo.state.leads[lead_id].status_id = LOST
    body = status_webhook(lead_entry(lead_id, status_id=LOST, updated_at=LOST_AT))
    (event_id,) = await record_webhook(sessionmaker, settings, body)
    return event_id


async def test_a_lost_deal_under_the_task_policy_keeps_its_invoice_and_gets_a_task(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Any], kommo: Kommo, sage: Sage
) -> None:
    await invoiced(sessionmaker, settings, bridge[0], kommo)

    event_id = await lose(sessionmaker, settings, kommo)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.KEPT
    (task,) = kommo.tasks
    assert task["text"] == (
        "This deal was lost, but Sage invoice SI-1 stands (unpaid, 359.96 outstanding): "
        "CANCEL_POLICY is task, so the bridge leaves it to you. If the sale is off, void the "
        "invoice in Sage, or raise a credit note for what was paid; if not, move the deal back "
        "to where it belongs."
    )
    event = await load_event(sessionmaker, event_id)
    assert (event.task_reason, event.last_error) == (
        TaskReason.INVOICE_KEPT,
        "the deal was lost; invoice SI-1 stands: CANCEL_POLICY is task, so the bridge leaves it "
        "to you",
    )
    (invoice,) = sage.invoices
    assert (invoice.status.value, sage.deletes()) == ("UNPAID", [])


async def test_a_lost_deal_under_the_void_policy_is_voided_with_a_reason_and_shows_void(
    sessionmaker: Maker, settings: Settings, voiding: Bridge, kommo: Kommo, sage: Sage
) -> None:
    await invoiced(sessionmaker, settings, voiding, kommo)

    event_id = await lose(sessionmaker, settings, kommo)

    assert await run_event(sessionmaker, voiding, event_id) == EventState.VOIDED
    (invoice,) = sage.invoices
    assert (invoice.status.value, invoice.void_reason) == ("VOID", "Kommo deal 1 was lost")
    (delete,) = sage.deletes()
    assert (delete.path, delete.query, delete.body) == (
        f"/v3.1/sales_invoices/{invoice.id}",
        {"void_reason": ["Kommo deal 1 was lost"]},
        {"void_reason": "Kommo deal 1 was lost"},
    )
    assert kommo.batch_patches[-1] == [
        {
            "id": 1,
            "custom_fields_values": [{"field_id": 950, "values": [{"enum_id": 15}]}],
        }
    ]
    assert kommo.shown(1)[950] == 15
    assert kommo.tasks == []
    (adjustment,) = await adjustments(sessionmaker)
    assert (adjustment.kind, adjustment.state, adjustment.reason) == (
        "void",
        "done",
        "Kommo deal 1 was lost",
    )


@pytest.mark.parametrize(
    ("paid", "shown"), [("359.96", "paid, 0.00"), ("100.00", "part paid, 259.96")]
)
async def test_an_invoice_with_money_paid_is_never_voided(
    sessionmaker: Maker,
    settings: Settings,
    voiding: Bridge,
    kommo: Kommo,
    sage: Sage,
    paid: str,
    shown: str,
) -> None:
    await invoiced(sessionmaker, settings, voiding, kommo)
    (invoice,) = sage.invoices
    sage.pay(invoice.id, paid, utcnow())

    event_id = await lose(sessionmaker, settings, kommo)

    assert await run_event(sessionmaker, voiding, event_id) == EventState.KEPT
    assert sage.deletes() == []
    assert invoice.status.value in ("PAID", "PART_PAID")
    (task,) = kommo.tasks
    assert task["text"] == (
        f"This deal was lost, but Sage invoice SI-1 stands ({shown} outstanding): it has money "
        "paid or credited on it, so it is never voided. If the sale is off, void the invoice "
        "in Sage, or raise a credit note for what was paid; if not, move the deal back to where "
        "it belongs."
    )
    assert await adjustments(sessionmaker) == []


async def test_a_deleted_deal_under_the_void_policy_is_voided_without_touching_the_deal(
    sessionmaker: Maker, settings: Settings, voiding: Bridge, kommo: Kommo, sage: Sage
) -> None:
    await invoiced(sessionmaker, settings, voiding, kommo)
    writes = len(kommo.patches) + len(kommo.batch_patches)
    kommo.delete_lead(1)

    (event_id,) = await record_webhook(sessionmaker, settings, lead_deleted(1))

    assert await run_event(sessionmaker, voiding, event_id) == EventState.VOIDED
    (invoice,) = sage.invoices
    assert (invoice.status.value, invoice.void_reason) == ("VOID", "Kommo deal 1 was deleted")
    assert len(kommo.patches) + len(kommo.batch_patches) == writes
    assert kommo.tasks == []


async def test_a_deleted_deal_whose_invoice_is_kept_has_nowhere_for_a_task(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Any], kommo: Kommo, sage: Sage
) -> None:
    await invoiced(sessionmaker, settings, bridge[0], kommo)
    kommo.delete_lead(1)

    (event_id,) = await record_webhook(sessionmaker, settings, lead_deleted(1))

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.KEPT
    event = await load_event(sessionmaker, event_id)
    assert event.last_error == (
        "the deal was deleted; invoice SI-1 stands: CANCEL_POLICY is task, so the bridge leaves "
        "it to you; the deal is gone, so no task could be opened"
    )
    assert (kommo.tasks, sage.deletes()) == ([], [])


async def test_a_deal_no_longer_lost_or_restored_is_left_alone(
    sessionmaker: Maker, settings: Settings, voiding: Bridge, kommo: Kommo, sage: Sage
) -> None:
    await invoiced(sessionmaker, settings, voiding, kommo)
    lost = await lose(sessionmaker, settings, kommo)
    kommo.state.leads[1].status_id = 142  # won after all, before the job ran
    (deleted,) = await record_webhook(sessionmaker, settings, lead_deleted(1))

    assert await run_event(sessionmaker, voiding, lost) == EventState.SKIPPED
    assert await run_event(sessionmaker, voiding, deleted) == EventState.SKIPPED
    assert [(await load_event(sessionmaker, i)).last_error for i in (lost, deleted)] == [
        "the deal is no longer lost (now stage 142)",
        "the deal was restored in the CRM",
    ]
    assert sage.deletes() == []


async def test_an_invoice_voided_in_sage_already_is_not_kept_and_the_deal_shows_void(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Any], kommo: Kommo, sage: Sage
) -> None:
    await invoiced(sessionmaker, settings, bridge[0], kommo)
    (invoice,) = sage.invoices
    sage.void(invoice.id, "Raised by mistake", utcnow())

    event_id = await lose(sessionmaker, settings, kommo)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.VOIDED
    event = await load_event(sessionmaker, event_id)
    assert event.last_error == "invoice SI-1 is void in Sage already"
    assert (kommo.tasks, sage.deletes(), kommo.shown(1)[950]) == ([], [], 15)


async def test_a_void_answer_lost_on_the_way_is_not_sent_twice(
    sessionmaker: Maker, settings: Settings, voiding: Bridge, kommo: Kommo, sage: Sage
) -> None:
    await invoiced(sessionmaker, settings, voiding, kommo)
    sage.faults.timeout_after_commit("DELETE", "/v3.1/sales_invoices/{key}", delay=30)
    event_id = await lose(sessionmaker, settings, kommo)

    assert await run_event(sessionmaker, voiding, event_id) == EventState.RETRYING
    async with sessionmaker() as session:
        event = await session.get(InboxEvent, event_id)
        assert event is not None
        event.next_attempt_at = utcnow()
        await session.commit()
    assert await run_event(sessionmaker, voiding, event_id) == EventState.VOIDED

    assert len(sage.deletes()) == 1  # the retry found the invoice void already
    assert kommo.shown(1)[950] == 15


async def test_only_lost_or_deleted_deals_that_were_invoiced_become_work(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Any],
    kommo: Kommo,
) -> None:
    await invoiced(sessionmaker, settings, bridge[0], kommo)
    body = (
        status_webhook(lead_entry(1, status_id=LOST), lead_entry(2, status_id=LOST))
        + b"&"
        + lead_deleted(1, 3).split(b"&account")[0]
    )
    response = await client.post(
        f"/webhooks/kommo/{WEBHOOK_SECRET}",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.json() == {"received": 4, "queued": 2, "skipped": 2, "ignored": 0}
    async with sessionmaker() as session:
        rows = await session.scalars(select(InboxEvent).where(InboxEvent.action != "leads.status"))
        deletes = {(e.deal_id, e.state, e.last_error) for e in rows}
    assert deletes == {("1", "pending", None), ("3", "skipped", NOT_INVOICED)}
    assert parse_qsl(body.decode())[-2:] == [
        ("leads[delete][0][id]", "1"),
        ("leads[delete][1][id]", "3"),
    ]


async def adjustments(sessionmaker: Maker) -> list[InvoiceAdjustment]:
    async with sessionmaker() as session:
        return list((await session.scalars(select(InvoiceAdjustment))).all())


async def test_ops_switch_to_the_void_policy_and_replay_a_kept_deletion(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Any],
    voiding: Bridge,
    kommo: Kommo,
    sage: Sage,
    queue: ArqRedis,
) -> None:
    await invoiced(sessionmaker, settings, bridge[0], kommo)
    kommo.delete_lead(1)
    (event_id,) = await record_webhook(sessionmaker, settings, lead_deleted(1))
    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.KEPT

    async with sessionmaker() as session:
        await operations.replay(session, Queue(queue), event_id)

    assert await run_event(sessionmaker, voiding, event_id) == EventState.VOIDED
    (invoice,) = sage.invoices
    assert invoice.void_reason == "Kommo deal 1 was deleted"
