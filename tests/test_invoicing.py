"""The invoice job end to end against the sandbox Kommo and Sage, on a real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from app.bridge import Bridge
from app.inbox.models import EventState, TaskState
from app.invoicing import idempotency_key
from app.metrics import INVOICE_TOTALS_DIFFER
from app.models import ContactLink, DealInvoice, SyncRecord, utcnow
from app.settings import Settings
from tests.helpers import (
    Scheduled,
    bridge_for,
    load_event,
    make_due,
    record_trigger,
    run_event,
)
from tests.upstreams import Kommo, Sage

Maker = async_sessionmaker[AsyncSession]


INVOICES = "/v3.1/sales_invoices"


async def test_happy_path_creates_customer_invoice_and_writes_back(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    kommo.add_lead(1, products=[(101, 2.5), (102, 3), (103, 1)])
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.INVOICED

    assert sage.contact_posts == [
        {
            "contact": {
                "name": "Ada Lovelace",
                "contact_type_ids": ["CUSTOMER"],
                "main_contact_person": {
                    "name": "Ada Lovelace",
                    "email": "ada@example.com",
                    "is_main_contact": True,
                },
                "idempotency_id": idempotency_key("sage", "contact", "ada@example.com"),
            }
        }
    ]
    today = date.today()
    assert sage.invoice_posts == [
        {
            "sales_invoice": {
                "contact_id": sage.contacts[0].id,
                "date": today.isoformat(),
                "due_date": (today + timedelta(days=14)).isoformat(),
                "reference": "KOMMO-1",
                "notes": "Deal 1 (https://testco.kommo.com/leads/detail/1)",
                "invoice_lines": [
                    {
                        "description": "Consulting hour",
                        "ledger_account_id": "la-services",
                        "quantity": "2.5",
                        "unit_price": "120.00",
                        "tax_rate_id": "GB_STANDARD",
                        "tax_amount": "60.00",
                    },
                    {
                        "description": "Widget",
                        "ledger_account_id": "la-goods",
                        "quantity": "3",
                        "unit_price": "19.99",
                        "tax_rate_id": "GB_STANDARD",
                        "tax_amount": "11.99",
                    },
                    {
                        "description": "Support plan",
                        "ledger_account_id": "la-subscriptions",
                        "quantity": "1",
                        "unit_price": "499",
                        "tax_rate_id": "GB_LOWER",
                        "tax_amount": "24.95",
                    },
                ],
                "idempotency_id": idempotency_key("kommo", "29000001", "1"),
            }
        }
    ]
    assert kommo.patches == [
        (
            1,
            {
                "custom_fields_values": [
                    {"field_id": 900, "values": [{"value": "SI-1"}]},
                    {"field_id": 901, "values": [{"value": invoice_link(sage)}]},
                    {"field_id": 950, "values": [{"enum_id": 11}]},  # payment status: unpaid
                ]
            },
        )
    ]
    assert kommo.tasks == []
    async with sessionmaker() as session:
        record = (await session.scalars(select(DealInvoice))).one()
        link = (await session.scalars(select(ContactLink))).one()
    assert (record.state, record.invoice_number, record.reference) == (
        "written_back",
        "SI-1",
        "KOMMO-1",
    )
    assert (link.email, link.accounting_contact_id) == ("ada@example.com", sage.contacts[0].id)


async def test_existing_customer_is_reused_not_duplicated(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    sage.add_customer("f" * 32, "ADA@example.com")
    kommo.add_lead(1, products=[(102, 1)])
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.INVOICED

    assert sage.contact_posts == []
    assert sage.invoice_posts[0]["sales_invoice"]["contact_id"] == "f" * 32


async def test_remembered_contact_link_saves_the_lookup(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    kommo.add_lead(1, products=[(102, 1)])
    kommo.add_lead(2, products=[(105, 2)])
    await run_event(sessionmaker, bridge[0], await record_trigger(sessionmaker, settings, 1))
    second = await record_trigger(sessionmaker, settings, 2)

    assert await run_event(sessionmaker, bridge[0], second) == EventState.INVOICED

    contact_gets = sage.queries("/v3.1/contacts")
    assert len(contact_gets) == 1
    assert len(sage.contact_posts) == 1
    assert [p["sales_invoice"]["contact_id"] for p in sage.invoice_posts] == [
        sage.contacts[0].id
    ] * 2


@pytest.mark.parametrize(
    ("element_id", "ledger", "tax_rate", "tax"),
    [
        (101, "la-services", "GB_STANDARD", "24.00"),  # by element id, default tax rate
        (102, "la-goods", "GB_STANDARD", "4.00"),  # by SKU
        (103, "la-subscriptions", "GB_LOWER", "24.95"),  # by product type
        (105, "la-goods", "GB_ZERO", "0.00"),  # zero-rated: tax 0.00 still sent
    ],
)
async def test_each_mapping_kind_picks_the_ledger_account(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
    element_id: int,
    ledger: str,
    tax_rate: str,
    tax: str,
) -> None:
    kommo.add_lead(1, products=[(element_id, 1)])
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.INVOICED

    line = sage.invoice_posts[0]["sales_invoice"]["invoice_lines"][0]
    assert (line["ledger_account_id"], line["tax_rate_id"], line["tax_amount"]) == (
        ledger,
        tax_rate,
        tax,
    )


async def test_tax_is_rounded_per_line_half_up(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    # 0.125 × 3 = 0.375 net → 0.38; 20 % of 0.38 = 0.076 → 0.08
    kommo.add_element(106, "Screw", "0.125", sku="WID-01")
    kommo.add_lead(1, products=[(106, 3), (103, "0.5")])
    event_id = await record_trigger(sessionmaker, settings, 1)

    await run_event(sessionmaker, bridge[0], event_id)

    lines = sage.invoice_posts[0]["sales_invoice"]["invoice_lines"]
    assert [(ln["quantity"], ln["unit_price"], ln["tax_amount"]) for ln in lines] == [
        ("3", "0.125", "0.08"),
        ("0.5", "499", "12.48"),  # 249.50 × 5 % = 12.475 → 12.48
    ]


async def test_unmapped_line_raises_no_invoice_and_opens_one_task(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    kommo.add_lead(1, products=[(102, 1), (104, 2)], responsible_user_id=77)
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.NEEDS_MAPPING

    assert sage.invoice_posts == [] and sage.contact_posts == []
    assert len(kommo.tasks) == 1
    task = kommo.tasks[0]
    assert task["entity_id"] == 1 and task["entity_type"] == "leads"
    assert task["responsible_user_id"] == 77 and task["task_type_id"] == 1
    assert "'Mystery box' (element 104, SKU MYST-1, type other)" in task["text"]
    assert "tests/data/ledger_mappings.yaml" in task["text"]
    assert task["complete_till"] > utcnow().timestamp()
    event = await load_event(sessionmaker, event_id)
    assert (event.task_state, event.task_id) == (TaskState.CREATED, "8000001")
    assert "Mystery box" in (event.last_error or "")


async def test_deal_no_longer_in_stage_is_skipped(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    kommo.add_lead(1, status_id=502, products=[(102, 1)])
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.SKIPPED

    assert sage.invoice_posts == [] and kommo.tasks == [] and kommo.patches == []
    assert "not the invoice stage" in ((await load_event(sessionmaker, event_id)).last_error or "")


async def test_transient_failures_retry_at_the_configured_delays_then_one_task(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    kommo.add_lead(1, products=[(102, 1)])
    sage.faults.fail_next("POST", INVOICES, status=503)
    sage.faults.disconnect_next("POST", INVOICES)
    sage.faults.rate_limit_next("POST", INVOICES, retry_after=600)
    sage.faults.fail_next("POST", INVOICES, status=500)
    event_id = await record_trigger(sessionmaker, settings, 1)
    built, scheduled = bridge

    waits = []
    for attempt in (1, 2, 3):
        before = utcnow()
        assert await run_event(sessionmaker, built, event_id) == EventState.RETRYING
        event = await load_event(sessionmaker, event_id)
        assert event.attempts == attempt and event.task_state is None
        assert event.next_attempt_at is not None
        waits.append(round((event.next_attempt_at - before).total_seconds()))
        await make_due(sessionmaker, event_id)
    assert await run_event(sessionmaker, built, event_id) == EventState.FAILED

    assert waits == [60, 300, 900]  # 429 asked for 600 s; the 900 s rung is longer anyway
    assert [(c[0], c[1]) for c in scheduled.calls] == [(event_id, 1), (event_id, 2), (event_id, 3)]
    assert len(sage.invoice_posts) == 0  # every POST failed before Sage stored anything
    assert len(kommo.tasks) == 1
    still_down = "UnexpectedError: An unexpected error has occurred."
    assert "after 4 attempts" in kommo.tasks[0]["text"] and still_down in kommo.tasks[0]["text"]
    assert f"/ops/events/{event_id}/replay" in kommo.tasks[0]["text"]
    # Nothing more happens for a finished event.
    assert await run_event(sessionmaker, built, event_id) is None
    assert len(kommo.tasks) == 1


async def test_retry_after_longer_than_the_rung_is_honoured(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    kommo.add_lead(1, products=[(102, 1)])
    kommo.faults.rate_limit_next("GET", "/api/v4/leads/{id}", retry_after=120)
    event_id = await record_trigger(sessionmaker, settings, 1)
    before = utcnow()

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.RETRYING
    after = utcnow()

    event = await load_event(sessionmaker, event_id)
    assert event.next_attempt_at is not None
    # 120 s from the 429 (not the 60 s rung), however long the run took on a busy machine.
    wait = timedelta(seconds=120)
    assert before + wait <= event.next_attempt_at <= after + wait


async def test_permanent_sage_error_opens_a_task_at_once_quoting_sage(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    kommo.add_lead(1, products=[(102, 1)])
    sage.faults.refuse_next(
        "POST", INVOICES, status=422, message="Ledger account is not valid for sales"
    )
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.FAILED

    assert bridge[1].calls == []
    assert len(kommo.tasks) == 1
    assert "RecordInvalid: Ledger account is not valid for sales" in kommo.tasks[0]["text"]
    event = await load_event(sessionmaker, event_id)
    assert event.attempts == 0 and "Ledger account is not valid" in (event.last_error or "")


async def test_task_creation_failure_is_retried_later_not_lost(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    kommo.add_lead(1, products=[(104, 1)])
    kommo.faults.fail_next("POST", "/api/v4/tasks", status=502)
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.NEEDS_MAPPING
    event = await load_event(sessionmaker, event_id)
    assert event.task_state == TaskState.PENDING and kommo.tasks == []

    await make_due(sessionmaker, event_id)
    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.NEEDS_MAPPING
    assert len(kommo.tasks) == 1
    assert (await load_event(sessionmaker, event_id)).task_state == TaskState.CREATED


async def test_contact_without_email_fails_with_a_task_saying_so(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    kommo.add_contact(7002, "No Mail", None)
    kommo.add_lead(1, contact_id=7002, products=[(102, 1)])
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.FAILED

    assert sage.invoice_posts == []
    assert "no email address" in kommo.tasks[0]["text"]


async def test_deleted_deal_is_skipped(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    event_id = await record_trigger(sessionmaker, settings, 404)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.SKIPPED
    assert kommo.tasks == []


def deal_in(kommo: Kommo, currency: str | None) -> None:
    """The CRM reports the deal's amounts in `currency` (Kommo: the account's currency)."""
    kommo.state.account.currency = currency


def invoice_link(sage: Sage) -> str:
    """Where the sandbox Sage's `alternate` link for its (only) invoice points."""
    return f"https://api.accounting.sage.com/sandbox/ui/sales_invoices/{sage.invoices[0].id}"


@asynccontextmanager
async def bridge_with(settings: Settings, **changes: Any) -> AsyncIterator[Bridge]:
    async with bridge_for(settings.model_copy(update=changes)) as (built, _):
        yield built


async def sync_log(sessionmaker: Maker, action: str) -> list[dict[str, Any]]:
    """The details of the sync log's invoice entries with this action."""
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(SyncRecord).where(SyncRecord.record == "invoice", SyncRecord.action == action)
        )
        return [row.detail for row in rows]


async def test_due_date_is_left_to_sage_and_taken_from_its_answer(
    sessionmaker: Maker, settings: Settings, kommo: Kommo, sage: Sage
) -> None:
    sage.add_customer("f" * 32, "ada@example.com", credit_days=15)
    kommo.add_lead(1, products=[(102, 1)])
    event_id = await record_trigger(sessionmaker, settings, 1)

    async with bridge_with(settings, invoice_due_days=None) as built:
        assert await run_event(sessionmaker, built, event_id) == EventState.INVOICED

    assert "due_date" not in sage.invoice_posts[0]["sales_invoice"]
    async with sessionmaker() as session:
        record = (await session.scalars(select(DealInvoice))).one()
    assert record.due_date == date.today() + timedelta(days=15)  # Sage's, from credit_days


async def test_deal_in_another_currency_gets_a_task_and_no_invoice_by_default(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    kommo.add_lead(1, products=[(102, 1)])
    deal_in(kommo, "EUR")
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.FAILED

    assert sage.invoice_attempts == [] and sage.contact_posts == []
    (task,) = kommo.tasks
    assert task["text"].startswith(
        "Sage invoice NOT raised: the deal is in EUR but the Sage business books in GBP. "
    )
    assert "CURRENCY_POLICY=deal_currency" in task["text"]
    event = await load_event(sessionmaker, event_id)
    assert event.last_error == "the deal is in EUR but the Sage business books in GBP"


async def test_existing_customer_trading_in_another_currency_gets_a_task(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    sage.add_customer("f" * 32, "ada@example.com", currency_id="USD")
    kommo.add_lead(1, products=[(102, 1)])
    deal_in(kommo, "GBP")
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.FAILED

    assert sage.invoice_attempts == []
    assert kommo.tasks[0]["text"].startswith(
        f"Sage invoice NOT raised: the Sage customer {'f' * 32} trades in USD but this invoice "
        "would be in GBP. "
    )


async def test_deal_currency_policy_invoices_a_new_customer_in_the_deals_currency(
    sessionmaker: Maker, settings: Settings, kommo: Kommo, sage: Sage
) -> None:
    sage.book.business.multi_currency_enabled = True
    sage.book.business.exchange_rates["EUR"] = Decimal("1.17")
    kommo.add_lead(1, products=[(102, 2)])
    event_id = await record_trigger(sessionmaker, settings, 1)

    async with bridge_with(settings, currency_policy="deal_currency") as built:
        deal_in(kommo, "EUR")
        assert await run_event(sessionmaker, built, event_id) == EventState.INVOICED

    assert sage.contact_posts[0]["contact"]["currency_id"] == "EUR"
    posted = sage.invoice_posts[0]["sales_invoice"]
    assert posted["currency_id"] == "EUR" and "exchange_rate" not in posted
    assert sage.invoices[0].currency_id == "EUR"
    async with sessionmaker() as session:
        link = (await session.scalars(select(ContactLink))).one()
    assert link.currency == "EUR"


@pytest.mark.parametrize(
    ("multi_currency", "customer_currency", "expected"),
    [
        (False, None, "the deal is in EUR but the Sage business books in GBP and has "),
        (
            True,
            "USD",
            f"the Sage customer {'f' * 32} trades in USD but this invoice would be in EUR",
        ),
        (
            True,
            "GBP",
            f"the Sage customer {'f' * 32} trades in GBP but this invoice would be in EUR",
        ),
    ],
)
async def test_deal_currency_policy_still_refuses_what_sage_cannot_book(
    sessionmaker: Maker,
    settings: Settings,
    kommo: Kommo,
    sage: Sage,
    multi_currency: bool,
    customer_currency: str | None,
    expected: str,
) -> None:
    sage.book.business.multi_currency_enabled = multi_currency
    if customer_currency:
        sage.add_customer("f" * 32, "ada@example.com", currency_id=customer_currency)
    kommo.add_lead(1, products=[(102, 1)])
    event_id = await record_trigger(sessionmaker, settings, 1)

    async with bridge_with(settings, currency_policy="deal_currency") as built:
        deal_in(kommo, "EUR")
        assert await run_event(sessionmaker, built, event_id) == EventState.FAILED

    assert sage.invoice_attempts == [] and sage.contact_posts == []
    assert kommo.tasks[0]["text"].startswith(f"Sage invoice NOT raised: {expected}")


async def test_deal_without_a_currency_is_invoiced_in_the_business_currency(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    kommo.add_lead(1, products=[(102, 1)])
    deal_in(kommo, None)
    event_id = await record_trigger(sessionmaker, settings, 1)

    with capture_logs() as logs:
        assert await run_event(sessionmaker, bridge[0], event_id) == EventState.INVOICED

    assert "currency_id" not in sage.invoice_posts[0]["sales_invoice"]
    assumed = [e for e in logs if e["event"] == "invoice.currency_assumed"]
    assert [(e["currency"], e["reason"]) for e in assumed] == [("GBP", "the deal has none")]
    (created,) = await sync_log(sessionmaker, "created")
    assert created["currency"] == "GBP"


async def test_sage_totals_that_differ_from_ours_are_recorded_not_refused(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    kommo: Kommo,
    sage: Sage,
) -> None:
    sage.book.total_adjustment = Decimal("0.01")
    kommo.add_lead(1, products=[(102, 3)])
    event_id = await record_trigger(sessionmaker, settings, 1)
    before = INVOICE_TOTALS_DIFFER._value.get()

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.INVOICED

    assert INVOICE_TOTALS_DIFFER._value.get() == before + 1
    assert await sync_log(sessionmaker, "totals_differ") == [
        {"invoice_id": sage.invoices[0].id, "total_ours": "71.96", "total_theirs": "71.97"}
    ]
