"""Connections against the in-test OAuth server (tests/connections/fakes.py), with the real
database and Redis of tests/conftest.py. Each `Connections` stands for one process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
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
from tests.conftest import OPS_TOKEN
from tests.connections.fakes import (
    BUSINESS_ID,
    CLIENT_ID,
    CLIENT_SECRET,
    KOMMO_ACCOUNT_ID,
    FakeClock,
    FakeOAuthServer,
)

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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def upstream(clock: FakeClock) -> FakeOAuthServer:
    return FakeOAuthServer(clock)


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
async def http(upstream: FakeOAuthServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=upstream.transport()) as client:
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


async def connect(
    connections: Connections, upstream: FakeOAuthServer, provider: Provider = Provider.SAGE
) -> ConnectionInfo:
    """Start, open the link in a browser, consent (the fake hands out a code), callback."""
    authorization = await flow.start(connections, provider)
    browser = await flow.bind_browser(connections, provider, authorization.state)
    code = upstream.issue_code(connections.config.redirect_uri(provider))
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
    """The bridge's HTTP app with the connections router, talking to the in-test upstream."""
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
