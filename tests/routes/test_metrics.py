"""GET /metrics: the numbers ops watch move when things happen."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import httpx
from httpx import AsyncClient
from prometheus_client import REGISTRY
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clients.http import send
from app.errors import UpstreamTransientError
from app.inbox.models import InboxEvent
from app.metrics import route_of
from app.models import utcnow
from tests.conftest import KOMMO_URL, WEBHOOK_SECRET
from tests.helpers import lead_entry, status_webhook
from tests.upstreams import Kommo

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(text: str, line_start: str) -> float:
    line = next(ln for ln in text.splitlines() if ln.startswith(line_start))
    return float(line.rsplit(" ", 1)[1])


async def test_webhooks_events_and_queue_are_counted(
    client: AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    accepted = sample("sagebridge_webhooks_total", source="kommo", result="accepted")
    refused = sample("sagebridge_webhooks_total", source="kommo", result="unauthorized")

    await client.post(
        f"/webhooks/kommo/{WEBHOOK_SECRET}",
        content=status_webhook(lead_entry(1), lead_entry(2, status_id=1)),
        headers=FORM,
    )
    await client.post("/webhooks/kommo/wrong", content=b"x=1", headers=FORM)
    async with sessionmaker() as session:  # the pending event arrived 90 s ago
        received = utcnow() - timedelta(seconds=90)
        pending = update(InboxEvent).where(InboxEvent.state == "pending")
        await session.execute(pending.values(received_at=received))
        await session.commit()
    response = await client.get("/metrics")

    assert response.status_code == 200
    text = response.text
    assert sample("sagebridge_webhooks_total", source="kommo", result="accepted") == accepted + 1
    assert sample("sagebridge_webhooks_total", source="kommo", result="unauthorized") == refused + 1
    assert scraped(text, 'sagebridge_events{state="pending"}') == 1
    assert scraped(text, 'sagebridge_events{state="skipped"}') == 1
    assert scraped(text, "sagebridge_queue_depth") == 1
    assert 90 <= scraped(text, "sagebridge_oldest_pending_event_seconds") < 120


async def test_upstream_requests_are_counted_by_api_route_and_status(kommo: Kommo) -> None:
    labels = {"api": "kommo", "method": "GET", "route": "/api/v4/leads/:id"}
    before = sample("sagebridge_upstream_requests_total", status="503", **labels)
    before_network = sample("sagebridge_upstream_requests_total", status="network_error", **labels)
    kommo.faults.fail_next("GET", "/api/v4/leads/{id}", status=503)
    kommo.faults.disconnect_next("GET", "/api/v4/leads/{id}")
    async with httpx.AsyncClient(base_url=KOMMO_URL) as http:
        await send(http, "kommo", "GET", "/api/v4/leads/42")
        with contextlib.suppress(UpstreamTransientError):
            await send(http, "kommo", "GET", "/api/v4/leads/43")

    assert sample("sagebridge_upstream_requests_total", status="503", **labels) == before + 1
    assert (
        sample("sagebridge_upstream_requests_total", status="network_error", **labels)
        == before_network + 1
    )
    assert route_of("/sales_invoices/" + "a" * 32 + "?x=1") == "/sales_invoices/:id"


def test_a_full_url_loses_its_host_in_the_route_label() -> None:
    assert route_of("https://testco.kommo.com/oauth2/access_token") == "/oauth2/access_token"
    assert route_of("https://api.accounting.sage.com/v3.1/contacts/" + "c" * 32) == (
        "/v3.1/contacts/:id"
    )


async def test_metrics_name_no_kommo_account_or_sage_business(
    client: AsyncClient, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    from cryptography.fernet import Fernet

    from app.connections.crypto import TokenCipher
    from app.connections.models import GrantKind, Provider
    from app.connections.store import ConnectionKey, ConnectionStore, NewConnection, TokenSet

    cipher = TokenCipher.from_setting(Fernet.generate_key().decode())
    tokens = TokenSet("a", "r", access_expires_at=None, refresh_expires_at=None)
    accounts = {Provider.SAGE: "5a9d" * 8, Provider.KOMMO: "31000777"}
    async with sessionmaker() as session:
        for provider, account in accounts.items():
            new = NewConnection(
                key=ConnectionKey(provider, account),
                kind=GrantKind.OAUTH,
                tokens=tokens,
                display_name="x",
                base_url=None,
            )
            await ConnectionStore(session, cipher).save_connected(new)
        await session.commit()

    text = (await client.get("/metrics")).text

    assert 'sagebridge_connection_needs_reauth{connection="1",provider="sage"} 0.0' in text
    assert 'sagebridge_connection_needs_reauth{connection="1",provider="kommo"} 0.0' in text
    assert all(account not in text for account in accounts.values())
