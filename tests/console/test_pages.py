"""What each console page shows, and what its buttons do, from an HTTP request as a browser
sends it (httpx against the app, the real database and Redis, the sandbox upstreams)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from httpx import AsyncClient
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerts.models import Alert
from app.connections.crypto import generate_key
from app.connections.models import Connection
from app.inbox.models import InboxEvent
from app.inbox.runner import process_event
from app.models import DealInvoice, SyncRecord, utcnow
from app.queue import Queue
from app.settings import Settings
from tests.conftest import OPS_TOKEN
from tests.console.conftest import console_client, csrf_of, logged_in, text_of
from tests.helpers import bridge_for, load_event, record_trigger
from tests.upstreams import ACCOUNT_ID, Kommo

Maker = async_sessionmaker[AsyncSession]


async def add_event(sessionmaker: Maker, settings: Settings, deal: int, **values: Any) -> int:
    event_id = await record_trigger(sessionmaker, settings, deal)
    if values:
        async with sessionmaker() as session:
            await session.execute(
                update(InboxEvent).where(InboxEvent.id == event_id).values(**values)
            )
            await session.commit()
    return event_id


def invoice(deal: int, event_id: int, at: datetime) -> DealInvoice:
    return DealInvoice(
        crm="kommo",
        account_id=str(ACCOUNT_ID),
        deal_id=str(deal),
        event_id=event_id,
        state="written_back",
        reference=f"KOMMO-{deal}",
        idempotency_key="0" * 32,
        invoice_id=f"inv-{deal}",
        invoice_number=f"SI-{deal}",
        created_at=at,
    )


def request(event_id: int, api: str, status: str, at: datetime) -> SyncRecord:
    detail = {"api": api, "method": "GET", "path": "/x", "status": status, "ms": 1.0}
    return SyncRecord(
        event_id=event_id, deal_id="1", record="request", action="request", detail=detail, at=at
    )


async def seed_dashboard(sessionmaker: Maker, settings: Settings) -> None:
    """Four invoices in the last 24 h (in three hours) and one before; upstream answers of
    each kind; a pending event 40 minutes old; a failed one; two connections; an alert."""
    now = utcnow()
    hour = now.replace(minute=0, second=0, microsecond=0)
    timings = [  # (when the invoice was created, seconds since its webhook)
        (hour - timedelta(minutes=50), 1.0),
        (hour - timedelta(minutes=40), 2.0),
        (hour - timedelta(hours=5), 3.0),
        (hour - timedelta(hours=23) + timedelta(minutes=5), 100.0),
        (hour - timedelta(hours=24, minutes=1), 5.0),  # before the window
    ]
    rows: list[Any] = []
    for deal, (at, seconds) in enumerate(timings, start=1):
        event_id = await add_event(
            sessionmaker,
            settings,
            deal,
            state="invoiced",
            received_at=at - timedelta(seconds=seconds),
            next_attempt_at=None,
        )
        rows.append(invoice(deal, event_id, at))
    statuses = [("kommo", s) for s in ("200", "200", "200", "429", "429")]
    statuses += [("sage", s) for s in ("201", "503", "timeout", "422")]
    rows += [request(1, api, status, now) for api, status in statuses]
    rows.append(request(1, "sage", "500", now - timedelta(hours=25)))  # before the window
    await add_event(
        sessionmaker, settings, 20, received_at=now - timedelta(minutes=40), next_attempt_at=now
    )
    await add_event(sessionmaker, settings, 21, state="failed", next_attempt_at=None)
    rows += [
        connection("sage", "biz-1", "oauth", "Trading Ltd", refresh=now + timedelta(days=10.5)),
        connection("kommo", "29000001", "long_lived", "testco", access=now + timedelta(days=3)),
        alert("An event failed: its deal has no invoice", now),
    ]
    async with sessionmaker() as session:
        session.add_all(rows)
        await session.commit()


def connection(
    provider: str,
    account: str,
    kind: str,
    name: str,
    *,
    access: datetime | None = None,
    refresh: datetime | None = None,
) -> Connection:
    return Connection(
        provider=provider,
        account=account,
        kind=kind,
        display_name=name,
        encrypted_access_token="not-read-here",
        access_expires_at=access,
        refresh_expires_at=refresh,
        state="active",
        generation=1,
    )


def alert(title: str, at: datetime) -> Alert:
    return Alert(
        message_id="msg_1",
        cause="event_failed",
        kind="event_failed",
        digest=False,
        count=1,
        title=title,
        text="Deal 21 (event 7): gave up",
        items=[],
        channels=[],
        delivered=[],
        state="recorded",
        created_at=at,
    )


async def test_the_dashboard_shows_now_the_last_24_hours_connections_and_alerts(
    client: AsyncClient, sessionmaker: Maker, settings: Settings, queue: ArqRedis
) -> None:
    await seed_dashboard(sessionmaker, settings)
    await Queue(queue).record_webhook_state("disabled")
    await logged_in(client)

    page = await client.get("/console")

    text = text_of(page)
    assert page.status_code == 200
    assert "Oldest waiting event 40.0 min" in text
    assert "Invoices, last 24 h 4 trigger → invoice: p50 2.5 s, p99 97 s" in text
    assert "Kommo webhook disabled checked " in text
    assert (
        "pending 1 retrying 0 waiting connection 0 invoiced 5 skipped 0 needs mapping 0 "
        "failed 1 applied 0 discarded 0"
    ) in text
    assert page.text.count('class="bar"') == 3  # the hours with invoices: 2, 1 and 1
    assert page.text.count('class="dot p50"') == 3
    assert ": 2</title>" in page.text  # the bar of the hour with two invoices
    assert "kommo 5 2 2 0 0 0" in text  # requests, errors, 429, 5xx, other 4xx, network
    assert "sage 4 3 0 1 1 1" in text
    assert "sage Trading Ltd active" in text and "10.5 days" in text
    assert "kommo testco active" in text and "3.0 days" in text
    assert "An event failed: its deal has no invoice recorded" in text


async def test_the_dashboard_of_a_new_bridge_says_there_is_nothing_yet(
    client: AsyncClient,
) -> None:
    await logged_in(client)

    text = text_of(await client.get("/console"))

    assert "Oldest waiting event none no event is pending or retrying" in text
    assert "Invoices, last 24 h 0 trigger → invoice: p50 —, p99 —" in text
    assert "Kommo webhook not checked yet" in text
    assert "No upstream request was made for an event in the last 24 hours." in text
    assert "No OAuth connection is stored" in text
    assert "No alert has been raised." in text


async def test_the_queue_lists_what_needs_attention_with_filters_and_actions(
    client: AsyncClient, sessionmaker: Maker, settings: Settings
) -> None:
    soon = utcnow() + timedelta(minutes=4)
    await add_event(sessionmaker, settings, 1, state="invoiced", next_attempt_at=None)
    retrying = await add_event(
        sessionmaker,
        settings,
        2,
        state="retrying",
        attempts=2,
        next_attempt_at=soon,
        last_error="sage: POST /sales_invoices → 503 <b>Service Unavailable</b>",
    )
    failed = await add_event(
        sessionmaker, settings, 3, state="failed", last_error="gave up", next_attempt_at=None
    )
    await logged_in(client)

    page = await client.get("/console/queue")
    only_failed = await client.get("/console/queue?state=failed")
    bogus = await client.get("/console/queue?state=bogus")

    text = text_of(page)
    assert "2 event(s) in pending, retrying, waiting connection, failed, needs mapping" in text
    assert (
        f"{retrying} leads.status 2 in Kommo ↗ retrying a transient error: tried again at the "
        "next attempt 2 of 4 in 4.0 min"
    ) in text
    assert "503 <b>Service Unavailable</b>" in text  # shown as written, not as markup
    assert "&lt;b&gt;Service Unavailable&lt;/b&gt;" in page.text
    assert 'href="https://testco.kommo.com/leads/detail/2"' in page.text
    assert 'href="/console/deals/2"' in page.text
    assert f'action="/console/events/{retrying}/replay"' in page.text
    assert f'action="/console/events/{failed}/discard"' in page.text
    assert "1 event(s) in failed" in text_of(only_failed)
    assert f"{failed} leads.status 3" in text_of(only_failed)
    assert "There is no state named “bogus”." in text_of(bogus)


async def test_discard_with_a_reason_ends_the_event_and_says_so(
    client: AsyncClient, sessionmaker: Maker, settings: Settings
) -> None:
    event_id = await add_event(sessionmaker, settings, 4, state="failed", next_attempt_at=None)
    csrf = await logged_in(client)
    back = "/console/queue?state=failed"

    no_reason = await client.post(
        f"/console/events/{event_id}/discard", data={"csrf_token": csrf, "back": back}
    )
    refused = text_of(await client.get(back))
    done = await client.post(
        f"/console/events/{event_id}/discard",
        data={"csrf_token": csrf, "back": back, "reason": "invoiced by hand in Sage"},
    )
    said = text_of(await client.get(done.headers["location"]))

    assert (no_reason.status_code, no_reason.headers["location"]) == (303, back)
    assert f"Event {event_id} was not discarded: give a reason of 3 to 500 characters" in refused
    assert f"Event {event_id} (deal 4) discarded: invoiced by hand in Sage" in said
    assert "Ops: discard (invoiced by hand in Sage)" in text_of(
        await client.get("/console/deals/4")
    )
    event = await load_event(sessionmaker, event_id)
    assert event.state == "discarded"
    assert [(op["action"], op["reason"]) for op in event.payload["ops"]] == [
        ("discard", "invoiced by hand in Sage")
    ]
    again = await client.post(
        f"/console/events/{event_id}/discard",
        data={"csrf_token": csrf, "back": back, "reason": "twice"},
    )
    assert "already ended as discarded" in text_of(await client.get(again.headers["location"]))


async def test_replay_of_a_missing_event_says_so(client: AsyncClient) -> None:
    csrf = await logged_in(client)

    answer = await client.post("/console/events/999/replay", data={"csrf_token": csrf})

    assert answer.headers["location"] == "/console/queue"
    assert "Event 999 was not replayed: no event 999" in text_of(await client.get("/console/queue"))


@pytest.fixture
def kommo(kommo: Kommo) -> Kommo:
    """Deal 1: two Widgets (mapped); deal 2: a Mystery box (unmapped)."""
    kommo.add_lead(1, products=[(102, 2)])
    kommo.add_lead(2, products=[(104, 1)])
    return kommo


async def run(sessionmaker: Maker, settings: Settings, lead_id: int) -> int:
    event_id = await record_trigger(sessionmaker, settings, lead_id)
    async with bridge_for(settings) as (bridge, _), sessionmaker() as session:
        await process_event(session, bridge, event_id)
    return event_id


async def test_the_deal_page_is_its_sync_log_as_a_timeline(
    client: AsyncClient, sessionmaker: Maker, settings: Settings, kommo: Kommo
) -> None:
    event_id = await run(sessionmaker, settings, 1)
    await logged_in(client)

    page = await client.get("/console/deals/1")

    text = text_of(page)
    steps = [
        "Webhook received: leads.status into stage 503 of pipeline 500",
        "kommo GET /api/v4/leads/1 → 200",
        "Line: element 102 priced 19.99, from its PRICE field",
        "Line: Widget → ledger account la-goods, tax GB_STANDARD (matched by sku=WID-01)",
        "sage GET /tax_rates → 200",
        "Customer created in Sage: contact",
        "sage POST /sales_invoices → 201",
        "Invoice SI-1 created in Sage (total 47.98 GBP)",
        "kommo PATCH /api/v4/leads/1 → 200",
        "Written back to the deal invoice number SI-1",
        "Run ended: invoiced",
    ]
    positions = [text.find(step) for step in steps]
    assert -1 not in positions, [s for s, p in zip(steps, positions, strict=True) if p == -1]
    assert positions == sorted(positions)
    assert f"Event {event_id} · leads.status invoiced" in text
    assert "Invoice number SI-1" in text and "payment status unpaid" in text
    async with sessionmaker() as session:
        records = (await session.scalars(select(SyncRecord))).all()
    with_bodies = [r for r in records if r.detail.get("request_body")]
    assert page.text.count("<details><summary>request body</summary>") == len(with_bodies) > 5
    assert '"reference": "KOMMO-1"' in text  # the invoice POST's body, folded


async def test_a_deal_the_bridge_never_saw(client: AsyncClient) -> None:
    await logged_in(client)

    found = await client.get("/console/deals?deal_id=+42+")
    page = await client.get("/console/deals/42")

    assert found.headers["location"] == "/console/deals/42"
    assert "The bridge has no event for deal 42." in text_of(page)


async def test_the_mapping_page_shows_the_rules_in_force_and_suggests_rules(
    client: AsyncClient, kommo: Kommo
) -> None:
    await logged_in(client)

    page = text_of(await client.get("/console/mapping"))
    suggested = text_of(await client.get("/console/mapping?suggestions=true"))

    assert "In force: version 1" in page and "by api start on" in page
    assert (
        "Rules (4) # match ledger account tax rate 1 element id = 101 la-services default "
        "2 sku = WID-01 la-goods GB_STANDARD 3 product type = subscription la-subscriptions "
        "GB_LOWER 4 sku = BOOK-1 la-goods GB_ZERO"
    ) in page
    assert "Ask Kommo and Sage" in page and "Last edit refused" not in page
    assert "element name SKU type 104 Mystery box MYST-1 other" in suggested
    assert "- match: {sku: MYST-1}" in suggested


async def test_a_refused_edit_is_shown_and_a_good_one_replays_the_deals_waiting_for_it(
    client: AsyncClient,
    sessionmaker: Maker,
    settings: Settings,
    kommo: Kommo,
    mapping_file: Path,
    queue: ArqRedis,
) -> None:
    waiting = await run(sessionmaker, settings, 2)
    csrf = await logged_in(client)
    form = {"csrf_token": csrf, "back": "/console/mapping"}
    original = mapping_file.read_text()

    mapping_file.write_text(original + "  - match: {sku: MYST-1}\n    ledger_account_id: la-nope\n")
    refused = await client.post("/console/mapping/reload", data=form)
    refused_page = text_of(await client.get(refused.headers["location"]))
    mapping_file.write_text(
        original + "  - match: {sku: MYST-1}\n    ledger_account_id: la-goods\n"
    )
    await client.post("/console/mapping/reload", data=form)
    loaded_page = text_of(await client.get("/console/mapping"))
    await client.post("/console/mapping/replay-needs-mapping", data=form)
    replayed_page = text_of(await client.get("/console/mapping"))

    assert "Refused, the version in force stays:" in refused_page
    assert "la-nope" in refused_page.split("Last edit refused", 1)[1]
    assert "Version 2 is in force (5 rules)." in loaded_page
    assert "Last edit refused" not in loaded_page
    assert "Replayed 1 event(s); 0 still lack a rule." in replayed_page
    assert (await load_event(sessionmaker, waiting)).state == "pending"


async def test_connections_without_oauth_say_what_to_set(client: AsyncClient) -> None:
    csrf = await logged_in(client)

    page = text_of(await client.get("/console/connections"))
    pressed = await client.post("/console/connections/sage/connect", data={"csrf_token": csrf})
    after = text_of(await client.get(pressed.headers["location"]))

    assert "No OAuth connection is stored yet." in page
    assert "No connect button here: CONNECTION_ENCRYPTION_KEYS is not set" in page
    assert "KOMMO_ACCESS_TOKEN is set: it is used instead of a stored Kommo grant." in page
    assert pressed.headers["location"] == "/console/queue"
    assert "Sage cannot be connected: CONNECTION_ENCRYPTION_KEYS is not set" in after


async def test_connect_sends_this_browser_through_the_bound_authorize_link(
    settings: Settings, queue: ArqRedis
) -> None:
    oauth = settings.model_copy(
        update={
            "connection_encryption_keys": generate_key(),
            "sage_oauth_client_id": "bridge-client",
            "sage_oauth_client_secret": "bridge-client-secret",
            "public_base_url": "http://bridge.test",
        }
    )
    async with console_client(oauth) as client:
        csrf = await logged_in(client)
        page = await client.get("/console/connections")
        pressed = await client.post("/console/connections/sage/connect", data={"csrf_token": csrf})
        authorize = await client.get(pressed.headers["location"])

    assert "Connect Sage" in text_of(page) and csrf_of(page) == csrf
    assert pressed.status_code == 303
    link = pressed.headers["location"]
    assert link.startswith("http://bridge.test/ops/connections/sage/authorize?state=")
    assert authorize.status_code == 303
    assert authorize.headers["location"].startswith(settings.sage_oauth_authorize_url)
    assert "sagebridge_oauth_browser=" in authorize.headers["set-cookie"]


async def test_every_page_carries_the_security_headers_and_only_its_own_stylesheet(
    client: AsyncClient,
) -> None:
    await logged_in(client)

    pages = [await client.get(p) for p in ("/console", "/console/login", "/console/queue")]
    css = await client.get("/console/static/console.css")
    missing = await client.get("/console/static/app.js")

    for page in pages:
        assert page.headers["content-security-policy"].startswith("default-src 'none'; style-src")
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        assert "<script" not in page.text and "http" not in page.text.split("<body")[0]
    assert css.status_code == 200 and css.headers["content-type"] == "text/css; charset=utf-8"
    assert missing.status_code == 404


async def test_only_the_sandbox_login_page_names_its_token(
    client: AsyncClient, settings: Settings, queue: ArqRedis, mapping_file: Path
) -> None:
    sandbox = Settings(
        database_url=settings.database_url,
        redis_url=settings.redis_url,
        data_dir=settings.data_dir,
        ledger_mappings_path=mapping_file,
        mapping_check_on_start=False,
    ).with_sandbox_defaults()
    async with console_client(sandbox) as sandboxed:
        published = text_of(await sandboxed.get("/console/login"))
    ours = text_of(await client.get("/console/login"))

    assert "Sandbox: the ops token is sandbox-ops-token-for-127.0.0.1-only" in published
    assert "Sandbox" not in ours and OPS_TOKEN not in ours
