"""The upstream rate limit is shared through Redis: two clients, one budget."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis

from app.clients.http import build_http_client
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
