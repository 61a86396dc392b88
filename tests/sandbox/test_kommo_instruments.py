"""Kommo's own flavour of rate limiting, injected faults and the request log."""

from __future__ import annotations

import httpx

from sandbox.common import RateLimit
from sandbox.kommo import KommoSandbox
from sandbox.seed import LEAD_SAMPLE

LEAD_PATH = "/api/v4/leads/{id}"


async def test_rate_limit_per_token_answers_an_nginx_page(
    kommo: KommoSandbox, kommo_client: httpx.AsyncClient
) -> None:
    kommo.limiter.configure(RateLimit(limit=2, window_seconds=60))

    statuses = [(await kommo_client.get("/api/v4/account")).status_code for _ in range(3)]
    other_token = await kommo_client.get("/api/v4/account", headers={"Authorization": "Bearer x"})

    assert statuses == [200, 200, 429]
    assert other_token.status_code == 401  # its own window; then refused by authentication


async def test_limited_answer_is_not_json(
    kommo: KommoSandbox, kommo_client: httpx.AsyncClient
) -> None:
    kommo.limiter.configure(RateLimit(limit=1, window_seconds=60))
    await kommo_client.get("/api/v4/account")

    limited = await kommo_client.get("/api/v4/account")

    assert limited.headers["content-type"].startswith("text/html")
    assert "429 Too Many Requests" in limited.text
    assert "retry-after" not in limited.headers


async def test_injected_gateway_errors_are_html_and_500_is_problem_json(
    kommo: KommoSandbox, kommo_client: httpx.AsyncClient
) -> None:
    kommo.faults.fail_next("GET", LEAD_PATH, status=503)
    kommo.faults.fail_next("GET", LEAD_PATH, status=500)

    gateway = await kommo_client.get(f"/api/v4/leads/{LEAD_SAMPLE}")
    server = await kommo_client.get(f"/api/v4/leads/{LEAD_SAMPLE}")
    healthy = await kommo_client.get(f"/api/v4/leads/{LEAD_SAMPLE}")

    assert (gateway.status_code, gateway.headers["content-type"][:9]) == (503, "text/html")
    assert (server.status_code, server.headers["content-type"]) == (500, "application/problem+json")
    assert healthy.status_code == 200


async def test_injected_429_carries_retry_after(
    kommo: KommoSandbox, kommo_client: httpx.AsyncClient
) -> None:
    kommo.faults.rate_limit_next("PATCH", "/api/v4/leads", retry_after=3)
    response = await kommo_client.patch("/api/v4/leads", json=[{"id": LEAD_SAMPLE, "name": "x"}])
    assert (response.status_code, response.headers["retry-after"]) == (429, "3")
    assert kommo.state.leads[LEAD_SAMPLE].name == "Sample deal"


async def test_request_log_keeps_json_bodies_and_redacts_the_token(
    kommo: KommoSandbox, kommo_client: httpx.AsyncClient, kommo_anonymous: httpx.AsyncClient
) -> None:
    body = [{"text": "Call back", "complete_till": 1714640400}]
    await kommo_client.post("/api/v4/tasks", json=body)

    listed = (await kommo_anonymous.get("/sandbox/requests", params={"method": "POST"})).json()

    [entry] = listed["requests"]
    assert (entry["path"], entry["status"], entry["body"]) == ("/api/v4/tasks", 200, body)
    assert entry["headers"]["authorization"] == "REDACTED"


async def test_refuse_fault_answers_problem_json(
    kommo: KommoSandbox, kommo_client: httpx.AsyncClient
) -> None:
    kommo.faults.refuse_next("POST", "/api/v4/tasks", status=400, message="Bad task")

    refused = await kommo_client.post("/api/v4/tasks", json=[{"text": "x", "complete_till": 1}])

    assert (refused.status_code, refused.headers["content-type"]) == (
        400,
        "application/problem+json",
    )
    assert refused.json() == {
        "title": "Bad Request",
        "type": "https://httpstatus.es/400",
        "status": 400,
        "detail": "Bad task",
    }
    assert kommo.state.tasks == {}
