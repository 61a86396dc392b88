from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.sandbox.sage import SageSandbox, build_sage
from app.sandbox.seed import SAGE_TOKEN, demo_sage_config, demo_sage_state
from tests.sandbox.helpers import FakeClock

SAGE_BASE = "http://sage.test/v3.1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sage(clock: FakeClock) -> SageSandbox:
    return build_sage(demo_sage_config(), demo_sage_state(clock=clock))


@pytest.fixture
async def sage_client(sage: SageSandbox) -> AsyncIterator[httpx.AsyncClient]:
    """Talks to the demo Sage in-process, authenticated with the demo's static token."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sage.app),
        base_url=SAGE_BASE,
        headers={"Authorization": f"Bearer {SAGE_TOKEN}"},
    ) as client:
        yield client


@pytest.fixture
async def sage_anonymous(sage: SageSandbox) -> AsyncIterator[httpx.AsyncClient]:
    """The same app with no credentials, rooted at the host (for /oauth and /sandbox)."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sage.app), base_url="http://sage.test"
    ) as client:
        yield client
