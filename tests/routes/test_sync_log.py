"""GET /ops/sync-log: what an event led to, with lineage, counts, and nothing secret."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.inbox.runner import process_event
from app.models import utcnow
from app.settings import Settings
from tests.conftest import OPS_TOKEN
from tests.helpers import bridge_for, record_trigger
from tests.upstreams import Kommo

AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}
Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
def kommo(kommo: Kommo) -> Kommo:
    """Deal 1 (two Widgets, mapped) and deal 2 (a Mystery box, unmapped)."""
    kommo.add_lead(1, products=[(102, 2)])
    kommo.add_lead(2, products=[(104, 1)])
    return kommo


async def run(sessionmaker: Maker, settings: Settings, *lead_ids: int) -> None:
    async with bridge_for(settings) as (bridge, _):
        for lead_id in lead_ids:
            event_id = await record_trigger(sessionmaker, settings, lead_id)
            async with sessionmaker() as session:
                await process_event(session, bridge, event_id)


async def test_a_deal_shows_its_lineage_from_trigger_to_write_back(
    client: AsyncClient, sessionmaker: Maker, settings: Settings, kommo: Kommo
) -> None:
    await run(sessionmaker, settings, 1)

    body = (await client.get("/ops/sync-log?deal_id=1", headers=AUTH)).json()

    steps = [(i["record"], i["action"]) for i in reversed(body["items"])]
    assert [s for s in steps if s[0] != "request"] == [
        ("line", "priced"),
        ("line", "mapped"),
        ("contact", "created"),
        ("invoice", "created"),
        ("deal", "updated"),
        ("event", "invoiced"),
    ]
    requests = [i["detail"] for i in reversed(body["items"]) if i["record"] == "request"]
    assert [(r["api"], r["method"], r["status"]) for r in requests] == [
        ("kommo", "GET", "200"),  # the lead
        ("kommo", "GET", "200"),  # its main contact
        ("kommo", "GET", "200"),  # the account's lists (which hold products)
        ("kommo", "GET", "200"),  # its catalog elements
        ("kommo", "GET", "200"),  # the account (its currency)
        ("sage", "GET", "200"),  # tax rates
        ("sage", "GET", "200"),  # financial settings (base currency)
        ("sage", "GET", "200"),  # contacts by email
        ("sage", "POST", "201"),  # contact
        ("sage", "POST", "201"),  # invoice
        ("kommo", "PATCH", "200"),  # write-back
    ]
    invoice_post = requests[9]
    assert json.loads(invoice_post["request_body"])["sales_invoice"]["reference"] == "KOMMO-1"
    # Sage's whole invoice, cut at the lineage's 2,000 characters.
    assert '"invoice_number": "SI-1"' in invoice_post["response_body"]
    assert len(invoice_post["response_body"]) == 2001
    mapped = next(i["detail"] for i in body["items"] if i["action"] == "mapped")
    assert mapped == {
        "element_id": "102",
        "name": "Widget",
        "matched_by": "sku=WID-01",
        "ledger_account_id": "la-goods",
        "tax_rate_id": "GB_STANDARD",
    }
    item = body["items"][0]
    assert item["trigger"] == "leads.status" and item["trigger_received_at"] is not None
    assert body["records_by_action"]["invoice"] == {"created": 1}
    text = json.dumps(body)
    assert "kommo-token-xyz" not in text and "sage-token-abc" not in text


async def test_counts_per_state_for_a_window_and_filters(
    client: AsyncClient, sessionmaker: Maker, settings: Settings, kommo: Kommo
) -> None:
    await run(sessionmaker, settings, 1, 2)
    now = utcnow()
    window = {
        "since": (now - timedelta(minutes=5)).isoformat(),
        "until": (now + timedelta(minutes=1)).isoformat(),
    }

    body = (
        await client.get("/ops/sync-log", params={**window, "record": "event"}, headers=AUTH)
    ).json()
    empty = (
        await client.get(
            "/ops/sync-log", params={"until": (now - timedelta(hours=1)).isoformat()}, headers=AUTH
        )
    ).json()

    assert body["events_by_state"] == {"invoiced": 1, "needs_mapping": 1}
    assert body["records_by_action"]["event"] == {"invoiced": 1, "needs_mapping": 1}
    assert body["records_by_action"]["task"] == {"created": 1}
    assert sorted(i["action"] for i in body["items"]) == ["invoiced", "needs_mapping"]
    assert (empty["total"], empty["events_by_state"]) == (0, {})


async def test_sync_log_needs_the_ops_token(client: AsyncClient) -> None:
    assert (await client.get("/ops/sync-log")).status_code == 401


async def test_a_deals_log_counts_its_own_events_shows_each_line_and_ends_with_a_discard(
    client: AsyncClient, sessionmaker: Maker, settings: Settings, kommo: Kommo
) -> None:
    kommo.add_lead(3, products=[(102, 1), (104, 2)])  # a Widget (mapped), two Mystery boxes
    await run(sessionmaker, settings, 1, 3)
    pending = await record_trigger(sessionmaker, settings, 2)
    discard = await client.post(
        f"/ops/events/{pending}/discard", json={"reason": "invoiced by hand"}, headers=AUTH
    )

    waiting = (await client.get("/ops/sync-log?deal_id=3", headers=AUTH)).json()
    discarded = (await client.get("/ops/sync-log?deal_id=2", headers=AUTH)).json()

    assert discard.status_code == 200
    assert waiting["events_by_state"] == {"needs_mapping": 1}
    lines = [
        (i["action"], i["detail"]) for i in reversed(waiting["items"]) if i["record"] == "line"
    ]
    assert [(action, d["element_id"]) for action, d in lines] == [
        ("priced", "102"),
        ("priced", "104"),
        ("mapped", "102"),
        ("unmapped", "104"),
    ]
    assert lines[3][1] == {
        "element_id": "104",
        "name": "Mystery box",
        "sku": "MYST-1",
        "product_type": "other",
    }
    assert discarded["events_by_state"] == {"discarded": 1}
    assert discarded["records_by_action"] == {"event": {"discarded": 1}}
    (entry,) = discarded["items"]
    assert (entry["event_id"], entry["record"], entry["action"], entry["detail"]) == (
        pending,
        "event",
        "discarded",
        {"by": "ops", "reason": "invoiced by hand"},
    )
