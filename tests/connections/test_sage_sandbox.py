"""The same guarantees against the demo Sage of the sandbox (its /oauth/token and
/v3.1/businesses), reached over plain httpx.ASGITransport, the demo's own OAuth client and
consent route."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.connections import flow
from app.connections.errors import ReauthorizationRequired
from app.connections.models import Provider
from app.connections.runtime import Connections
from app.connections.store import ConnectionKey, ConnectionStore
from sandbox import seed
from sandbox.sage import SageSandbox, build_sage
from tests.connections.conftest import FakeClock, make_config

SANDBOX = "http://sage.test"


@pytest.fixture
def sage(clock: FakeClock) -> SageSandbox:
    return build_sage(seed.demo_sage_config(), seed.demo_sage_state(clock=clock))


@pytest.fixture
async def sandbox_http(sage: SageSandbox) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=sage.app)
    async with httpx.AsyncClient(transport=transport, base_url=SANDBOX) as client:
        yield client


@pytest.fixture
def sandbox_connections(
    db: async_sessionmaker[AsyncSession],
    redis: Redis,
    sandbox_http: httpx.AsyncClient,
    clock: FakeClock,
) -> Connections:
    config = make_config(
        sage_oauth_client_id="sandbox-sage-client",
        sage_oauth_client_secret="sandbox-sage-secret",
        sage_oauth_token_url=f"{SANDBOX}/oauth/token",
        sage_base_url=f"{SANDBOX}/v3.1",
    )
    return Connections(config, db, redis, sandbox_http, clock=clock)


async def _connect(connections: Connections, http: httpx.AsyncClient) -> ConnectionKey:
    authorization = await flow.start(connections, Provider.SAGE)
    browser = await flow.bind_browser(connections, Provider.SAGE, authorization.state)
    redirect_uri = connections.config.redirect_uri(Provider.SAGE)
    consent = await http.post(
        "/sandbox/oauth/codes",
        json={"client_id": "sandbox-sage-client", "redirect_uri": redirect_uri},
    )
    info = await flow.complete(
        connections,
        Provider.SAGE,
        state=authorization.state,
        code=consent.json()["code"],
        browser=browser.cookie,
    )
    assert (info.account, info.name) == (seed.SAGE_BUSINESS_ID, "Sandbox Trading Ltd")
    return ConnectionKey(Provider.SAGE, info.account)


def _token_calls(sage: SageSandbox) -> list[int]:
    entries = sage.requests.entries(method="POST", path_prefix="/oauth/token")
    return [entry.status for entry in entries]


async def test_twenty_processes_refresh_once_against_the_sandbox(
    sandbox_connections: Connections,
    sandbox_http: httpx.AsyncClient,
    sage: SageSandbox,
    clock: FakeClock,
) -> None:
    key = await _connect(sandbox_connections, sandbox_http)
    clock.now += timedelta(seconds=280)
    processes = [
        Connections(
            sandbox_connections.config,
            sandbox_connections.sessionmaker,
            sandbox_connections.redis,
            sandbox_http,
            clock=clock,
        ).tokens(key)
        for _ in range(20)
    ]

    tokens = await asyncio.gather(*(p.access_token() for p in processes))

    assert len(set(tokens)) == 1
    assert _token_calls(sage) == [200, 200]  # the code exchange and one refresh
    async with httpx.AsyncClient(
        transport=sandbox_http._transport,
        base_url=f"{SANDBOX}/v3.1",
        auth=sandbox_connections.bearer(key),
    ) as api:
        assert (await api.get("/businesses")).status_code == 200


async def test_a_revoked_grant_needs_reauth_against_the_sandbox(
    sandbox_connections: Connections, sandbox_http: httpx.AsyncClient, clock: FakeClock
) -> None:
    key = await _connect(sandbox_connections, sandbox_http)
    async with sandbox_connections.sessionmaker() as session:
        snapshot = await ConnectionStore(session, sandbox_connections.cipher()).load(key)
    assert snapshot is not None
    await sandbox_http.post(
        "/sandbox/oauth/revoke", json={"refresh_token": snapshot.tokens.refresh_token}
    )
    clock.now += timedelta(seconds=301)

    with pytest.raises(ReauthorizationRequired, match="invalid_grant"):
        await sandbox_connections.tokens(key).access_token()
