"""OAuthBearer: the bearer header on every call; a 401 forces one refresh and one retry."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.connections.runtime import Connections
from app.connections.tokens import OAuthBearer
from tests.connections.conftest import (
    PROTECTED,
    SAGE_KEY,
    OAuthProvider,
    another_process,
    connect,
)

SAGE_API = "https://api.accounting.sage.com"


@pytest.fixture
async def sage_api(
    connections: Connections, sage_oauth: OAuthProvider
) -> AsyncIterator[httpx.AsyncClient]:
    await connect(connections, sage_oauth)
    async with httpx.AsyncClient(base_url=SAGE_API, auth=connections.bearer(SAGE_KEY)) as client:
        yield client


async def test_every_call_carries_the_current_token(
    sage_api: httpx.AsyncClient, sage_oauth: OAuthProvider
) -> None:
    response = await sage_api.get(PROTECTED)

    assert response.status_code == 200
    assert len(sage_oauth.issued) == 1  # the one live token is the only one Sage accepts
    assert sage_oauth.calls() == [200]


async def test_a_401_forces_one_refresh_and_one_retry(
    sage_api: httpx.AsyncClient, sage_oauth: OAuthProvider
) -> None:
    refused = sage_oauth.latest[0]
    sage_oauth.invalidate(refused)  # revoked early: the clock still calls it fresh

    response = await sage_api.get(PROTECTED)

    assert response.status_code == 200
    assert sage_oauth.refresh_requests == 1
    assert sage_oauth.calls() == [401, 200]  # the refused token, then the refreshed one


async def test_a_second_401_is_answered_not_retried_again(
    sage_api: httpx.AsyncClient, sage_oauth: OAuthProvider
) -> None:
    # Sage refuses every call, e.g. "No active subscription".
    sage_oauth.sandbox.faults.refuse_next("GET", PROTECTED, status=401, count=100)

    response = await sage_api.get(PROTECTED)

    assert response.status_code == 401
    assert sage_oauth.refresh_requests == 1
    assert len(sage_oauth.calls()) == 2


async def test_a_401_after_another_process_refreshed_uses_its_token_without_refreshing(
    connections: Connections, sage_api: httpx.AsyncClient, sage_oauth: OAuthProvider
) -> None:
    first = await connections.tokens(SAGE_KEY).access_token()  # this process caches it
    elsewhere = await another_process(connections).tokens(SAGE_KEY).force_refresh(stale=first)
    sage_oauth.invalidate(first)

    response = await sage_api.get(PROTECTED)

    assert response.status_code == 200
    # The stale token refused, then the other process's, the newest Sage issued.
    assert (sage_oauth.calls(), sage_oauth.latest[0]) == ([401, 200], elsewhere)
    assert sage_oauth.refresh_requests == 1  # the other process's, not ours


async def test_bearer_refuses_a_sync_client(connections: Connections) -> None:
    auth = OAuthBearer(connections.tokens(SAGE_KEY))
    with pytest.raises(RuntimeError, match="AsyncClient"):
        next(auth.sync_auth_flow(httpx.Request("GET", "https://example.test")))
