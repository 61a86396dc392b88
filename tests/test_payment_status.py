"""Payment status back to the deal: mapping, polling with a watermark, out-of-order safety."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
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
from tests.fakes import FakeKommo, FakeSage
from tests.helpers import bridge_for

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
def fakes() -> Any:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        yield FakeKommo(router), FakeSage(router)


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


def patched(kommo: FakeKommo) -> list[tuple[int, int]]:
    return [
        (item["id"], item["custom_fields_values"][0]["values"][0]["enum_id"])
        for batch in kommo.batch_patches
        for item in batch
    ]


async def test_poll_writes_changed_statuses_in_one_batch_and_moves_the_watermark(
    sessionmaker: Maker, bridge: Bridge, fakes: Any
) -> None:
    kommo, sage = fakes
    await add_invoices(sessionmaker, ("1", "a" * 32), ("2", "b" * 32), ("3", "c" * 32))
    sage.set_status("a" * 32, "PAID", "2026-11-22T10:00:00+00:00", outstanding=0)
    sage.set_status("b" * 32, "PART_PAID", "2026-11-22T10:05:00+00:00", outstanding=5)
    sage.set_status("f" * 32, "PAID", "2026-11-22T10:06:00+00:00")  # not ours: ignored
    sage.deleted.append({"id": "c" * 32, "deleted_at": "2026-11-22T10:07:00+00:00"})

    async with sessionmaker() as session:
        written = await poll_statuses(session, bridge.crm, bridge.accounting, now=NOW)

    assert written == 3
    assert len(kommo.batch_patches) == 1
    assert sorted(patched(kommo)) == [(1, 13), (2, 12), (3, 15)]
    assert kommo.batch_patches[0][0]["custom_fields_values"][0]["field_id"] == 950
    assert await shown(sessionmaker) == {"1": "paid", "2": "part_paid", "3": "void"}
    # First run starts from the oldest invoice the bridge raised; then from the newest change.
    assert sage.poll_queries[0]["updated_or_created_since"] == "2026-11-01T00:00:00+00:00"
    assert sage.poll_queries[0]["attributes"] == "all"
    assert await watermark(sessionmaker) == datetime(2026, 11, 22, 10, 6, tzinfo=UTC)


async def test_the_same_change_seen_twice_at_the_inclusive_boundary_is_applied_once(
    sessionmaker: Maker, bridge: Bridge, fakes: Any
) -> None:
    kommo, sage = fakes
    await add_invoices(sessionmaker, ("1", "a" * 32))
    sage.set_status("a" * 32, "PAID", "2026-11-22T10:00:00+00:00", outstanding=0)

    for _ in range(2):
        async with sessionmaker() as session:
            await poll_statuses(session, bridge.crm, bridge.accounting, now=NOW)

    assert sage.poll_queries[2]["updated_or_created_since"] == "2026-11-22T10:00:00+00:00"
    assert patched(kommo) == [(1, 13)]


async def test_watermark_stays_put_when_the_crm_write_fails_and_the_next_poll_resumes(
    sessionmaker: Maker, bridge: Bridge, fakes: Any
) -> None:
    kommo, sage = fakes
    await add_invoices(sessionmaker, ("1", "a" * 32))
    sage.set_status("a" * 32, "PAID", "2026-11-22T10:00:00+00:00", outstanding=0)
    kommo.faults.add("batch_patch", httpx.Response(503, text="unavailable"))

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
    sessionmaker: Maker, bridge: Bridge, fakes: Any
) -> None:
    kommo, _ = fakes
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
    sessionmaker: Maker, bridge: Bridge, fakes: Any
) -> None:
    kommo, sage = fakes
    await add_invoices(sessionmaker, ("1", "a" * 32))
    sage.set_status("a" * 32, "UNPAID", "2026-11-20T10:00:00+00:00", due_date="2026-11-25")
    async with sessionmaker() as session:
        await poll_statuses(session, bridge.crm, bridge.accounting, now=NOW)
    assert await shown(sessionmaker) == {"1": "unpaid"}

    later = datetime(2026, 11, 26, 12, tzinfo=UTC)
    async with sessionmaker() as session:
        await poll_statuses(session, bridge.crm, bridge.accounting, now=later)

    assert patched(kommo) == [(1, 11), (1, 14)]
    assert await shown(sessionmaker) == {"1": "overdue"}
