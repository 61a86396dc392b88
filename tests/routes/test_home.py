"""GET /: a browser opening the bridge's address lands somewhere useful, never on a 404."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis
from httpx import ASGITransport, AsyncClient

from app.main import create_app
from app.settings import Settings


@pytest.fixture
async def without_ops(settings: Settings, queue: ArqRedis) -> AsyncIterator[AsyncClient]:
    app = create_app(settings.model_copy(update={"ops_api_token": None, "docs_enabled": True}))
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://bridge.test") as http:
            yield http


async def test_with_ops_auth_on_the_root_is_the_console(client: AsyncClient) -> None:
    response = await client.get("/")

    assert (response.status_code, response.headers["location"]) == (303, "/console")


async def test_with_ops_auth_off_the_root_links_what_works(without_ops: AsyncClient) -> None:
    response = await without_ops.get("/")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    links = re.findall(r'<a href="([^"]+)">', response.text)
    assert links == ["/healthz", "/readyz", "/metrics", "/docs"]
    assert "set <code>OPS_API_TOKEN</code>" in response.text
    assert "<code>README.md</code> and <code>docs/</code>" in response.text
    for link in ("/healthz", "/docs"):
        assert (await without_ops.get(link)).status_code == 200
