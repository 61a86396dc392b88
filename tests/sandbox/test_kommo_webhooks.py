"""Kommo sends real status_lead webhooks over HTTP, as Kommo does, to a receiver on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from sandbox.runner import RunningSandbox, run_sandbox, serve_app
from sandbox.seed import (
    FIELD_INVOICE_NUMBER,
    FIELD_PAYMENT_STATUS,
    KOMMO_TOKEN,
    LEAD_SAMPLE,
    LEAD_SECOND,
    PIPELINE_SALES,
    STATUS_NEGOTIATION,
    STATUS_RAISE_INVOICE,
    demo_kommo_config,
    register_webhook,
)
from tests.sandbox.helpers import HookReceiver


@dataclass
class Rig:
    sandbox: RunningSandbox
    receiver: HookReceiver
    receiver_url: str
    client: httpx.AsyncClient

    async def subscribe(self, path: str = "/hook", settings: list[str] | None = None) -> int:
        body = {"destination": self.receiver_url + path, "settings": settings or ["status_lead"]}
        response = await self.client.post("/api/v4/webhooks", json=body)
        assert response.status_code == 201
        hook_id: int = response.json()["id"]
        return hook_id

    async def move(self, lead_id: int, status_id: int) -> httpx.Response:
        return await self.client.patch(f"/api/v4/leads/{lead_id}", json={"status_id": status_id})


async def _rig(**config: Any) -> AsyncIterator[Rig]:
    receiver = HookReceiver()
    kommo_config = demo_kommo_config(rate_limit=None, **config)
    async with (
        serve_app(receiver.app) as receiver_url,
        run_sandbox(kommo_config=kommo_config) as sandbox,
        httpx.AsyncClient(
            base_url=sandbox.kommo_url, headers={"Authorization": f"Bearer {KOMMO_TOKEN}"}
        ) as client,
    ):
        yield Rig(sandbox, receiver, receiver_url, client)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async for value in _rig():
        yield value


@pytest.fixture
async def impatient_rig() -> AsyncIterator[Rig]:
    """Kommo waits only 0.3 s, and disables a hook after more than 2 invalid answers."""
    async for value in _rig(webhook_timeout_seconds=0.3, webhook_disable_after=2):
        yield value


async def test_status_change_posts_kommo_form_to_subscribed_hooks(rig: Rig) -> None:
    await rig.subscribe("/hook")
    await rig.subscribe("/adds-only", settings=["add_lead"])

    patched = await rig.move(LEAD_SAMPLE, STATUS_RAISE_INVOICE)
    await rig.sandbox.kommo.webhooks.wait_idle()

    assert patched.status_code == 200
    assert [call.path for call in rig.receiver.calls] == ["/hook"]
    call = rig.receiver.calls[0]
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert call.headers["user-agent"] == "amoCRM-WebHook-client/1.0"
    lead = rig.sandbox.kommo.state.leads[LEAD_SAMPLE]
    created, updated = str(lead.created_at), str(lead.updated_at)
    assert parse_qsl(call.body.decode()) == [
        ("leads[status][0][id]", str(LEAD_SAMPLE)),
        ("leads[status][0][name]", "Sample deal"),
        ("leads[status][0][status_id]", str(STATUS_RAISE_INVOICE)),
        ("leads[status][0][old_status_id]", str(STATUS_NEGOTIATION)),
        ("leads[status][0][price]", "360"),
        ("leads[status][0][responsible_user_id]", "9000001"),
        ("leads[status][0][last_modified]", updated),
        ("leads[status][0][modified_user_id]", "9000001"),
        ("leads[status][0][created_user_id]", "9000001"),
        ("leads[status][0][date_create]", created),
        ("leads[status][0][pipeline_id]", str(PIPELINE_SALES)),
        ("leads[status][0][account_id]", "31000001"),
        ("leads[status][0][created_at]", created),
        ("leads[status][0][updated_at]", updated),
        ("account[subdomain]", "sandbox"),
        ("account[id]", "31000001"),
        ("account[_links][self]", rig.sandbox.kommo_url),
    ]
    delivery = rig.sandbox.kommo.webhooks.deliveries()[0]
    assert (delivery.outcome, delivery.status_code, delivery.lead_ids) == (
        "delivered",
        200,
        [LEAD_SAMPLE],
    )


async def test_custom_fields_and_batch_moves_share_one_post(rig: Rig) -> None:
    await rig.subscribe()
    fields = [
        {"field_id": FIELD_INVOICE_NUMBER, "values": [{"value": "SI-7"}]},
        {"field_id": FIELD_PAYMENT_STATUS, "values": [{"enum_id": 6000101}]},
    ]
    await rig.client.patch(f"/api/v4/leads/{LEAD_SAMPLE}", json={"custom_fields_values": fields})
    await rig.sandbox.kommo.webhooks.wait_idle()
    assert rig.receiver.calls == []  # a field change alone is not a stage change

    batch = [
        {"id": LEAD_SAMPLE, "status_id": STATUS_RAISE_INVOICE},
        {"id": LEAD_SECOND, "status_id": STATUS_RAISE_INVOICE},
    ]
    await rig.client.patch("/api/v4/leads", json=batch)
    await rig.sandbox.kommo.webhooks.wait_idle()

    form = parse_qsl(rig.receiver.calls[0].body.decode())
    assert len(rig.receiver.calls) == 1
    assert [(k, v) for k, v in form if "[custom_fields]" in k] == [
        ("leads[status][0][custom_fields][0][id]", str(FIELD_INVOICE_NUMBER)),
        ("leads[status][0][custom_fields][0][name]", "Invoice number"),
        ("leads[status][0][custom_fields][0][values][0][value]", "SI-7"),
        ("leads[status][0][custom_fields][1][id]", str(FIELD_PAYMENT_STATUS)),
        ("leads[status][0][custom_fields][1][name]", "Payment status"),
        ("leads[status][0][custom_fields][1][values][0][value]", "Unpaid"),
    ]
    assert ("leads[status][1][id]", str(LEAD_SECOND)) in form
    assert not any("old_pipeline_id" in key for key, _ in form)


async def test_control_move_acts_like_a_ui_stage_move(rig: Rig) -> None:
    await rig.subscribe()

    moved = await rig.client.post(
        f"/sandbox/leads/{LEAD_SECOND}/move", json={"status_id": STATUS_RAISE_INVOICE}
    )
    deliveries = await rig.client.get("/sandbox/webhook_deliveries", params={"wait": "true"})

    assert moved.json()["old_status_id"] == STATUS_NEGOTIATION
    assert moved.json()["status_id"] == STATUS_RAISE_INVOICE
    assert deliveries.json()["count"] == 1
    assert deliveries.json()["deliveries"][0]["outcome"] == "delivered"
    assert len(rig.receiver.calls) == 1


async def test_slow_receiver_times_out_without_slowing_the_patch(impatient_rig: Rig) -> None:
    rig = impatient_rig
    await rig.subscribe()
    rig.receiver.delay = 1.0

    started = time.perf_counter()
    patched = await rig.move(LEAD_SAMPLE, STATUS_RAISE_INVOICE)
    answered = time.perf_counter() - started
    await rig.sandbox.kommo.webhooks.wait_idle()

    assert patched.status_code == 200
    assert answered < 0.3
    [delivery] = rig.sandbox.kommo.webhooks.deliveries()
    assert (delivery.outcome, delivery.status_code) == ("timeout", None)


async def test_invalid_answers_disable_the_hook(impatient_rig: Rig) -> None:
    rig = impatient_rig
    hook_id = await rig.subscribe()
    rig.receiver.status = 500

    for status_id in (STATUS_RAISE_INVOICE, STATUS_NEGOTIATION, STATUS_RAISE_INVOICE):
        await rig.move(LEAD_SAMPLE, status_id)
        await rig.sandbox.kommo.webhooks.wait_idle()
    await rig.move(LEAD_SAMPLE, STATUS_NEGOTIATION)
    await rig.sandbox.kommo.webhooks.wait_idle()

    outcomes = [(d.outcome, d.status_code) for d in rig.sandbox.kommo.webhooks.deliveries()]
    assert outcomes == [("bad_status", 500)] * 3
    assert rig.sandbox.kommo.state.webhooks[hook_id].disabled


async def test_unreachable_destination_is_recorded_as_error(rig: Rig) -> None:
    body = {"destination": "http://127.0.0.1:9/nothing", "settings": ["status_lead"]}
    await rig.client.post("/api/v4/webhooks", json=body)

    await rig.move(LEAD_SAMPLE, STATUS_RAISE_INVOICE)
    await rig.sandbox.kommo.webhooks.wait_idle()

    [delivery] = rig.sandbox.kommo.webhooks.deliveries()
    assert delivery.outcome == "error"


async def test_webhook_registered_in_the_seed_state_is_used(rig: Rig) -> None:
    register_webhook(rig.sandbox.kommo.state, rig.receiver_url + "/seeded")

    await rig.move(LEAD_SECOND, STATUS_RAISE_INVOICE)
    await rig.sandbox.kommo.webhooks.wait_idle()

    assert [call.path for call in rig.receiver.calls] == ["/seeded"]


async def test_a_deleted_lead_sends_a_delete_hook_and_reads_as_gone(rig: Rig) -> None:
    kommo = rig.sandbox.kommo
    register_webhook(kommo.state, rig.receiver_url + "/deleted", ("delete_lead",))
    async with httpx.AsyncClient(base_url=rig.sandbox.kommo_url) as http:
        response = await http.post(f"/sandbox/leads/{LEAD_SAMPLE}/delete")
        missing = await http.post("/sandbox/leads/1/delete")
        await kommo.webhooks.wait_idle()
        headers = {"Authorization": f"Bearer {KOMMO_TOKEN}"}
        read = await http.get(f"/api/v4/leads/{LEAD_SAMPLE}", headers=headers)
        trash = await http.get("/api/v4/leads", params={"with": "only_deleted"}, headers=headers)

    assert (response.status_code, missing.status_code) == (200, 404)
    (call,) = [c for c in rig.receiver.calls if c.path == "/deleted"]
    assert parse_qsl(call.body.decode()) == [
        ("leads[delete][0][id]", str(LEAD_SAMPLE)),
        ("account[subdomain]", "sandbox"),
        ("account[id]", "31000001"),
        ("account[_links][self]", rig.sandbox.kommo_url),
    ]
    assert read.status_code == 204
    (listed,) = trash.json()["_embedded"]["leads"]
    assert (listed["id"], listed["is_deleted"]) == (LEAD_SAMPLE, True)
