"""The simulators' records survive a dump and a load: a restarted sandbox carries on where it
stopped, answering every read as before and numbering new records after the old ones."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from sandbox import snapshot
from sandbox.kommo import KommoSandbox, build_kommo
from sandbox.sage import SageSandbox, build_sage
from sandbox.seed import KOMMO_TOKEN, LEAD_SAMPLE, SAGE_TOKEN, demo_kommo_config, demo_sage_config
from tests.sandbox.helpers import KOMMO_BASE, SAGE_BASE, FakeClock, invoice_body

TASK = [{"text": "Check", "complete_till": 1, "entity_type": "leads", "entity_id": LEAD_SAMPLE}]


@asynccontextmanager
async def clients(
    sage: SageSandbox, kommo: KommoSandbox
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    def client(app: object, base: str, token: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        return httpx.AsyncClient(
            transport=transport, base_url=base, headers={"Authorization": f"Bearer {token}"}
        )

    async with (
        client(sage.app, SAGE_BASE, SAGE_TOKEN) as sage_http,
        client(kommo.app, KOMMO_BASE, KOMMO_TOKEN) as kommo_http,
    ):
        yield sage_http, kommo_http


async def test_a_loaded_snapshot_answers_as_before_and_goes_on_numbering(
    sage: SageSandbox,
    kommo: KommoSandbox,
    sage_client: httpx.AsyncClient,
    sage_anonymous: httpx.AsyncClient,
    kommo_client: httpx.AsyncClient,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    keyed = invoice_body(idempotency_id="9c" * 16)
    invoice = (await sage_client.post("/sales_invoices", json=keyed)).json()
    await sage_anonymous.post(
        f"/sandbox/sales_invoices/{invoice['id']}/payments", json={"amount": "100"}
    )
    task = (await kommo_client.post("/api/v4/tasks", json=TASK)).json()["_embedded"]["tasks"][0]
    await kommo_client.patch(f"/api/v4/leads/{LEAD_SAMPLE}", json={"status_id": 7100003})
    before_invoice = (await sage_client.get(f"/sales_invoices/{invoice['id']}")).json()
    before_lead = (await kommo_client.get(f"/api/v4/leads/{LEAD_SAMPLE}")).json()
    path = tmp_path / "data" / "sandbox.json"

    snapshot.write(path, snapshot.dump(sage.state, kommo.state))
    sage_state, kommo_state = snapshot.load(path.read_bytes(), clock=clock)
    restarted_kommo = build_kommo(demo_kommo_config(rate_limit=None), kommo_state)
    restarted = build_sage(demo_sage_config(), sage_state), restarted_kommo
    async with clients(*restarted) as (sage_http, kommo_http):
        after_invoice = (await sage_http.get(f"/sales_invoices/{invoice['id']}")).json()
        after_lead = (await kommo_http.get(f"/api/v4/leads/{LEAD_SAMPLE}")).json()
        replayed = await sage_http.post("/sales_invoices", json=keyed)
        second = (await sage_http.post("/sales_invoices", json=invoice_body())).json()
        new_task = await kommo_http.post("/api/v4/tasks", json=TASK)
    await restarted_kommo.webhooks.aclose()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert after_invoice == before_invoice
    assert after_invoice["status"]["id"] == "PART_PAID"
    assert after_lead == before_lead
    assert (replayed.status_code, replayed.json()) == (201, invoice)  # remembered, not redone
    assert (invoice["invoice_number"], second["invoice_number"]) == ("SI-1", "SI-2")
    assert new_task.json()["_embedded"]["tasks"][0]["id"] == task["id"] + 1


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"{not json", r"not a sandbox snapshot: 1 problem\(s\)"),
        (b'{"format": 1}', r"not a sandbox snapshot: 2 problem\(s\)"),
    ],
)
def test_anything_else_is_refused_by_name(raw: bytes, problem: str) -> None:
    with pytest.raises(snapshot.SnapshotError, match=problem):
        snapshot.load(raw)


def test_another_format_is_refused(sage: SageSandbox, kommo: KommoSandbox) -> None:
    raw = snapshot.dump(sage.state, kommo.state).replace(b'"format": 1', b'"format": 2', 1)

    with pytest.raises(snapshot.SnapshotError, match="snapshot format 2, this sandbox reads 1"):
        snapshot.load(raw)
