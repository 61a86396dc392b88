"""Rate limiting, fault injection and the request log, exercised through the Sage simulator."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from sandbox.common import RateLimit
from sandbox.sage import SageSandbox, build_sage
from sandbox.sage.models import Business
from sandbox.seed import SAGE_TOKEN, demo_sage_config, demo_sage_state
from tests.sandbox.helpers import START, invoice_body, sage_errors

INVOICES = "/v3.1/sales_invoices"


@pytest.fixture
async def limited() -> AsyncIterator[tuple[SageSandbox, httpx.AsyncClient]]:
    sandbox = build_sage(
        demo_sage_config(rate_limit=RateLimit(limit=3, window_seconds=60)), demo_sage_state()
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sandbox.app),
        base_url="http://sage.test",
        headers={"Authorization": f"Bearer {SAGE_TOKEN}"},
    ) as client:
        yield sandbox, client


async def test_rate_limit_per_business_answers_429_with_retry_after(
    limited: tuple[SageSandbox, httpx.AsyncClient],
) -> None:
    sandbox, client = limited
    other = "0123456789abcdef0123456789abcdef"
    sandbox.state.add_business(Business(other, "Second Ltd", "GBP", "GB", START))

    statuses = [(await client.get("/v3.1/tax_rates")).status_code for _ in range(3)]
    limited_response = await client.get("/v3.1/tax_rates")
    other_business = await client.get("/v3.1/tax_rates", headers={"X-Business": other})

    assert statuses == [200, 200, 200]
    assert limited_response.status_code == 429
    assert limited_response.headers["retry-after"] == "60"
    assert sage_errors(limited_response) == [("TooManyRequests", "")]
    assert other_business.status_code == 200


async def test_rate_limit_can_be_switched_off(
    limited: tuple[SageSandbox, httpx.AsyncClient],
) -> None:
    _, client = limited
    off = {"limit": 3, "window_seconds": 60, "enabled": False}
    assert (await client.put("/sandbox/rate_limit", json=off)).status_code == 200

    statuses = {(await client.get("/v3.1/tax_rates")).status_code for _ in range(5)}

    assert statuses == {200}
    assert (await client.get("/sandbox/rate_limit")).json() == {"rate_limit": off}


async def test_fail_fault_answers_without_running_the_handler(
    sage_anonymous: httpx.AsyncClient, sage_client: httpx.AsyncClient, sage: SageSandbox
) -> None:
    fault = {"method": "POST", "path": INVOICES, "kind": "fail", "count": 2, "status": 503}
    assert (await sage_anonymous.post("/sandbox/faults", json=fault)).status_code == 201

    answers = [await sage_client.post("/sales_invoices", json=invoice_body()) for _ in range(3)]

    assert [a.status_code for a in answers] == [503, 503, 201]
    assert sage_errors(answers[0]) == [("UnexpectedError", "")]
    assert len(sage.state.books[next(iter(sage.state.books))].invoices) == 1


async def test_rate_limit_fault_sends_retry_after(
    sage: SageSandbox, sage_client: httpx.AsyncClient
) -> None:
    sage.faults.rate_limit_next("GET", INVOICES, retry_after=7)

    first, second = [await sage_client.get("/sales_invoices") for _ in range(2)]

    assert (first.status_code, first.headers["retry-after"]) == (429, "7")
    assert sage_errors(first) == [("TooManyRequests", "")]
    assert second.status_code == 200


async def test_faults_match_path_templates_and_methods(
    sage: SageSandbox, sage_client: httpx.AsyncClient
) -> None:
    sage.faults.fail_next("GET", INVOICES + "/{key}", count=5)

    listing = await sage_client.get("/sales_invoices")
    single = await sage_client.get("/sales_invoices/" + "0" * 32)
    posted = await sage_client.post("/sales_invoices", json=invoice_body())

    assert (listing.status_code, single.status_code, posted.status_code) == (200, 500, 201)


async def test_latency_fault_delays_every_matching_call_until_cleared(
    sage: SageSandbox, sage_client: httpx.AsyncClient, sage_anonymous: httpx.AsyncClient
) -> None:
    sage.faults.add_latency("*", "/v3.1/tax_rates", 0.2)

    started = time.perf_counter()
    await sage_client.get("/tax_rates")
    await sage_client.get("/tax_rates")
    delayed = time.perf_counter() - started
    cleared = await sage_anonymous.delete("/sandbox/faults")
    started = time.perf_counter()
    await sage_client.get("/tax_rates")

    assert delayed >= 0.4
    assert cleared.json() == {"cleared": 1}
    assert time.perf_counter() - started < 0.2


async def test_timeout_after_commit_writes_then_holds_the_answer(
    sage: SageSandbox, sage_client: httpx.AsyncClient
) -> None:
    # In-process there is no client timeout, so the held answer arrives after the delay; the
    # over-the-wire behaviour (client gives up, write stands) is in test_runner.py.
    sage.faults.timeout_after_commit("POST", INVOICES, delay=0.3)

    started = time.perf_counter()
    response = await sage_client.post("/sales_invoices", json=invoice_body())

    assert time.perf_counter() - started >= 0.3
    assert response.status_code == 201
    assert sage.faults.active() == []


async def test_fault_body_is_validated(sage_anonymous: httpx.AsyncClient) -> None:
    no_delay = {"method": "GET", "path": INVOICES, "kind": "latency"}
    wrong_status = {"method": "GET", "path": INVOICES, "kind": "fail", "status": 404}
    refusing_a_500 = {"method": "GET", "path": INVOICES, "kind": "refuse", "status": 500}
    refusing_a_422 = {**refusing_a_500, "status": 422}
    for invalid in (no_delay, wrong_status, refusing_a_500):
        assert (await sage_anonymous.post("/sandbox/faults", json=invalid)).status_code == 422
    assert (await sage_anonymous.post("/sandbox/faults", json=refusing_a_422)).status_code == 201


async def test_faults_are_listed_with_what_remains(
    sage: SageSandbox, sage_anonymous: httpx.AsyncClient
) -> None:
    sage.faults.fail_next("POST", INVOICES, count=3, status=502)
    listed = (await sage_anonymous.get("/sandbox/faults")).json()["faults"]
    assert listed == [
        {
            "method": "POST",
            "path": INVOICES,
            "kind": "fail",
            "count": 3,
            "status": 502,
            "retry_after": 1,
            "delay": 0.0,
            "remaining": 3,
        }
    ]


async def test_request_log_records_api_calls_with_secrets_redacted(
    sage_client: httpx.AsyncClient, sage_anonymous: httpx.AsyncClient
) -> None:
    await sage_client.post(
        "/sales_invoices",
        json=invoice_body(),
        headers={"X-Business": "5a9d1a3bb3f94b4e8b2c0e1f7d6a0001"},
    )
    await sage_client.get("/contacts", params={"email": "grace@example.com"})
    await sage_anonymous.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "c",
            "client_secret": "s",
            "refresh_token": "r",
        },
    )
    await sage_anonymous.get("/sandbox/faults")

    everything = (await sage_anonymous.get("/sandbox/requests")).json()
    posts = (
        await sage_anonymous.get(
            "/sandbox/requests", params={"method": "post", "path_prefix": INVOICES}
        )
    ).json()

    assert [(r["method"], r["path"], r["status"]) for r in everything["requests"]] == [
        ("POST", INVOICES, 201),
        ("GET", "/v3.1/contacts", 200),
        ("POST", "/oauth/token", 401),
    ]
    assert posts["count"] == 1
    invoice_call = posts["requests"][0]
    assert invoice_call["headers"]["authorization"] == "REDACTED"
    assert invoice_call["headers"]["x-business"] == "5a9d1a3bb3f94b4e8b2c0e1f7d6a0001"
    assert invoice_call["body"] == invoice_body()
    assert 0 < invoice_call["duration_ms"] < 10_000
    assert everything["requests"][1]["query"] == {"email": ["grace@example.com"]}
    assert everything["requests"][2]["body"] == {
        "grant_type": "refresh_token",
        "client_id": "c",
        "client_secret": "REDACTED",
        "refresh_token": "REDACTED",
    }
    assert (await sage_anonymous.delete("/sandbox/requests")).status_code == 204
    assert (await sage_anonymous.get("/sandbox/requests")).json() == {"count": 0, "requests": []}


async def test_request_log_python_accessor(
    sage: SageSandbox, sage_client: httpx.AsyncClient
) -> None:
    await sage_client.get("/tax_rates")
    entries = sage.requests.entries(method="GET", path_prefix="/v3.1/tax")
    assert [(e.path, e.status, e.headers["authorization"]) for e in entries] == [
        ("/v3.1/tax_rates", 200, "REDACTED")
    ]


async def test_refuse_fault_answers_a_4xx_in_sages_error_form(
    sage: SageSandbox, sage_client: httpx.AsyncClient, sage_anonymous: httpx.AsyncClient
) -> None:
    fault = {
        "method": "POST",
        "path": INVOICES,
        "kind": "refuse",
        "status": 422,
        "code": "RecordInvalid",
        "message": "Ledger account is archived",
    }
    armed = await sage_anonymous.post("/sandbox/faults", json=fault)
    sage.faults.refuse_next("GET", "/v3.1/tax_rates", status=401)

    refused = await sage_client.post("/sales_invoices", json=invoice_body())
    unauthorized = await sage_client.get("/tax_rates")
    then = await sage_client.post("/sales_invoices", json=invoice_body())

    assert armed.json()["armed"]["message"] == "Ledger account is archived"
    assert (refused.status_code, sage_errors(refused)) == (422, [("RecordInvalid", "")])
    assert refused.json()[0]["$message"] == "Ledger account is archived"
    assert (unauthorized.status_code, sage_errors(unauthorized)) == (
        401,
        [("AuthorizationFailure", "")],
    )
    assert then.status_code == 201
    assert len(sage.state.books[next(iter(sage.state.books))].invoices) == 1


async def test_total_adjustment_moves_the_total_not_the_lines(
    sage: SageSandbox, sage_client: httpx.AsyncClient
) -> None:
    book = sage.state.books[next(iter(sage.state.books))]
    book.total_adjustment = Decimal("0.01")

    created = (await sage_client.post("/sales_invoices", json=invoice_body())).json()

    # 2.5 × 120.00 + 3 × 19.99 = 359.97 net, 71.99 tax (60.00 + 11.99)
    assert (created["net_amount"], created["tax_amount"]) == ("359.97", "71.99")
    assert (created["total_amount"], created["outstanding_amount"]) == ("431.97", "431.97")
