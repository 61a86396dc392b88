"""/healthz and /readyz: the body names whatever is not ready."""

from __future__ import annotations

from arq.connections import ArqRedis
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.connections.models import Connection
from app.main import create_app
from app.queue import HEARTBEAT_KEY
from app.settings import Settings
from tests.conftest import make_settings


async def test_healthz(client: AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_ready_when_database_redis_and_a_worker_are_there(
    client: AsyncClient, queue: ArqRedis
) -> None:
    await queue.set(HEARTBEAT_KEY, b"alive", ex=11)

    response = await client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert (body["ready"], body["problems"], body["warnings"]) == (True, {}, {})
    assert len(body["mapping_sha256"]) == 64


async def test_not_ready_without_a_worker_heartbeat(client: AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["problems"] == {
        "worker": "no worker heartbeat in the last 10 s: is a worker running?"
    }


async def test_not_ready_when_the_database_and_redis_are_down(
    settings: Settings, queue: ArqRedis
) -> None:
    down = make_settings(
        database_url="postgresql+asyncpg://bridge@127.0.0.1:1/none",
        redis_url="redis://127.0.0.1:1/0",
    )
    app: FastAPI = create_app(down)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://bridge.test") as client:
            response = await client.get("/readyz")

    assert response.status_code == 503
    problems = response.json()["problems"]
    assert problems["database"].startswith("unreachable:")
    assert problems["redis"].startswith("unreachable:")


async def test_not_ready_when_a_connection_needs_reauthorisation(
    client: AsyncClient, queue: ArqRedis, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await queue.set(HEARTBEAT_KEY, b"alive", ex=11)
    async with sessionmaker() as session:
        session.add(
            Connection(
                provider="sage",
                account="b" * 32,
                kind="oauth",
                state="needs_reauth",
                encrypted_access_token="not-decrypted-here",
                generation=1,
            )
        )
        await session.commit()

    response = await client.get("/readyz")

    assert response.status_code == 503
    hint = "need re-authorisation: POST /ops/connections/<provider>/start"
    assert response.json()["problems"] == {"connections": f"sage:{'b' * 32} {hint}"}
