"""The upstream rate limit is shared through Redis: two clients, one budget."""

from __future__ import annotations

import uuid

import httpx
import pytest
import redis.asyncio as aioredis
import respx
from arq.connections import ArqRedis

from app.clients.http import build_http_client, send
from app.clients.kommo.errors import KommoTransientError
from app.clients.ratelimit import SharedRateLimit
from tests.conftest import SAGE_URL
from tests.upstreams import BUSINESS_ID, SAGE_TOKEN, Sage


async def test_the_budget_is_shared_by_every_limiter_on_the_same_key(
    redis_url: str, queue: ArqRedis
) -> None:
    key = f"kommo:{uuid.uuid4()}"
    worker_a = SharedRateLimit(redis_url, rate="7/second", key=key)
    worker_b = SharedRateLimit(redis_url, rate="7/second", key=key)

    granted = [await (worker_a if i % 2 else worker_b).try_acquire() for i in range(9)]

    assert granted == [True] * 7 + [False] * 2
    other = SharedRateLimit(redis_url, rate="7/second", key=f"kommo:{uuid.uuid4()}")
    assert await other.try_acquire() is True


async def test_every_request_through_the_client_is_counted(
    redis_url: str, queue: ArqRedis, sage: Sage
) -> None:
    key = f"sage:{uuid.uuid4()}"
    limit = SharedRateLimit(redis_url, rate="3/minute", key=key)
    probe = SharedRateLimit(redis_url, rate="3/minute", key=key)
    headers = {"Authorization": f"Bearer {SAGE_TOKEN}", "X-Business": BUSINESS_ID}
    async with build_http_client(SAGE_URL, headers=headers, timeout=5, limit=limit) as http:
        for _ in range(3):
            assert (await http.get("tax_rates")).status_code == 200

    assert len(sage.queries("/v3.1/tax_rates")) == 3
    assert await probe.try_acquire() is False  # the three calls used the minute's budget


async def test_a_request_counts_until_a_window_after_its_answer(
    redis_url: str, queue: ArqRedis
) -> None:
    limit = SharedRateLimit(redis_url, rate="1/second", key=f"kommo:{uuid.uuid4()}")

    sent = await limit.acquire()
    still_waiting = await limit.try_acquire()
    await limit.answered(sent)
    just_answered = await limit.try_acquire()

    # Kommo may see the request as late as its answer: the second must wait a window from then.
    assert (still_waiting, just_answered) == (False, False)


async def test_a_429_halves_the_budget_of_every_process_once_per_window(
    redis_url: str, queue: ArqRedis
) -> None:
    key = f"kommo:{uuid.uuid4()}"
    worker_a = SharedRateLimit(redis_url, rate="8/second", key=key)
    worker_b = SharedRateLimit(redis_url, rate="8/second", key=key)

    lowered = await worker_a.throttled(None)
    again = await worker_b.throttled(None)  # a second 429 of the same moment: no second halving
    granted = [await (worker_a if i % 2 else worker_b).try_acquire() for i in range(6)]

    assert (int(lowered), int(again)) == (4, 4)
    assert granted == [True] * 4 + [False] * 2


async def test_a_short_retry_after_pauses_every_process_and_a_long_one_does_not(
    redis_url: str, queue: ArqRedis
) -> None:
    short = SharedRateLimit(redis_url, rate="100/second", key=f"kommo:{uuid.uuid4()}")
    long = SharedRateLimit(redis_url, rate="100/second", key=f"kommo:{uuid.uuid4()}")
    request = httpx.Request("GET", "https://testco.kommo.com/api/v4/account")

    await short.on_response(httpx.Response(429, headers={"Retry-After": "3"}, request=request))
    await long.on_response(httpx.Response(429, headers={"Retry-After": "120"}, request=request))

    # 120 s is honoured by the throttled event's own retry; the others go on at half budget.
    assert (await short.try_acquire(), await long.try_acquire()) == (False, True)


async def test_a_request_that_got_no_answer_stops_counting_a_window_after_it_failed(
    redis_url: str, queue: ArqRedis
) -> None:
    key = f"kommo:{uuid.uuid4()}"
    limit = SharedRateLimit(redis_url, rate="7/second", key=key)
    with respx.mock(base_url="https://testco.kommo.com") as mock:
        mock.get("/api/v4/account").mock(side_effect=httpx.ConnectError("refused"))
        async with build_http_client(
            "https://testco.kommo.com", headers={}, timeout=5, limit=limit
        ) as http:
            with pytest.raises(KommoTransientError):
                await send(http, "kommo", "GET", "/api/v4/account", transient=KommoTransientError)

    async with aioredis.Redis.from_url(redis_url) as redis:
        ((_, until),) = await redis.zrange(f"sagebridge:ratelimit:{key}", 0, -1, withscores=True)
        seconds, micros = await redis.time()
    # Counted one window (1 s) from the failure, not the 30 s an unanswered request is held.
    assert until - (seconds * 1_000_000 + micros) <= 1_000_000
