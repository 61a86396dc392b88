"""Fixtures the inbox's migration tests share."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability.infra import drop_database, ensure_database
from tests.reliability.conftest import fast_database_url


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind for a test that migrates it itself: a SQLite file, and a
    PostgreSQL database of its own on the tests' server (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    server = fast_database_url()
    if server is None:
        pytest.skip("needs PostgreSQL on 127.0.0.1 (TEST_DATABASE_URL), as CI has")
    name = f"/sagebridge_migrate_{uuid.uuid4().hex[:8]}_"
    url = server.replace("/sagebridge_reliability_", name)
    asyncio.run(ensure_database(url))
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))
