"""The console as a browser sees it, over httpx: the login form's token, then the session cookie
the client keeps; and the page's text without its markup, to assert what a person reads."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient, Response

from app.main import create_app
from app.settings import Settings
from tests.conftest import OPS_TOKEN, make_settings

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
TAG = re.compile(r"<[^>]+>")


@pytest.fixture
def settings(database_url: str, redis_url: str, tmp_path: Path, mapping_file: Path) -> Settings:
    """The suite's settings on a copy of the mapping file, which a test may edit."""
    return make_settings(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=tmp_path,
        ledger_mappings_path=mapping_file,
    )


@asynccontextmanager
async def console_client(
    settings: Settings, base_url: str = "http://bridge.test"
) -> AsyncIterator[AsyncClient]:
    """A bridge of its own, for settings other than the suite's."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


def csrf_of(page: Response) -> str:
    found = CSRF.search(page.text)
    assert found, "the page has a form with a CSRF token"
    return found.group(1)


def text_of(page: Response) -> str:
    """What the page says: markup removed, entities decoded, white space collapsed."""
    return " ".join(html.unescape(TAG.sub(" ", page.text)).split())


async def log_in(client: AsyncClient, token: str = OPS_TOKEN, back: str = "/console") -> Response:
    form = await client.get("/console/login", params={"next": back})
    return await client.post(
        "/console/login",
        data={"token": token, "csrf_token": csrf_of(form), "next": back},
    )


async def logged_in(client: AsyncClient) -> str:
    """Log in; the session's CSRF token (every console form carries it)."""
    assert (await log_in(client)).status_code == 303
    return csrf_of(await client.get("/console/queue"))
