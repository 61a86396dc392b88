"""The reconciliation report against the sandbox Kommo and Sage on a real database: one deal
planted for each discrepancy, next to deals that are in order (invoiced, reissued, voided by the
bridge, at work); the report finds each planted one, with its suggested action, and nothing
else. Ops read it at GET /ops/reconciliation, its counts at /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge, CancelPolicy, ChangePolicy
from app.inbox.models import EventState
from app.models import ReconciliationReport, utcnow
from app.reconciliation import run_report
from app.settings import Settings
from tests.conftest import OPS_TOKEN, make_settings
from tests.helpers import (
    bridge_for,
    lead_entry,
    record_trigger,
    record_webhook,
    run_event,
    status_webhook,
)
from tests.upstreams import Kommo, Sage

Maker = async_sessionmaker[AsyncSession]
WON, LOST, TRIGGER = 142, 143, 503
WIDGET, MYSTERY = 102, 104
AGES = 3650  # the sandbox's deals were last changed in 2025: look far enough back
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}


@pytest.fixture
async def bridge(database_url: str, redis_url: str) -> AsyncIterator[Bridge]:
    settings = make_settings(
        database_url=database_url,
        redis_url=redis_url,
        change_policy=ChangePolicy.REISSUE,
        cancel_policy=CancelPolicy.VOID,
    )
    async with bridge_for(settings) as (built, _):
        yield built


async def raised(sessionmaker: Maker, settings: Settings, bridge: Bridge, lead_id: int) -> int:
    """The deal (one widget) invoiced by the bridge; returns its trigger event."""
    event_id = await record_trigger(sessionmaker, settings, lead_id)
    assert await run_event(sessionmaker, bridge, event_id) == EventState.INVOICED
    return event_id


def invoice_of(sage: Sage, lead_id: int) -> Any:
    (invoice,) = [i for i in sage.invoices if i.reference == f"KOMMO-{lead_id}"]
    return invoice


@pytest.fixture
async def planted(
    sessionmaker: Maker, settings: Settings, bridge: Bridge, kommo: Kommo, sage: Sage
) -> dict[str, int]:
    """Deals 1-13; returns the event ids the findings name."""
    for lead_id in range(1, 14):
        kommo.add_lead(lead_id, products=[(MYSTERY if lead_id in (2, 12) else WIDGET, 1)])
    events = {}
    for lead_id in (1, 4, 5, 6, 7, 8, 9, 10, 13):
        events[f"raised {lead_id}"] = await raised(sessionmaker, settings, bridge, lead_id)
    for lead_id in (2, 12):  # a product with no ledger mapping: no invoice
        events[f"unmapped {lead_id}"] = await record_trigger(sessionmaker, settings, lead_id)
        assert await run_event(sessionmaker, bridge, events[f"unmapped {lead_id}"]) == (
            EventState.NEEDS_MAPPING
        )
    kommo.state.leads[12].status_id = WON  # …and it moved on anyway
    kommo.state.leads[3].status_id = WON  # won without ever passing the invoice stage
    kommo.state.leads[6].status_id = WON  # invoiced, then won: in order
    kommo.delete_lead(4)  # deleted in Kommo, its invoice left standing
    now = utcnow()
    sage.add_invoice(now, total="23.99", reference="KOMMO-5")  # raised again by hand in Sage
    kommo.set_products(7, [(WIDGET, 2)])  # the deal changed; its invoice did not
    sage.void(invoice_of(sage, 8).id, "Raised by mistake", now)  # voided by hand in Sage
    sage.void(invoice_of(sage, 13).id, "Deal dropped", now)  # …and the deal deleted: in order
    kommo.delete_lead(13)
    kommo.state.leads[9].status_id = LOST  # lost, and voided by the bridge: in order
    lost = status_webhook(lead_entry(9, status_id=LOST, updated_at=1_760_000_900))
    (event_id,) = await record_webhook(sessionmaker, settings, lost)
    assert await run_event(sessionmaker, bridge, event_id) == EventState.VOIDED
    kommo.set_products(10, [(WIDGET, 3)])  # changed and reissued by the bridge: in order
    again = await record_trigger(sessionmaker, settings, 10, updated_at=1_760_000_500)
    assert await run_event(sessionmaker, bridge, again) == EventState.REISSUED
    await record_trigger(sessionmaker, settings, 11)  # at work: its event is pending
    return events


async def test_the_report_finds_each_planted_discrepancy_and_nothing_else(
    sessionmaker: Maker,
    bridge: Bridge,
    sage: Sage,
    planted: dict[str, int],
    client: AsyncClient,
) -> None:
    async with sessionmaker() as session:
        report = await run_report(session, bridge, now=utcnow(), days=AGES)

    found = sorted((r["kind"], r["deal_id"], r["action"], r.get("event_id")) for r in report.rows)
    assert found == [
        ("amount_drift", "7", "replay", planted["raised 7"]),
        ("deal_gone", "4", "open_invoice", None),
        ("duplicate_reference", "5", "open_invoice", None),
        ("not_invoiced", "12", "discard", planted["unmapped 12"]),
        ("not_invoiced", "2", "replay", planted["unmapped 2"]),
        ("not_invoiced", "3", "open_deal", None),
        ("voided_in_sage", "8", "open_deal", planted["raised 8"]),
    ]
    assert report.problems == []
    assert report.counts == {
        "not_invoiced": 3,
        "deal_gone": 1,
        "duplicate_reference": 1,
        "amount_drift": 1,
        "voided_in_sage": 1,
    }
    rows = {row["kind"]: row for row in report.rows}
    duplicate = [i for i in sage.invoices if i.reference == "KOMMO-5"]
    assert rows["duplicate_reference"]["invoice_id"] == duplicate[1].id  # not the deal's own
    assert rows["duplicate_reference"]["detail"] == (
        f"2 live invoices carry reference KOMMO-5 ({duplicate[0].invoice_number}, "
        f"{duplicate[1].invoice_number})"
    )
    assert rows["amount_drift"]["detail"] == (
        f"the deal's lines now total 47.98, invoice {invoice_of(sage, 7).invoice_number} 23.99"
    )
    assert rows["voided_in_sage"] == {
        "kind": "voided_in_sage",
        "deal_id": "8",
        "detail": f"the deal still shows invoice {invoice_of(sage, 8).invoice_number}, voided "
        "in Sage",
        "action": "open_deal",
        "advice": "Someone cancelled the invoice in Sage. If the deal still needs one, raise it "
        "in Sage by hand and put its number on the deal; if not, clear the deal's invoice "
        "fields. The bridge does not raise a second invoice for a deal on its own.",
        "event_id": planted["raised 8"],
        "invoice_id": invoice_of(sage, 8).id,
        "invoice_number": invoice_of(sage, 8).invoice_number,
        "reference": "KOMMO-8",
        "invoice_url": rows["voided_in_sage"]["invoice_url"],
        "deal_url": "https://testco.kommo.com/leads/detail/8",
    }

    shown = await client.get("/ops/reconciliation", headers=OPS)
    assert shown.status_code == 200
    assert (shown.json()["id"], shown.json()["rows"]) == (report.id, report.rows)
    metrics = (await client.get("/metrics")).text
    assert 'sagebridge_reconciliation_rows{kind="not_invoiced"} 3.0' in metrics
    assert 'sagebridge_reconciliation_rows{kind="amount_drift"} 1.0' in metrics


async def test_a_check_that_cannot_run_is_named_and_the_others_still_run(
    sessionmaker: Maker, settings: Settings, bridge: Bridge, kommo: Kommo, sage: Sage
) -> None:
    kommo.add_lead(1, products=[(WIDGET, 1)])
    kommo.add_lead(2, status_id=WON, products=[(WIDGET, 1)])
    await raised(sessionmaker, settings, bridge, 1)
    sage.faults.fail_next("GET", "/v3.1/sales_invoices", status=503, count=3)

    async with sessionmaker() as session:
        report = await run_report(session, bridge, now=utcnow(), days=AGES)

    assert [(r["kind"], r["deal_id"]) for r in report.rows] == [("not_invoiced", "2")]
    assert report.problems == [
        "Sage invoices could not be checked: GET /sales_invoices → 503: UnexpectedError: An "
        "unexpected error has occurred."
    ]


async def test_no_report_yet_says_how_to_get_one(client: AsyncClient) -> None:
    response = await client.get("/ops/reconciliation", headers=OPS)

    assert response.status_code == 404
    assert response.json() == {
        "error": "not_found",
        "detail": "no reconciliation report yet: a worker runs one every day at 04:23 UTC; "
        "POST /ops/reconciliation/run or `sagebridge reconcile report` runs one now",
    }


async def test_ops_can_run_the_report_now(
    client: AsyncClient, sessionmaker: Maker, kommo: Kommo, sage: Sage
) -> None:
    recent = int(utcnow().timestamp()) - 3600
    kommo.add_lead(3, status_id=WON, products=[(WIDGET, 1)], updated_at=recent)

    response = await client.post("/ops/reconciliation/run", headers=OPS)

    assert response.status_code == 200
    assert [(r["kind"], r["deal_id"]) for r in response.json()["rows"]] == [("not_invoiced", "3")]
    async with sessionmaker() as session:
        stored = await session.get(ReconciliationReport, response.json()["id"])
        assert stored is not None and stored.counts["not_invoiced"] == 1


async def test_reconciliation_default_days_leave_old_deals_out(
    sessionmaker: Maker, bridge: Bridge, kommo: Kommo
) -> None:
    kommo.add_lead(3, status_id=TRIGGER, products=[(WIDGET, 1)])  # last changed in 2025

    async with sessionmaker() as session:
        report = await run_report(session, bridge, now=utcnow(), days=30)

    assert report.rows == []
