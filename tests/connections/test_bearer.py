"""OAuthBearer: the bearer header on every call; a 401 forces one refresh and one retry."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.connections.runtime import Connections
from app.connections.tokens import OAuthBearer
from tests.connections.conftest import SAGE_KEY, another_process, connect
from tests.connections.fakes import FakeOAuthServer

SAGE_API = "https://api.accounting.sage.com/v3.1"


@pytest.fixture
async def sage_api(
    connections: Connections, upstream: FakeOAuthServer
) -> AsyncIterator[httpx.AsyncClient]:
    await connect(connections, upstream)
    async with httpx.AsyncClient(
        transport=upstream.transport(), base_url=SAGE_API, auth=connections.bearer(SAGE_KEY)
    ) as client:
        yield client


async def test_every_call_carries_the_current_token(
    sage_api: httpx.AsyncClient, upstream: FakeOAuthServer
) -> None:
    response = await sage_api.get("/protected")

    assert response.status_code == 200
    assert upstream.protected_calls == [upstream.latest[0]]


async def test_a_401_forces_one_refresh_and_one_retry(
    sage_api: httpx.AsyncClient, upstream: FakeOAuthServer
) -> None:
    refused = upstream.latest[0]
    upstream.invalidate(refused)  # revoked early: the clock still calls it fresh

    response = await sage_api.get("/protected")

    assert response.status_code == 200
    assert upstream.refresh_requests == 1
    assert upstream.protected_calls == [refused, upstream.latest[0]]


async def test_a_second_401_is_answered_not_retried_again(
    sage_api: httpx.AsyncClient, upstream: FakeOAuthServer
) -> None:
    upstream.always_unauthorized = True  # e.g. Sage's "No active subscription"

    response = await sage_api.get("/protected")

    assert response.status_code == 401
    assert upstream.refresh_requests == 1
    assert len(upstream.protected_calls) == 2


async def test_a_401_after_another_process_refreshed_uses_its_token_without_refreshing(
    connections: Connections, sage_api: httpx.AsyncClient, upstream: FakeOAuthServer
) -> None:
    first = await connections.tokens(SAGE_KEY).access_token()  # this process caches it
    elsewhere = await another_process(connections).tokens(SAGE_KEY).force_refresh(stale=first)
    upstream.invalidate(first)

    response = await sage_api.get("/protected")

    assert response.status_code == 200
    assert upstream.protected_calls == [first, elsewhere]
    assert upstream.refresh_requests == 1  # the other process's, not ours


async def test_bearer_refuses_a_sync_client(connections: Connections) -> None:
    auth = OAuthBearer(connections.tokens(SAGE_KEY))
    with pytest.raises(RuntimeError, match="AsyncClient"):
        next(auth.sync_auth_flow(httpx.Request("GET", "https://example.test")))
