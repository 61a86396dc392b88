"""A manager's task names what stops the invoice: the deal's own data is never called a refusal
by Kommo, and an upstream's refusal still says who refused (issue 14, seams: domain errors)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.settings import Settings
from tests.helpers import Scheduled, record_trigger, run_event
from tests.upstreams import Kommo, Sage, Upstreams

Maker = async_sessionmaker[AsyncSession]
AGAIN = "then move the deal to the invoice stage again"


@pytest.fixture
def upstreams(upstreams: Upstreams) -> Upstreams:
    upstreams.kommo.add_contact(7002, "No Mail", None)
    upstreams.kommo.add_element(110, "Gadget", None)
    return upstreams


def no_email(kommo: Kommo, sage: Sage) -> None:
    kommo.add_lead(1, contact_id=7002, products=[(102, 1)])


def no_price(kommo: Kommo, sage: Sage) -> None:
    kommo.add_lead(1, products=[(110, 1)])


def no_products(kommo: Kommo, sage: Sage) -> None:
    kommo.add_lead(1, products=[])


def unreadable(kommo: Kommo, sage: Sage) -> None:
    # The sandbox renders its state as stored: a contact link Kommo would never send.
    lead = kommo.add_lead(1, products=[(102, 1)])
    lead.contacts[0] = replace(lead.contacts[0], contact_id=None)  # type: ignore[arg-type]


def sage_refuses(kommo: Kommo, sage: Sage) -> None:
    kommo.add_lead(1, products=[(102, 1)])
    sage.faults.refuse_next(
        "POST", "/v3.1/sales_invoices", status=422, message="Contact is on hold"
    )


@pytest.mark.parametrize(
    ("arrange", "text"),
    [
        (
            no_email,
            "Sage invoice NOT raised: the deal's main contact has no email address. Add one so "
            f"the customer can be found in Sage, {AGAIN}.",
        ),
        (
            no_price,
            "Sage invoice NOT raised: product 'Gadget' (element 110, list 'Products' (77)) has "
            f"no value in its PRICE field; set the price in Kommo, {AGAIN}.",
        ),
        (no_products, f"Sage invoice NOT raised: the deal has no products. Add them, {AGAIN}."),
        (
            unreadable,
            "Sage invoice NOT raised: Kommo lead 1, contact has no id (GET /api/v4/leads/1). "
            "The bridge cannot read the deal as Kommo sends it: check what this names in "
            f"Kommo, {AGAIN}; if it looks right there, ask ops to report it.",
        ),
        (
            sage_refuses,
            "Sage invoice NOT raised: Sage refused it: POST /sales_invoices → 422: "
            "RecordInvalid: Contact is on hold. Correct what it names, then move the deal to "
            "the invoice stage again.",
        ),
    ],
)
async def test_the_task_says_what_stops_the_invoice(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    upstreams: Upstreams,
    arrange: Any,
    text: str,
) -> None:
    kommo, sage = upstreams
    arrange(kommo, sage)
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == "failed"

    assert [task["text"] for task in kommo.tasks] == [text]
    assert sage.invoice_posts == []
