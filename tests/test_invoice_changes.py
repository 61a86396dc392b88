"""A deal that changes after its invoice (CHANGE_POLICY): the job against the sandbox Kommo and
Sage on a real database. Same lines: nothing; other lines: a task (`task`), or a credit note for
the old invoice, set against it, then a new invoice (`reissue`), once however it is interrupted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge, ChangePolicy
from app.inbox.models import EventState, TaskReason
from app.invoicing import idempotency_key
from app.models import DealInvoice, InvoiceAdjustment, SyncRecord, utcnow
from app.settings import Settings
from tests.conftest import make_settings
from tests.helpers import bridge_for, load_event, make_due, record_trigger, run_event
from tests.upstreams import Kommo, Sage

Maker = async_sessionmaker[AsyncSession]
MOVED_AGAIN = 1_760_000_500
CREDIT_NOTES = "/v3.1/sales_credit_notes"


@pytest.fixture
async def reissuing(database_url: str, redis_url: str) -> AsyncIterator[Bridge]:
    settings = make_settings(
        database_url=database_url, redis_url=redis_url, change_policy=ChangePolicy.REISSUE
    )
    async with bridge_for(settings) as (built, _):
        yield built


async def invoiced_deal(
    sessionmaker: Maker, settings: Settings, bridge: Bridge, kommo: Kommo
) -> int:
    """Deal 1 (2 consulting hours, 3 widgets) invoiced as SI-1; returns its trigger event."""
    kommo.add_lead(1, products=[(101, 2), (102, 3)])
    event_id = await record_trigger(sessionmaker, settings, 1)
    assert await run_event(sessionmaker, bridge, event_id) == EventState.INVOICED
    return event_id


async def move_again(sessionmaker: Maker, settings: Settings) -> int:
    """The manager moves the deal into the invoice stage again (a newer Kommo change)."""
    return await record_trigger(sessionmaker, settings, 1, updated_at=MOVED_AGAIN)


async def records(sessionmaker: Maker, model: Any) -> list[Any]:
    async with sessionmaker() as session:
        return list((await session.scalars(select(model).order_by(model.id))).all())


async def test_the_same_lines_leave_the_invoice_alone_and_say_so(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Any], kommo: Kommo, sage: Sage
) -> None:
    await invoiced_deal(sessionmaker, settings, bridge[0], kommo)
    writes = len(kommo.patches)

    event_id = await move_again(sessionmaker, settings)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.UNCHANGED
    event = await load_event(sessionmaker, event_id)
    assert event.last_error == "the deal's lines match invoice SI-1"
    assert (len(sage.invoice_posts), sage.credit_note_posts, len(kommo.patches)) == (1, [], writes)
    assert kommo.tasks == []
    notes = await records(sessionmaker, SyncRecord)
    assert ("invoice", "unchanged") in [(n.record, n.action) for n in notes]


async def test_other_lines_under_the_task_policy_list_the_differences_and_post_nothing(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Any], kommo: Kommo, sage: Sage
) -> None:
    await invoiced_deal(sessionmaker, settings, bridge[0], kommo)
    kommo.set_products(1, [(101, 2), (102, 4), (105, 2)])

    event_id = await move_again(sessionmaker, settings)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.CHANGED
    (task,) = kommo.tasks
    assert task["text"] == (
        "This deal changed after Sage invoice SI-1 was raised: 'Handbook' added (2 × 12.5); "
        "'Widget': quantity 3 → 4. Nothing was posted. If the invoice must follow the deal, "
        "credit it in Sage and raise a new one (or ask ops to set CHANGE_POLICY=reissue, then "
        "move the deal to the invoice stage again); if the change was a mistake, undo it in the "
        "deal."
    )
    event = await load_event(sessionmaker, event_id)
    assert event.task_reason == TaskReason.DEAL_CHANGED
    assert (len(sage.invoice_posts), sage.credit_note_posts, sage.allocation_posts) == (1, [], [])
    assert await records(sessionmaker, InvoiceAdjustment) == []


async def test_reissue_credits_the_old_invoice_then_raises_a_new_one_with_both_numbers_shown(
    sessionmaker: Maker, settings: Settings, reissuing: Bridge, kommo: Kommo, sage: Sage
) -> None:
    await invoiced_deal(sessionmaker, settings, reissuing, kommo)
    (old,) = sage.invoices
    kommo.set_products(1, [(101, 2), (102, 4)])

    event_id = await move_again(sessionmaker, settings)

    assert await run_event(sessionmaker, reissuing, event_id) == EventState.REISSUED
    (note,) = sage.credit_notes
    (credit_post,) = sage.credit_note_posts
    assert credit_post == {
        "sales_credit_note": {
            "contact_id": old.contact_id,
            "date": utcnow().date().isoformat(),
            "original_invoice_date": old.date.isoformat(),
            "reference": "KOMMO-1-CN",
            "notes": "Credits SI-1: the deal changed ('Widget': quantity 3 → 4)",
            "credit_note_lines": [
                {
                    "description": "Consulting hour",
                    "ledger_account_id": "la-services",
                    "quantity": "2.0",
                    "unit_price": "120.0",
                    "tax_rate_id": "GB_STANDARD",
                    "tax_amount": "48.0",
                },
                {
                    "description": "Widget",
                    "ledger_account_id": "la-goods",
                    "quantity": "3.0",
                    "unit_price": "19.99",
                    "tax_rate_id": "GB_STANDARD",
                    "tax_amount": "11.99",
                },
            ],
            "idempotency_id": idempotency_key("kommo", "29000001", "1", "cn", old.id),
        }
    }
    assert sage.allocation_posts == [
        {
            "contact_allocation": {
                "transaction_type_id": "CUSTOMER_ALLOCATION",
                "contact_id": old.contact_id,
                "date": utcnow().date().isoformat(),
                "allocated_artefacts": [
                    {"artefact_id": old.id, "amount": "359.96"},
                    {"artefact_id": note.id, "amount": "-359.96"},
                ],
                "idempotency_id": idempotency_key(
                    idempotency_key("kommo", "29000001", "1", "cn", old.id), "allocation"
                ),
            }
        }
    ]
    old_now, new = sage.invoices
    assert (old_now.status.value, old_now.outstanding_amount) == ("PAID", Decimal("0.00"))
    assert (note.credit_note_number, note.status.value) == ("SCN-1", "PAID")
    (_, second) = sage.invoice_posts
    assert second["sales_invoice"]["reference"] == "KOMMO-1-R2"
    assert second["sales_invoice"]["idempotency_id"] == idempotency_key(
        "kommo", "29000001", "1", "r2"
    )
    assert [(ln.description, ln.quantity) for ln in new.lines] == [
        ("Consulting hour", Decimal(2)),
        ("Widget", Decimal(4)),
    ]
    assert kommo.shown(1)[900] == "SI-2 (replaces SI-1, credit note SCN-1)"
    assert kommo.shown(1)[901].endswith(f"/sandbox/ui/sales_invoices/{new.id}")
    (record,) = await records(sessionmaker, DealInvoice)
    assert (record.revision, record.invoice_id, record.reference) == (2, new.id, "KOMMO-1-R2")
    (adjustment,) = await records(sessionmaker, InvoiceAdjustment)
    assert (adjustment.state, adjustment.document_number, adjustment.amount) == (
        "done",
        "SCN-1",
        Decimal("359.96"),
    )


async def test_a_kill_between_the_credit_note_and_the_new_invoice_still_gives_one_of_each(
    sessionmaker: Maker,
    settings: Settings,
    reissuing: Bridge,
    kommo: Kommo,
    sage: Sage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker dies (a BaseException nothing catches) as the new invoice is about to be
    posted: the credit note is raised and allocated; the next run raises the new invoice only."""

    class Killed(BaseException):
        pass

    await invoiced_deal(sessionmaker, settings, reissuing, kommo)
    kommo.set_products(1, [(101, 3)])
    create = reissuing.accounting.create_invoice

    async def die(**_: Any) -> Any:
        raise Killed

    monkeypatch.setattr(reissuing.accounting, "create_invoice", die)
    event_id = await move_again(sessionmaker, settings)
    with pytest.raises(Killed):
        await run_event(sessionmaker, reissuing, event_id)
    assert (len(sage.credit_notes), len(sage.allocation_posts), len(sage.invoices)) == (1, 1, 1)

    monkeypatch.setattr(reissuing.accounting, "create_invoice", create)
    await make_due(sessionmaker, event_id, expire_lease=True)
    assert await run_event(sessionmaker, reissuing, event_id) == EventState.REISSUED

    assert len(sage.credit_note_posts) == len(sage.credit_notes) == 1
    assert len(sage.allocation_posts) == 1
    assert [i.reference for i in sage.invoices] == ["KOMMO-1", "KOMMO-1-R2"]
    assert kommo.shown(1)[900] == "SI-2 (replaces SI-1, credit note SCN-1)"


async def test_a_credit_note_whose_answer_was_lost_is_found_not_raised_twice(
    sessionmaker: Maker, settings: Settings, reissuing: Bridge, kommo: Kommo, sage: Sage
) -> None:
    await invoiced_deal(sessionmaker, settings, reissuing, kommo)
    kommo.set_products(1, [(101, 3)])
    sage.faults.timeout_after_commit("POST", CREDIT_NOTES, delay=30)

    event_id = await move_again(sessionmaker, settings)
    assert await run_event(sessionmaker, reissuing, event_id) == EventState.RETRYING
    await make_due(sessionmaker, event_id)
    assert await run_event(sessionmaker, reissuing, event_id) == EventState.REISSUED

    assert len(sage.credit_notes) == 1
    assert len(sage.credit_note_posts) == 1  # the held one; the retry looked it up by reference
    assert [q["search"] for q in sage.queries(CREDIT_NOTES)] == ["KOMMO-1-CN", "KOMMO-1-CN"]
    assert [i.reference for i in sage.invoices] == ["KOMMO-1", "KOMMO-1-R2"]


async def test_an_invoice_with_money_on_it_is_never_reissued(
    sessionmaker: Maker, settings: Settings, reissuing: Bridge, kommo: Kommo, sage: Sage
) -> None:
    await invoiced_deal(sessionmaker, settings, reissuing, kommo)
    (invoice,) = sage.invoices
    sage.pay(invoice.id, "100.00", utcnow())
    kommo.set_products(1, [(101, 3)])

    event_id = await move_again(sessionmaker, settings)

    assert await run_event(sessionmaker, reissuing, event_id) == EventState.CHANGED
    (task,) = kommo.tasks
    assert task["text"] == (
        "This deal changed after Sage invoice SI-1 was raised: 'Consulting hour': quantity 2 → "
        "3; 'Widget' removed (3 × 19.99). The bridge did not credit and reissue the invoice: "
        "it is part paid in Sage (paid 100.00, credited 0.00), and the bridge never credits an "
        "invoice with money on it. Settle it in Sage (a credit note for what is no longer owed, "
        "or a new invoice), or undo the change in the deal."
    )
    assert (sage.credit_note_posts, sage.allocation_posts, len(sage.invoices)) == ([], [], 1)


async def test_a_refused_credit_note_is_a_task_and_a_replay_carries_on(
    sessionmaker: Maker, settings: Settings, reissuing: Bridge, kommo: Kommo, sage: Sage
) -> None:
    await invoiced_deal(sessionmaker, settings, reissuing, kommo)
    kommo.set_products(1, [(101, 3)])
    sage.faults.refuse_next("POST", CREDIT_NOTES, status=422, message="Period is locked")

    event_id = await move_again(sessionmaker, settings)
    assert await run_event(sessionmaker, reissuing, event_id) == EventState.FAILED
    (task,) = kommo.tasks
    assert task["text"] == (
        "This deal changed after Sage invoice SI-1 was raised ('Consulting hour': quantity 2 → "
        "3; 'Widget' removed (3 × 19.99)), and Sage refused the credit note: POST "
        "/sales_credit_notes → 422: RecordInvalid: Period is locked. Nothing was posted; "
        "correct what Sage names, then ask ops to replay the event: the bridge carries on where "
        "it stopped."
    )

    event_id = await move_again_later(sessionmaker, settings)
    assert await run_event(sessionmaker, reissuing, event_id) == EventState.REISSUED
    assert (len(sage.credit_notes), [i.reference for i in sage.invoices]) == (
        1,
        ["KOMMO-1", "KOMMO-1-R2"],
    )


async def move_again_later(sessionmaker: Maker, settings: Settings) -> int:
    return await record_trigger(sessionmaker, settings, 1, updated_at=MOVED_AGAIN + 60)
