"""The shared upstream call: transport failures become transient errors; brief 429s are
absorbed with a short pause instead of a trip down the retry ladder."""

from __future__ import annotations

import httpx
import pytest
import respx

from app.clients.http import send
from app.errors import UpstreamTransientError

URL = "https://api.test"


async def call(router: respx.MockRouter, *responses: httpx.Response | Exception) -> httpx.Response:
    router.get(f"{URL}/x").mock(side_effect=list(responses))
    async with httpx.AsyncClient(base_url=URL) as http:
        return await send(http, "kommo", "GET", "/x")


async def test_a_brief_429_is_retried_after_its_retry_after() -> None:
    with respx.mock() as router:
        response = await call(
            router, httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(200)
        )
        assert response.status_code == 200
        assert router.calls.call_count == 2


async def test_a_429_that_keeps_coming_is_returned_after_three_tries() -> None:
    with respx.mock() as router:
        throttled = httpx.Response(429, headers={"Retry-After": "0"})
        response = await call(router, throttled, throttled, throttled, httpx.Response(200))
        assert response.status_code == 429
        assert router.calls.call_count == 3


async def test_a_429_asking_for_a_long_pause_goes_to_the_ladder_at_once() -> None:
    with respx.mock() as router:
        response = await call(router, httpx.Response(429, headers={"Retry-After": "120"}))
        assert response.status_code == 429
        assert router.calls.call_count == 1


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (httpx.ConnectError("refused"), "GET /x failed: ConnectError"),
        (httpx.ReadTimeout("slow"), r"GET /x timed out \(ReadTimeout\)"),
    ],
)
async def test_transport_failures_are_transient(error: Exception, message: str) -> None:
    with respx.mock() as router, pytest.raises(UpstreamTransientError, match=message):
        await call(router, error)
