"""Money on the deal: the status and, in the fields ops configure, the amount paid,
outstanding and credited, the last payment date and the credit notes' numbers; written when
they change, 50 deals per PATCH, after part payment, full payment and credit notes (the bridge's
or made by hand in Sage)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.inbox.models import EventState
from app.models import utcnow
from app.payment_status import poll_statuses
from app.settings import Settings
from tests.conftest import make_settings
from tests.helpers import bridge_for, record_trigger, run_event
from tests.upstreams import MONEY_FIELDS, Kommo, Sage

Maker = async_sessionmaker[AsyncSession]
PAID, OUTSTANDING, LAST_PAYMENT, CREDIT_NOTES, CREDITED = MONEY_FIELDS.values()
STATUS = 950


@pytest.fixture
def money_settings(database_url: str, redis_url: str) -> Settings:
    return make_settings(database_url=database_url, redis_url=redis_url, **MONEY_FIELDS)


@pytest.fixture
async def bridge(money_settings: Settings) -> AsyncIterator[Bridge]:
    async with bridge_for(money_settings) as (built, _):
        yield built


async def poll(sessionmaker: Maker, bridge: Bridge, *, at: datetime) -> int:
    async with sessionmaker() as session:
        return await poll_statuses(session, bridge.crm, bridge.accounting, now=at)


def fields(item: dict[str, Any]) -> dict[int, Any]:
    return {
        f["field_id"]: f["values"][0].get("enum_id") or f["values"][0]["value"]
        for f in item["custom_fields_values"]
    }


def midnight(day: datetime) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


@pytest.fixture
async def two_invoiced(
    sessionmaker: Maker, money_settings: Settings, bridge: Bridge, kommo: Kommo, sage: Sage
) -> tuple[str, str]:
    """Deals 1 and 2, each invoiced (359.96), unpaid."""
    for lead_id in (1, 2):
        kommo.add_lead(lead_id, products=[(101, 2), (102, 3)])
        event_id = await record_trigger(sessionmaker, money_settings, lead_id)
        assert await run_event(sessionmaker, bridge, event_id) == EventState.INVOICED
    first, second = sage.invoices
    return first.id, second.id


async def test_part_payment_full_payment_and_credit_notes_show_on_the_deals_once_each(
    sessionmaker: Maker, bridge: Bridge, kommo: Kommo, sage: Sage, two_invoiced: tuple[str, str]
) -> None:
    first, second = two_invoiced
    now = utcnow() + timedelta(seconds=1)
    sage.pay(first, "100.00", now)
    sage.credit(second, "50.00", now)

    assert await poll(sessionmaker, bridge, at=now) == 2
    (batch,) = kommo.batch_patches
    assert [(item["id"], fields(item)) for item in batch] == [
        (
            1,
            {
                STATUS: 12,
                PAID: "100.00",
                OUTSTANDING: "259.96",
                LAST_PAYMENT: midnight(now),
                CREDITED: "0.00",
            },
        ),
        (
            2,
            {
                STATUS: 12,
                PAID: "0.00",
                OUTSTANDING: "309.96",
                CREDIT_NOTES: "SCN-1",
                CREDITED: "50.00",
            },
        ),
    ]

    # Nothing changed in Sage: nothing is written.
    assert await poll(sessionmaker, bridge, at=now + timedelta(seconds=1)) == 0
    assert len(kommo.batch_patches) == 1

    later = now + timedelta(seconds=2)
    sage.pay(first, "259.96", later)
    sage.credit(second, "309.96", later)  # the rest credited: nothing paid on it
    assert await poll(sessionmaker, bridge, at=later) == 2
    assert [(item["id"], fields(item)) for item in kommo.batch_patches[-1]] == [
        (1, {STATUS: 13, PAID: "359.96", OUTSTANDING: "0.00"}),
        (2, {STATUS: 16, OUTSTANDING: "0.00", CREDIT_NOTES: "SCN-1, SCN-2", CREDITED: "359.96"}),
    ]
    assert kommo.shown(1)[PAID] == "359.96" and kommo.shown(2)[STATUS] == 16


async def test_a_credit_note_made_by_hand_lowers_what_the_deal_shows_outstanding(
    sessionmaker: Maker, bridge: Bridge, kommo: Kommo, sage: Sage, two_invoiced: tuple[str, str]
) -> None:
    first, _ = two_invoiced
    now = utcnow() + timedelta(seconds=1)
    await poll(sessionmaker, bridge, at=now)
    assert kommo.shown(1)[OUTSTANDING] == "359.96"

    later = now + timedelta(seconds=1)
    sage.credit(first, "120.00", later)
    await poll(sessionmaker, bridge, at=later)

    assert [(item["id"], fields(item)) for item in kommo.batch_patches[-1]] == [
        (1, {STATUS: 12, OUTSTANDING: "239.96", CREDIT_NOTES: "SCN-1", CREDITED: "120.00"})
    ]


async def test_an_invoice_voided_by_hand_in_sage_shows_void(
    sessionmaker: Maker, bridge: Bridge, kommo: Kommo, sage: Sage, two_invoiced: tuple[str, str]
) -> None:
    first, _ = two_invoiced
    now = utcnow() + timedelta(seconds=1)
    await poll(sessionmaker, bridge, at=now)

    later = now + timedelta(seconds=1)
    sage.void(first, "Raised by mistake", later)
    await poll(sessionmaker, bridge, at=later)

    assert [(item["id"], fields(item)) for item in kommo.batch_patches[-1]] == [
        (1, {STATUS: 15, OUTSTANDING: "0.00"})
    ]


async def test_a_deleted_deal_in_the_batch_does_not_hold_up_the_others(
    sessionmaker: Maker, bridge: Bridge, kommo: Kommo, sage: Sage, two_invoiced: tuple[str, str]
) -> None:
    """Kommo refuses a batch whole when one of its deals is gone: the others are then written
    one by one, the gone one is logged, and the next poll does not try again."""
    first, second = two_invoiced
    kommo.delete_lead(2)  # deleted in Kommo; its hook never reached the bridge
    now = utcnow() + timedelta(seconds=1)
    sage.pay(first, "100.00", now)
    sage.pay(second, "100.00", now)

    assert await poll(sessionmaker, bridge, at=now) == 2
    assert [item["id"] for item in kommo.batch_patches[-1]] == [1]
    assert kommo.shown(1)[PAID] == "100.00"
    refused = [e for e in kommo.sandbox.requests.entries(method="PATCH") if e.status == 400]
    assert [[item["id"] for item in entry.body] for entry in refused] == [[1, 2], [2]]

    assert await poll(sessionmaker, bridge, at=now + timedelta(seconds=1)) == 0
    assert len(kommo.sandbox.requests.entries(method="PATCH")) == 2 + 3  # write-backs + poll
