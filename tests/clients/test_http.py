"""The shared upstream call: transport failures become transient errors; brief 429s are
absorbed with a short pause instead of a trip down the retry ladder."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from app.clients.http import send
from app.errors import UpstreamTransientError
from tests.conftest import KOMMO_URL
from tests.upstreams import KOMMO_TOKEN, Kommo

ACCOUNT = "/api/v4/account"


async def call(*, timeout: float = 5.0) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KOMMO_TOKEN}"}
    async with httpx.AsyncClient(base_url=KOMMO_URL, headers=headers, timeout=timeout) as http:
        return await send(http, "kommo", "GET", ACCOUNT)


async def test_a_brief_429_is_retried_after_its_retry_after(kommo: Kommo) -> None:
    kommo.faults.rate_limit_next("GET", ACCOUNT, retry_after=0)

    response = await call()

    assert response.status_code == 200
    assert kommo.calls(ACCOUNT) == 2


async def test_a_429_that_keeps_coming_is_returned_after_three_tries(kommo: Kommo) -> None:
    kommo.faults.rate_limit_next("GET", ACCOUNT, retry_after=0, count=4)

    response = await call()

    assert response.status_code == 429
    assert kommo.calls(ACCOUNT) == 3


async def test_a_429_asking_for_a_long_pause_goes_to_the_ladder_at_once(kommo: Kommo) -> None:
    kommo.faults.rate_limit_next("GET", ACCOUNT, retry_after=120)

    response = await call()

    assert response.status_code == 429
    assert kommo.calls(ACCOUNT) == 1


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (
            lambda kommo: kommo.faults.disconnect_next("GET", ACCOUNT),
            "GET /api/v4/account failed: RemoteProtocolError",
        ),
        (
            lambda kommo: kommo.faults.add_latency("GET", ACCOUNT, 5),
            r"GET /api/v4/account timed out \(ReadTimeout\)",
        ),
    ],
    ids=["dropped", "slow"],
)
async def test_transport_failures_are_transient(
    kommo: Kommo, fault: Callable[[Kommo], None], message: str
) -> None:
    fault(kommo)

    with pytest.raises(UpstreamTransientError, match=message):
        await call(timeout=0.5)
