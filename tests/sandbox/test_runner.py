"""The runner over real 127.0.0.1 sockets: ephemeral ports, control routes, and the
timeout-after-commit fault as a client with a real timeout experiences it."""

from __future__ import annotations

import time

import httpx
import pytest

from sandbox.common import RateLimit
from sandbox.runner import run_sandbox
from sandbox.seed import (
    KOMMO_TOKEN,
    LEAD_SAMPLE,
    SAGE_BUSINESS_ID,
    SAGE_TOKEN,
    demo_kommo_config,
)
from tests.sandbox.helpers import invoice_body

IDEMPOTENCY_ID = "9c3e1f0a2b4d4c6e8f1a3b5c7d9e0f12"


async def test_serves_both_apps_on_ephemeral_ports() -> None:
    async with run_sandbox() as sb, httpx.AsyncClient() as client:
        assert sb.sage_url.startswith("http://127.0.0.1:")
        assert sb.sage_api_url == sb.sage_url + "/v3.1"
        sage = await client.get(
            f"{sb.sage_api_url}/businesses", headers={"Authorization": f"Bearer {SAGE_TOKEN}"}
        )
        kommo = await client.get(
            f"{sb.kommo_url}/api/v4/leads/{LEAD_SAMPLE}",
            headers={"Authorization": f"Bearer {KOMMO_TOKEN}"},
        )
        assert sage.json()["$items"][0]["id"] == SAGE_BUSINESS_ID
        assert (
            kommo.json()["_links"]["self"]["href"] == f"{sb.kommo_url}/api/v4/leads/{LEAD_SAMPLE}"
        )


async def test_timeout_after_commit_the_write_stands_and_a_retry_replays_it() -> None:
    async with (
        run_sandbox() as sb,
        httpx.AsyncClient(
            base_url=sb.sage_api_url,
            headers={"Authorization": f"Bearer {SAGE_TOKEN}"},
            timeout=0.5,
        ) as client,
    ):
        fault = {
            "method": "POST",
            "path": "/v3.1/sales_invoices",
            "kind": "timeout_after_commit",
            "delay": 30,
        }
        armed = await client.post(f"{sb.sage_url}/sandbox/faults", json=fault)
        assert armed.status_code == 201
        body = invoice_body(idempotency_id=IDEMPOTENCY_ID)

        started = time.perf_counter()
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/sales_invoices", json=body)
        assert time.perf_counter() - started < 2

        book = sb.sage.state.books[SAGE_BUSINESS_ID]
        [written] = book.invoices.values()
        retried = await client.post("/sales_invoices", json=body)
        assert (retried.status_code, retried.json()["id"]) == (201, written.id)
        assert len(book.invoices) == 1
        logged = [(r.path, r.status) for r in sb.sage.requests.entries(method="POST")]
        assert logged == [("/v3.1/sales_invoices", 201), ("/v3.1/sales_invoices", 201)]


async def test_invoice_link_points_at_the_served_html_view() -> None:
    async with (
        run_sandbox() as sb,
        httpx.AsyncClient(headers={"Authorization": f"Bearer {SAGE_TOKEN}"}) as client,
    ):
        created = await client.post(f"{sb.sage_api_url}/sales_invoices", json=invoice_body())
        link = created.json()["links"][0]["href"]

        page = await client.get(link)

        assert link.startswith(sb.sage_url + "/sandbox/ui/sales_invoices/")
        assert page.status_code == 200 and "SI-1" in page.text


async def test_kommo_rate_limit_over_the_wire_is_a_non_json_429() -> None:
    # Kommo's 7 per second, stretched to 7 per minute so a slow machine cannot slip through.
    config = demo_kommo_config(rate_limit=RateLimit(limit=7, window_seconds=60))
    async with (
        run_sandbox(kommo_config=config) as sb,
        httpx.AsyncClient(
            base_url=sb.kommo_url, headers={"Authorization": f"Bearer {KOMMO_TOKEN}"}
        ) as client,
    ):
        statuses = [(await client.get("/api/v4/account")).status_code for _ in range(8)]
        limited = await client.get("/api/v4/account")

    assert statuses[:7] == [200] * 7
    assert limited.status_code == 429
    assert limited.headers["content-type"].startswith("text/html")
    assert "retry-after" not in limited.headers
    with pytest.raises(ValueError, match="Expecting value"):
        limited.json()
