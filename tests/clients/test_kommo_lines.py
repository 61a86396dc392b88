"""Which of a deal's linked list elements become invoice lines, at which price, and what stops
an invoice: job calls against Kommo as its docs show it (the sandbox Kommo)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clients.kommo.lines import parse_price
from app.inbox.models import EventState, TaskState
from app.settings import Settings
from tests.conftest import OPS_TOKEN
from tests.helpers import bridge_for, load_event, record_trigger, run_event
from tests.upstreams import Kommo, Sage

Maker = async_sessionmaker[AsyncSession]
WHOLESALE = 5  # a second price-type field of the Widget, without a code (a user-made one)
AGAIN = "then move the deal to the invoice stage again"


@pytest.fixture
def kommo(kommo: Kommo) -> Kommo:
    """A Widget with a second price, an invoice in the invoices list, and a regular list."""
    kommo.add_catalog(79, "Delivery options", "regular")
    kommo.add_element(110, "Widget", "19.99", sku="WID-01", other_prices={WHOLESALE: "15.50"})
    kommo.add_element(120, "Invoice 12", "40", catalog_id=78, price_code="BILL_PRICE")
    kommo.add_element(130, "Express delivery", 25, sku="WID-01", catalog_id=79)
    return kommo


async def invoice_deal(sessionmaker: Maker, settings: Settings, lead_id: int) -> EventState:
    async with bridge_for(settings) as (bridge, _):
        event_id = await record_trigger(sessionmaker, settings, lead_id)
        state = await run_event(sessionmaker, bridge, event_id)
    assert state is not None
    return state


def lines_posted(sage: Sage) -> list[tuple[str, Decimal, Decimal]]:
    lines = sage.invoice_posts[0]["sales_invoice"]["invoice_lines"]
    return [
        (ln["description"], Decimal(str(ln["quantity"])), Decimal(str(ln["unit_price"])))
        for ln in lines
    ]


async def test_price_id_picks_the_price_and_an_invoice_element_is_left_out_and_noted(
    client: AsyncClient, sessionmaker: Maker, settings: Settings, kommo: Kommo, sage: Sage
) -> None:
    kommo.add_lead(1, products=[(110, 2, WHOLESALE), (120, 1)])

    assert await invoice_deal(sessionmaker, settings, 1) == EventState.INVOICED

    assert kommo.element(110).is_deleted is None
    assert lines_posted(sage) == [("Widget", Decimal(2), Decimal("15.50"))]
    log = await client.get(
        "/ops/sync-log",
        params={"deal_id": "1", "record": "line"},
        headers={"Authorization": f"Bearer {OPS_TOKEN}"},
    )
    notes = {(i["action"], i["detail"]["element_id"]): i["detail"] for i in log.json()["items"]}
    assert notes[("ignored", "120")] == {
        "element_id": "120",
        "catalog_id": 78,
        "reason": "list 'Invoices' (78) is of type invoices, not products; add the list's id "
        "to KOMMO_PRODUCT_LIST_IDS if it holds products",
    }
    assert notes[("priced", "110")] == {
        "element_id": "110",
        "unit_price": "15.50",
        "source": f"price field {WHOLESALE} (the one the deal's link names in price_id)",
    }


async def test_without_price_id_the_price_field_code_applies(
    sessionmaker: Maker, settings: Settings, kommo: Kommo, sage: Sage
) -> None:
    kommo.add_lead(1, products=[(110, "1.5")])

    assert await invoice_deal(sessionmaker, settings, 1) == EventState.INVOICED

    assert lines_posted(sage) == [("Widget", Decimal("1.5"), Decimal("19.99"))]


async def test_a_regular_list_named_in_product_list_ids_gives_lines(
    sessionmaker: Maker, settings: Settings, kommo: Kommo, sage: Sage
) -> None:
    kommo.add_lead(1, products=[(130, 1), (110, 1)])
    with_list = settings.model_copy(update={"kommo_product_list_ids": [79]})

    assert await invoice_deal(sessionmaker, with_list, 1) == EventState.INVOICED

    assert lines_posted(sage) == [
        ("Express delivery", Decimal(1), Decimal(25)),
        ("Widget", Decimal(1), Decimal("19.99")),
    ]


async def test_a_deleted_or_vanished_product_stops_the_invoice_with_a_task_naming_it(
    sessionmaker: Maker, settings: Settings, kommo: Kommo, sage: Sage
) -> None:
    kommo.add_element(111, "Gadget", "5", sku="WID-01")
    kommo.add_lead(1, products=[(110, 1), (111, 1)])
    kommo.element(110).is_deleted = True
    del kommo.state.catalogs[77].elements[111]

    assert await invoice_deal(sessionmaker, settings, 1) == EventState.FAILED

    event = await load_event(sessionmaker, 1)
    detail = (
        "products linked to the deal are gone from Kommo: 'Widget' (element 110, list "
        "'Products' (77)) is deleted; element 111 is no longer in list 'Products' (77). "
        f"Remove them from the deal or restore them, {AGAIN}"
    )
    assert (event.last_error, event.attempts, event.task_state) == (detail, 0, TaskState.CREATED)
    assert detail in kommo.tasks[0]["text"]
    assert sage.invoice_posts == []


@pytest.mark.parametrize(
    ("links", "detail"),
    [
        (
            [(110, 1, 9)],
            "product 'Widget' (element 110, list 'Products' (77)) has no value in its price "
            f"field 9 (the one the deal's link names in price_id); set the price in Kommo, {AGAIN}",
        ),
        (
            [(120, 1), (130, 2)],
            "none of the list elements linked to the deal is a product: element 120 (list "
            "'Invoices' (78)), element 130 (list 'Delivery options' (79)). Add products from "
            "the Products list (or name the list that holds them in KOMMO_PRODUCT_LIST_IDS), "
            f"{AGAIN}",
        ),
    ],
)
async def test_a_price_or_product_the_deal_lacks_fails_at_once(
    sessionmaker: Maker,
    settings: Settings,
    kommo: Kommo,
    sage: Sage,
    links: list[tuple[int, ...]],
    detail: str,
) -> None:
    kommo.add_lead(1, products=links)

    assert await invoice_deal(sessionmaker, settings, 1) == EventState.FAILED

    event = await load_event(sessionmaker, 1)
    assert (event.last_error, event.attempts) == (detail, 0)
    assert sage.invoice_posts == []


@pytest.mark.parametrize(
    ("break_lead", "detail"),
    [
        (
            lambda lead: setattr(lead, "status_id", None),
            "Kommo lead 1 has no status_id (GET /api/v4/leads/1)",
        ),
        (
            lambda lead: lead.elements.__setitem__(0, replace(lead.elements[0], catalog_id=None)),
            "Kommo lead 1, linked element 110 has no metadata.catalog_id (GET /api/v4/leads/1)",
        ),
        (
            lambda lead: setattr(lead, "pipeline_id", "main"),
            "Kommo lead 1 has an unreadable pipeline_id: input should be a valid integer, "
            "unable to parse string as an integer (GET /api/v4/leads/1)",
        ),
    ],
)
async def test_an_unreadable_answer_names_the_entity_and_field_in_error_and_task(
    sessionmaker: Maker,
    settings: Settings,
    kommo: Kommo,
    sage: Sage,
    break_lead: Any,
    detail: str,
) -> None:
    # The sandbox renders its state as stored: a value Kommo would never hold, to answer with.
    break_lead(kommo.add_lead(1, products=[(110, 1)]))

    assert await invoice_deal(sessionmaker, settings, 1) == EventState.FAILED

    event = await load_event(sessionmaker, 1)
    assert (event.last_error, event.attempts) == (detail, 0)
    assert event.task_text is not None and detail in event.task_text
    assert kommo.tasks[0]["text"] == event.task_text
    assert sage.invoice_posts == []


def deals_with_a_widget(kommo: Kommo, *lead_ids: int) -> None:
    kommo.add_element(110, "Widget", "19.99")
    for lead_id in lead_ids:
        kommo.add_lead(lead_id, products=[(110, lead_id)])


async def test_currency_is_the_accounts_read_once_and_lists_are_cached(
    kommo: Kommo, settings: Settings
) -> None:
    deals_with_a_widget(kommo, 1, 2)

    async with bridge_for(settings) as (bridge, _):
        first = await bridge.crm.deal_contents(deal=await bridge.crm.get_deal(deal_id="1"))
        second = await bridge.crm.deal_contents(deal=await bridge.crm.get_deal(deal_id="2"))

    assert (first.currency, second.currency) == ("GBP", "GBP")
    assert kommo.calls("/api/v4/account") == 1
    assert kommo.calls("/api/v4/catalogs") == 1


async def test_kommo_currency_overrides_and_an_unknown_one_stays_none(
    kommo: Kommo, settings: Settings
) -> None:
    deals_with_a_widget(kommo, 1)
    kommo.state.account.currency = None

    async with bridge_for(settings.model_copy(update={"kommo_currency": "EUR"})) as (bridge, _):
        overridden = await bridge.crm.deal_contents(deal=await bridge.crm.get_deal(deal_id="1"))
    assert kommo.calls("/api/v4/account") == 0
    async with bridge_for(settings) as (bridge, _):
        unknown = await bridge.crm.deal_contents(deal=await bridge.crm.get_deal(deal_id="1"))

    assert (overridden.currency, unknown.currency) == ("EUR", None)
    assert kommo.calls("/api/v4/account") == 1


@pytest.mark.parametrize(
    ("value", "price"),
    [
        ("12", Decimal(12)),
        (19.99, Decimal("19.99")),
        (7, Decimal(7)),
        ("0.125", Decimal("0.125")),
        ("1 234,50", Decimal("1234.50")),
        ("abc", None),
        ("NaN", None),
        (True, None),
        ({"value": 1}, None),
    ],
)
def test_prices_parse_exactly_from_strings_and_numbers(value: Any, price: Decimal | None) -> None:
    assert parse_price(value) == price
