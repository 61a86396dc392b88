"""Connections against the sandbox Sage and Kommo as OAuth providers (their token endpoints,
consent codes, Sage's /businesses, Kommo's /api/v4/account), with the real database and Redis of
tests/conftest.py. Each `Connections` stands for one process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.connections import flow
from app.connections.config import ConnectionsConfig
from app.connections.crypto import generate_key
from app.connections.models import Connection, Provider
from app.connections.runtime import Connections
from app.connections.store import ConnectionInfo, ConnectionKey
from app.main import create_app
from app.routes import connections as connection_routes
from app.settings import Settings
from sandbox.common.requestlog import RecordedRequest
from sandbox.kommo import KommoConfig, KommoSandbox
from sandbox.sage import SageConfig, SageSandbox
from tests.conftest import OPS_TOKEN
from tests.upstreams import (
    BUSINESS_ID,
    KOMMO_HOST,
    SAGE_HOST,
    SAGE_OAUTH_HOST,
    kommo_sandbox,
    route,
    sage_sandbox,
)

CLIENT_ID = "bridge-client"
CLIENT_SECRET = "bridge-client-secret-9f8e7d"
BUSINESS_NAME = "Test Trading Ltd"
KOMMO_ACCOUNT_ID = 31000001
# Any Sage API call needs the bearer; this one is not part of connecting.
PROTECTED = "/v3.1/financial_settings"
SAGE_KEY = ConnectionKey(Provider.SAGE, BUSINESS_ID)
KOMMO_KEY = ConnectionKey(Provider.KOMMO, str(KOMMO_ACCOUNT_ID))
KEY_A = generate_key()


def make_config(**overrides: Any) -> ConnectionsConfig:
    values: dict[str, Any] = {
        "connection_encryption_keys": KEY_A,
        "public_base_url": "http://bridge.test",
        "sage_oauth_client_id": CLIENT_ID,
        "sage_oauth_client_secret": CLIENT_SECRET,
        "sage_oauth_token_url": "https://oauth.accounting.sage.com/oauth/token",
        "sage_base_url": "https://api.accounting.sage.com/v3.1",
        "kommo_oauth_client_id": CLIENT_ID,
        "kommo_oauth_client_secret": CLIENT_SECRET,
        "token_refresh_lock_seconds": 20.0,
        "http_timeout_seconds": 5.0,
        "api_host": "127.0.0.1",
        "api_port": 8000,
        "sage_business_id": None,
    }
    values.update(overrides)
    return ConnectionsConfig.model_validate(values)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class OAuthProvider:
    """One sandbox as the OAuth provider it simulates: consent, what it issued, what the bridge
    asked of its token endpoint (the request log keeps codes and secrets REDACTED: that the
    sandbox accepted them is what shows they were right)."""

    provider: Provider
    sandbox: SageSandbox | KommoSandbox
    token_path: str

    def issue_code(self, redirect_uri: str) -> str:
        """What the consent screen hands to the redirect URI."""
        return self.sandbox.oauth.issue_code(client_id=CLIENT_ID, redirect_uri=redirect_uri)

    @property
    def issued(self) -> list[tuple[str, str]]:
        return [(t.access_token, t.refresh_token) for t in self.sandbox.oauth.issued()]

    @property
    def latest(self) -> tuple[str, str]:
        return self.issued[-1]

    def revoke(self, refresh_token: str) -> None:
        assert self.sandbox.oauth.revoke_refresh_token(refresh_token)

    def invalidate(self, access_token: str) -> None:
        """Revoked early: the bridge's clock still calls it fresh."""
        assert self.sandbox.oauth.expire_access_token(access_token)

    @property
    def token_requests(self) -> list[RecordedRequest]:
        return self.sandbox.requests.entries(method="POST", path_prefix=self.token_path)

    @property
    def token_bodies(self) -> list[Any]:
        return [entry.body for entry in self.token_requests]

    @property
    def token_hosts(self) -> list[str | None]:
        return [entry.headers.get("host") for entry in self.token_requests]

    @property
    def refresh_requests(self) -> int:
        return len(self._refreshes())

    @property
    def invalid_grants(self) -> int:
        return sum(1 for entry in self._refreshes() if entry.status in (400, 401))

    def _refreshes(self) -> list[RecordedRequest]:
        return [e for e in self.token_requests if e.body.get("grant_type") == "refresh_token"]

    def calls(self, path: str = PROTECTED) -> list[int]:
        """The status of each GET `path`."""
        return [e.status for e in self.sandbox.requests.entries(method="GET") if e.path == path]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def providers(clock: FakeClock) -> AsyncIterator[tuple[OAuthProvider, OAuthProvider]]:
    """The sandbox Sage (API and token hosts) and Kommo (testco.kommo.com), on the test's clock;
    every other outbound request fails the test."""
    clients = {"clients": {CLIENT_ID: CLIENT_SECRET}, "rate_limit": None}
    sage = sage_sandbox(config=SageConfig.model_validate(clients), clock=clock)
    # Access tokens live 5 minutes at both, so one clock step expires either.
    kommo_config = KommoConfig.model_validate({**clients, "access_token_ttl_seconds": 300})
    kommo = kommo_sandbox(config=kommo_config, clock=clock, account_id=KOMMO_ACCOUNT_ID)
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        for host, app in ((SAGE_HOST, sage.app), (SAGE_OAUTH_HOST, sage.app)):
            route(router, host, app)
        route(router, KOMMO_HOST, kommo.app)
        yield (
            OAuthProvider(Provider.SAGE, sage, "/oauth/token"),
            OAuthProvider(Provider.KOMMO, kommo, "/oauth2/access_token"),
        )
    await kommo.webhooks.aclose()


@pytest.fixture
def sage_oauth(providers: tuple[OAuthProvider, OAuthProvider]) -> OAuthProvider:
    return providers[0]


@pytest.fixture
def kommo_oauth(providers: tuple[OAuthProvider, OAuthProvider]) -> OAuthProvider:
    return providers[1]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
async def db(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> async_sessionmaker[AsyncSession]:
    """The test database with no connections (tests/conftest.py truncates only its own tables
    on PostgreSQL)."""
    async with sessionmaker() as session:
        await session.execute(delete(Connection))
        await session.commit()
    return sessionmaker


@pytest.fixture
async def http(
    providers: tuple[OAuthProvider, OAuthProvider],
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def connections(
    db: async_sessionmaker[AsyncSession],
    redis: Redis,
    http: httpx.AsyncClient,
    clock: FakeClock,
) -> Connections:
    return Connections(make_config(), db, redis, http, clock=clock)


def another_process(connections: Connections, **config: Any) -> Connections:
    """Same database, Redis and upstream; its own TokenProviders and in-process locks."""
    return Connections(
        make_config(**config) if config else connections.config,
        connections.sessionmaker,
        connections.redis,
        connections._http,
        clock=connections.clock,
    )


async def connect(connections: Connections, oauth: OAuthProvider) -> ConnectionInfo:
    """Start, open the link in a browser, consent (the provider hands out a code), callback."""
    provider = oauth.provider
    authorization = await flow.start(connections, provider)
    browser = await flow.bind_browser(connections, provider, authorization.state)
    code = oauth.issue_code(connections.config.redirect_uri(provider))
    referer = "testco.kommo.com" if provider is Provider.KOMMO else None
    return await flow.complete(
        connections,
        provider,
        state=authorization.state,
        code=code,
        browser=browser.cookie,
        referer=referer,
    )


@pytest.fixture
async def bridge(
    settings: Settings, queue: object, connections: Connections
) -> AsyncIterator[FastAPI]:
    """The bridge's HTTP app with the connections router, talking to the sandbox providers."""
    app = create_app(settings)
    if not any(getattr(r, "path", "").startswith("/ops/connections") for r in app.routes):
        app.include_router(connection_routes.router)
    async with app.router.lifespan_context(app):
        app.state.connections = connections
        yield app


@pytest.fixture
async def api(bridge: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=bridge)
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test") as client:
        yield client


def ops(token: str = OPS_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
