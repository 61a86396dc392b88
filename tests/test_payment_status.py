"""Payment status back to the deal: mapping, polling with a watermark, out-of-order safety."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.domain import InvoiceStatus
from app.errors import UpstreamTransientError
from app.inbox.models import InboxEvent
from app.models import DealInvoice, SyncCursor
from app.payment_status import CURSOR, apply_statuses, poll_statuses, shown_status
from app.settings import Settings
from tests.conftest import make_settings
from tests.helpers import bridge_for
from tests.upstreams import Kommo, Sage

Maker = async_sessionmaker[AsyncSession]
ENUMS = {"unpaid": 11, "part_paid": 12, "paid": 13, "overdue": 14, "void": 15}
TODAY = date(2026, 11, 22)
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def status(
    status_id: str, *, due: str = "2026-12-31", outstanding: str = "10", **kw: Any
) -> InvoiceStatus:
    return InvoiceStatus(
        invoice_id="inv",
        status_id=status_id,
        updated_at=kw.pop("updated_at", NOW),
        due_date=date.fromisoformat(due),
        outstanding_amount=Decimal(outstanding),
        **kw,
    )


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        (status("DRAFT"), None),
        (status("UNPAID"), "unpaid"),
        (status("PART_PAID", outstanding="4"), "part_paid"),
        (status("PAID", outstanding="0"), "paid"),
        (status("VOID"), "void"),
        (status("UNPAID", due="2026-11-21"), "overdue"),
        (status("PART_PAID", due="2026-11-01", outstanding="0.01"), "overdue"),
        (status("UNPAID", due="2026-11-22"), "unpaid"),  # due today is not overdue yet
        (status("PAID", due="2026-11-01", outstanding="0"), "paid"),
        (status("VOID", due="2026-11-01"), "void"),
        (status("UNPAID", deleted=True), "void"),
        (status("SOMETHING_NEW"), None),
    ],
)
def test_each_sage_status_maps_to_what_the_deal_shows(
    given: InvoiceStatus, shown: str | None
) -> None:
    assert shown_status(given, TODAY) == shown


@pytest.fixture
def kommo(kommo: Kommo) -> Kommo:
    """Deals 1-3, whose invoices the bridge raised earlier (add_invoices)."""
    for lead_id in (1, 2, 3):
        kommo.add_lead(lead_id, status_id=142)
    return kommo


def at(hour: int, minute: int = 0, *, day: int = 22) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def status_settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(
        database_url=database_url,
        redis_url=redis_url,
        kommo_payment_status_field_id=950,
        kommo_payment_status_enums=ENUMS,
    )


@pytest.fixture
async def bridge(status_settings: Settings) -> AsyncIterator[Bridge]:
    async with bridge_for(status_settings) as (built, _):
        yield built


async def add_invoices(sessionmaker: Maker, *pairs: tuple[str, str]) -> None:
    """Deal invoices the bridge raised earlier: (deal id, Sage invoice id)."""
    async with sessionmaker() as session:
        event = InboxEvent(
            source="kommo",
            dedupe_key="k",
            account_id="29000001",
            deal_id="0",
            action="seed",
            state="invoiced",
            payload={},
        )
        session.add(event)
        await session.flush()
        for deal_id, invoice_id in pairs:
            session.add(
                DealInvoice(
                    crm="kommo",
                    account_id="29000001",
                    deal_id=deal_id,
                    event_id=event.id,
                    state="written_back",
                    reference=f"KOMMO-{deal_id}",
                    idempotency_key="0" * 32,
                    invoice_id=invoice_id,
                    invoice_number=f"SI-{deal_id}",
                    created_at=datetime(2026, 11, 1, tzinfo=UTC),
                )
            )
        await session.commit()


async def shown(sessionmaker: Maker) -> dict[str, str | None]:
    async with sessionmaker() as session:
        rows = await session.scalars(select(DealInvoice))
        return {r.deal_id: r.payment_status for r in rows}


async def watermark(sessionmaker: Maker) -> datetime | None:
    async with sessionmaker() as session:
        cursor = await session.get(SyncCursor, CURSOR)
        return cursor.value if cursor else None


def patched(kommo: Kommo) -> list[tuple[int, int]]:
    return [
        (item["id"], item["custom_fields_values"][0]["values"][0]["enum_id"])
        for batch in kommo.batch_patches
        for item in batch
    ]


async def test_poll_writes_changed_statuses_in_one_batch_and_moves_the_watermark(
    sessionmaker: Maker, bridge: Bridge, kommo: Kommo, sage: Sage
) -> None:
    paid, part_paid, not_ours = (sage.add_invoice(at(9, day=20)) for _ in range(3))
    sage.pay(paid, "10.00", at(10))
    sage.pay(part_paid, "5.00", at(10, 5))
    sage.pay(not_ours, "10.00", at(10, 6))  # not ours: ignored
    deleted = sage.delete_draft(at(10, 7))
    await add_invoices(sessionmaker, ("1", paid), ("2", part_paid), ("3", deleted))

    async with sessionmaker() as session:
        written = await poll_statuses(session, bridge.crm, bridge.accounting, now=NOW)

    assert written == 3
    assert len(kommo.batch_patches) == 1
    assert sorted(patched(kommo)) == [(1, 13), (2, 12), (3, 15)]
    assert kommo.batch_patches[0][0]["custom_fields_values"][0]["field_id"] == 950
    assert await shown(sessionmaker) == {"1": "paid", "2": "part_paid", "3": "void"}
    # First run starts from the oldest invoice the bridge raised; then from the newest change.
    polls = sage.queries("/v3.1/sales_invoices")
    assert polls[0]["updated_or_created_since"] == "2026-11-01T00:00:00+00:00"
    assert polls[0]["attributes"] == "all"
    assert await watermark(sessionmaker) == datetime(2026, 11, 22, 10, 6, tzinfo=UTC)


async def test_the_same_change_seen_twice_at_the_inclusive_boundary_is_applied_once(
    sessionmaker: Maker, bridge: Bridge, kommo: Kommo, sage: Sage
) -> None:
    invoice = sage.add_invoice(at(9, day=20))
    sage.pay(invoice, "10.00", at(10))
    await add_invoices(sessionmaker, ("1", invoice))

    for _ in range(2):
        async with sessionmaker() as session:
            await poll_statuses(session, bridge.crm, bridge.accounting, now=NOW)

    polls = sage.queries("/v3.1/sales_invoices")
    assert polls[2]["updated_or_created_since"] == "2026-11-22T10:00:00+00:00"
    assert patched(kommo) == [(1, 13)]


async def test_watermark_stays_put_when_the_crm_write_fails_and_the_next_poll_resumes(
    sessionmaker: Maker, bridge: Bridge, kommo: Kommo, sage: Sage
) -> None:
    invoice = sage.add_invoice(at(9, day=20))
    sage.pay(invoice, "10.00", at(10))
    await add_invoices(sessionmaker, ("1", invoice))
    kommo.faults.fail_next("PATCH", "/api/v4/leads", status=503)

    async with sessionmaker() as session:
        with pytest.raises(UpstreamTransientError):
            await poll_statuses(session, bridge.crm, bridge.accounting, now=NOW)
    assert await watermark(sessionmaker) is None
    assert await shown(sessionmaker) == {"1": None}

    async with sessionmaker() as session:
        await poll_statuses(session, bridge.crm, bridge.accounting, now=NOW)
    assert patched(kommo) == [(1, 13)]
    assert await shown(sessionmaker) == {"1": "paid"}


async def test_an_older_status_never_overwrites_a_newer_one(
    sessionmaker: Maker, bridge: Bridge, kommo: Kommo
) -> None:
    await add_invoices(sessionmaker, ("1", "inv"))
    newer = status("PAID", outstanding="0", updated_at=datetime(2026, 11, 22, 11, tzinfo=UTC))
    older = status("PART_PAID", updated_at=datetime(2026, 11, 22, 9, tzinfo=UTC))

    async with sessionmaker() as session:
        await apply_statuses(session, bridge.crm, [newer], today=TODAY)
    async with sessionmaker() as session:
        assert await apply_statuses(session, bridge.crm, [older], today=TODAY) == 0

    assert patched(kommo) == [(1, 13)]
    assert await shown(sessionmaker) == {"1": "paid"}


async def test_an_invoice_becomes_overdue_when_its_due_date_passes_without_a_sage_change(
    sessionmaker: Maker, bridge: Bridge, kommo: Kommo, sage: Sage
) -> None:
    invoice = sage.add_invoice(at(10, day=20), due=date(2026, 11, 25))
    await add_invoices(sessionmaker, ("1", invoice))
    async with sessionmaker() as session:
        await poll_statuses(session, bridge.crm, bridge.accounting, now=NOW)
    assert await shown(sessionmaker) == {"1": "unpaid"}

    later = datetime(2026, 11, 26, 12, tzinfo=UTC)
    async with sessionmaker() as session:
        await poll_statuses(session, bridge.crm, bridge.accounting, now=later)

    assert patched(kommo) == [(1, 11), (1, 14)]
    assert await shown(sessionmaker) == {"1": "overdue"}
