"""SandboxTransport: a simulator in-process that times out and drops connections as a socket
would; and the same faults over a real socket (run_sandbox)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from sandbox.runner import run_sandbox
from sandbox.sage import SageSandbox
from sandbox.seed import SAGE_BUSINESS_ID, SAGE_TOKEN
from sandbox.transport import SandboxTransport
from tests.sandbox.helpers import SAGE_BASE, invoice_body

INVOICES = "/v3.1/sales_invoices"


@pytest.fixture
async def sage_http(sage: SageSandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=SandboxTransport(app=sage.app),
        base_url=SAGE_BASE,
        headers={"Authorization": f"Bearer {SAGE_TOKEN}"},
        # Short enough for the held and slow answers below (30 s, 5 s), long enough for a busy
        # machine to answer an ordinary request.
        timeout=1.5,
    ) as client:
        yield client


async def test_a_held_answer_is_a_read_timeout_and_the_write_stands(
    sage: SageSandbox, sage_http: httpx.AsyncClient
) -> None:
    sage.faults.timeout_after_commit("POST", INVOICES, delay=30)

    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        await sage_http.post("/sales_invoices", json=invoice_body())

    assert time.perf_counter() - started < 15  # the answer is held 30 s: the timeout ended it
    assert len(sage.state.books[SAGE_BUSINESS_ID].invoices) == 1
    assert [e.status for e in sage.requests.entries(method="POST")] == [201]


async def test_latency_beyond_the_timeout_is_a_read_timeout(
    sage: SageSandbox, sage_http: httpx.AsyncClient
) -> None:
    sage.faults.add_latency("GET", "/v3.1/tax_rates", 5, count=1)

    with pytest.raises(httpx.ReadTimeout):
        await sage_http.get("/tax_rates")
    assert (await sage_http.get("/tax_rates")).status_code == 200


async def test_a_dropped_connection_is_a_network_error_and_nothing_runs(
    sage: SageSandbox, sage_http: httpx.AsyncClient
) -> None:
    sage.faults.disconnect_next("POST", INVOICES)

    with pytest.raises(httpx.RemoteProtocolError):
        await sage_http.post("/sales_invoices", json=invoice_body())
    retried = await sage_http.post("/sales_invoices", json=invoice_body())

    assert retried.status_code == 201
    assert len(sage.state.books[SAGE_BUSINESS_ID].invoices) == 1
    assert [e.status for e in sage.requests.entries(method="POST")] == [0, 201]


async def test_the_request_log_names_the_host_it_was_sent_to(
    sage: SageSandbox, sage_http: httpx.AsyncClient
) -> None:
    await sage_http.get("/tax_rates")

    (entry,) = sage.requests.entries()
    assert entry.headers["host"] == "sage.test"


async def test_a_dropped_connection_over_a_socket_is_a_network_error_too() -> None:
    async with (
        run_sandbox() as sb,
        httpx.AsyncClient(
            base_url=sb.sage_api_url, headers={"Authorization": f"Bearer {SAGE_TOKEN}"}
        ) as client,
    ):
        sb.sage.faults.disconnect_next("GET", "/v3.1/tax_rates")

        with pytest.raises(httpx.TransportError):
            await client.get("/tax_rates")
        assert (await client.get("/tax_rates")).status_code == 200
