from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from sandbox.kommo import KommoSandbox, build_kommo
from sandbox.sage import SageSandbox, build_sage
from sandbox.seed import (
    KOMMO_TOKEN,
    SAGE_TOKEN,
    demo_kommo_config,
    demo_kommo_state,
    demo_sage_config,
    demo_sage_state,
)
from tests.sandbox.helpers import KOMMO_BASE, SAGE_BASE, FakeClock


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


@pytest.fixture
async def kommo(clock: FakeClock) -> AsyncIterator[KommoSandbox]:
    """The demo Kommo account with its rate limit off (tests that need it switch it on)."""
    sandbox = build_kommo(demo_kommo_config(rate_limit=None), demo_kommo_state(clock=clock))
    yield sandbox
    await sandbox.webhooks.aclose()


@pytest.fixture
async def kommo_client(kommo: KommoSandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=kommo.app),
        base_url=KOMMO_BASE,
        headers={"Authorization": f"Bearer {KOMMO_TOKEN}"},
    ) as client:
        yield client


@pytest.fixture
async def kommo_anonymous(kommo: KommoSandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=kommo.app), base_url=KOMMO_BASE
    ) as client:
        yield client
