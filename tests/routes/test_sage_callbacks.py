"""POST /webhooks/sage: Standard Webhooks signatures, replay, and the shared apply path."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from app.inbox.models import InboxEvent
from app.inbox.runner import process_event
from app.models import DealInvoice
from app.settings import Settings
from tests.conftest import CALLBACK_SECRETS
from tests.helpers import bridge_for
from tests.test_payment_status import add_invoices, patched, shown
from tests.upstreams import Kommo

Maker = async_sessionmaker[AsyncSession]
INVOICE = "a" * 32


def callback(
    status: str = "PAID", *, updated_at: str = "2026-11-22T10:00:00+00:00", kind: str = "updated"
) -> bytes:
    data: dict[str, Any] = {
        "id": INVOICE,
        "status": {"id": status},
        "due_date": "2099-01-01",
        "outstanding_amount": 0.0,
        "updated_at": updated_at,
    }
    return json.dumps({"type": f"sales_invoice.{kind}", "data": data}).encode()


def signed(
    body: bytes,
    *,
    msg_id: str = "msg_1",
    secret: str = CALLBACK_SECRETS[0],
    at: datetime | None = None,
) -> dict[str, str]:
    when = at or datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, when, body.decode()),
    }


async def events(sessionmaker: Maker) -> list[InboxEvent]:
    async with sessionmaker() as session:
        return list(
            (await session.scalars(select(InboxEvent).where(InboxEvent.source == "sage"))).all()
        )


@pytest.fixture
def kommo(kommo: Kommo) -> Kommo:
    """Deal 7, whose invoice (INVOICE) the bridge raised earlier (add_invoices)."""
    kommo.add_lead(7, status_id=142)
    return kommo


async def test_a_signed_callback_is_stored_once_and_applied_through_the_inbox(
    client: AsyncClient, sessionmaker: Maker, settings: Settings, kommo: Kommo
) -> None:
    await add_invoices(sessionmaker, ("7", INVOICE))
    body = callback("PAID")

    first = await client.post("/webhooks/sage", content=body, headers=signed(body))
    replay = await client.post("/webhooks/sage", content=body, headers=signed(body))

    assert first.status_code == 200 and first.json() == {"accepted": True, "queued": True}
    assert replay.status_code == 200 and replay.json() == {"accepted": True, "queued": False}
    (event,) = await events(sessionmaker)
    assert (event.deal_id, event.action, event.state) == ("7", "sales_invoice.status", "pending")
    async with bridge_for(settings) as (bridge, _), sessionmaker() as session:
        assert await process_event(session, bridge, event.id) == "applied"
    assert patched(kommo) == [(7, 13)]
    assert await shown(sessionmaker) == {"7": "paid"}


async def test_a_key_being_rotated_out_still_verifies(
    client: AsyncClient, sessionmaker: Maker
) -> None:
    await add_invoices(sessionmaker, ("7", INVOICE))
    body = callback()
    headers = signed(body, secret=CALLBACK_SECRETS[1])
    # Several signatures in one header, as a sender mid-rotation sends: one must match.
    headers["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]

    response = await client.post("/webhooks/sage", content=body, headers=headers)

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda b, h: h.update(signed(b, secret="whsec_d3Jvbmcta2V5")), "no matching signature"),
        (lambda b, h: h.update(signed(b, at=datetime.now(UTC) - timedelta(minutes=6))), "too old"),
        (lambda b, h: h.update(signed(b, at=datetime.now(UTC) + timedelta(minutes=6))), "too new"),
        (lambda b, h: h.pop("webhook-signature"), "Missing required headers"),
        (lambda b, h: h.update({"webhook-signature": "garbage"}), "malformed"),
        (lambda b, h: h.update({"webhook-id": "msg_other"}), "no matching signature"),
        (lambda b, h: h.update(signed(b, msg_id="m" * 200)), "longer than 128"),
    ],
)
async def test_bad_signatures_are_401_and_nothing_is_stored(
    client: AsyncClient, sessionmaker: Maker, tamper: Any, reason: str
) -> None:
    await add_invoices(sessionmaker, ("7", INVOICE))
    body = callback()
    headers = signed(body)
    tamper(body, headers)

    response = await client.post("/webhooks/sage", content=body, headers=headers)

    assert response.status_code == 401
    assert reason in response.json()["detail"]
    assert await events(sessionmaker) == []


async def test_a_tampered_body_is_401(client: AsyncClient, sessionmaker: Maker) -> None:
    headers = signed(callback("UNPAID"))
    response = await client.post("/webhooks/sage", content=callback("PAID"), headers=headers)
    assert response.status_code == 401
    assert await events(sessionmaker) == []


async def test_a_signed_but_invalid_body_is_400(client: AsyncClient, sessionmaker: Maker) -> None:
    body = json.dumps({"type": "sales_invoice.updated", "data": {"id": "x"}}).encode()

    response = await client.post("/webhooks/sage", content=body, headers=signed(body))

    assert response.status_code == 400
    assert "data.updated_at: Field required" in response.json()["detail"]
    assert await events(sessionmaker) == []


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"id": ""}, "data.id"),
        ({"id": "   "}, "data.id"),
        ({"id": "a" * 65}, "data.id"),
        ({"status": {"id": ""}}, "data.status.id"),
        ({"outstanding_amount": "1e400"}, "data.outstanding_amount"),
    ],
)
async def test_a_signed_callback_that_names_no_usable_invoice_is_400(
    client: AsyncClient, sessionmaker: Maker, data: dict[str, Any], problem: str
) -> None:
    body = json.loads(callback())
    body["data"].update(data)
    raw = json.dumps(body).encode()

    response = await client.post("/webhooks/sage", content=raw, headers=signed(raw))

    assert response.status_code == 400
    assert problem in response.json()["detail"]
    assert await events(sessionmaker) == []


async def test_a_callback_for_an_invoice_we_did_not_raise_is_recorded_as_skipped(
    client: AsyncClient, sessionmaker: Maker
) -> None:
    body = callback()
    response = await client.post("/webhooks/sage", content=body, headers=signed(body))

    assert response.json() == {"accepted": True, "queued": False}
    (event,) = await events(sessionmaker)
    assert (event.state, event.last_error) == ("skipped", "not an invoice this bridge raised")


async def test_an_older_callback_after_a_newer_one_changes_nothing(
    client: AsyncClient, sessionmaker: Maker, settings: Settings, kommo: Kommo
) -> None:
    await add_invoices(sessionmaker, ("7", INVOICE))
    newer = callback("PAID", updated_at="2026-11-22T11:00:00+00:00")
    older = callback("PART_PAID", updated_at="2026-11-22T09:00:00+00:00")
    await client.post("/webhooks/sage", content=newer, headers=signed(newer, msg_id="m2"))
    await client.post("/webhooks/sage", content=older, headers=signed(older, msg_id="m1"))

    async with bridge_for(settings) as (bridge, _), sessionmaker() as session:
        for event in await events(sessionmaker):
            await process_event(session, bridge, event.id)

    assert patched(kommo) == [(7, 13)]
    async with sessionmaker() as session:
        record = (await session.scalars(select(DealInvoice))).one()
    assert record.payment_status == "paid"
