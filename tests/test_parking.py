"""A dead upstream grant parks events (no retries burnt, no task) until ops reconnect."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.connections.errors import ReauthorizationRequired
from app.domain import Deal
from app.inbox.runner import process_event, resume_waiting
from app.settings import Settings
from tests.fakes import FakeKommo, FakeSage
from tests.helpers import (
    Scheduled,
    fake_upstreams,
    load_event,
    record_trigger,
)

Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
def fakes() -> Iterator[tuple[FakeKommo, FakeSage]]:
    with fake_upstreams() as (kommo, sage):
        kommo.add_lead(1, products=[(102, 1)])
        yield kommo, sage


async def test_a_dead_grant_parks_the_event_and_reconnecting_resumes_it(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Scheduled], fakes: Any
) -> None:
    kommo, sage = fakes
    built, scheduled = bridge
    event_id = await record_trigger(sessionmaker, settings, 1)
    real_get_deal = built.crm.get_deal

    async def revoked(*, deal_id: str) -> Deal:
        raise ReauthorizationRequired("sage", "b" * 32, "invalid_grant from the token endpoint")

    built.crm.get_deal = revoked  # type: ignore[method-assign]
    async with sessionmaker() as session:
        assert await process_event(session, built, event_id) == "waiting_connection"
    event = await load_event(sessionmaker, event_id)
    assert (event.attempts, event.task_state, scheduled.calls, kommo.tasks) == (0, None, [], [])
    assert "POST /ops/connections/sage/start" in (event.last_error or "")

    active: dict[tuple[str, str], bool] = {("sage", "b" * 32): False}

    async def is_active(provider: str, account: str) -> bool:
        return active[(provider, account)]

    async with sessionmaker() as session:
        assert await resume_waiting(session, is_active) == []
    active[("sage", "b" * 32)] = True
    async with sessionmaker() as session:
        assert await resume_waiting(session, is_active) == [event_id]

    built.crm.get_deal = real_get_deal  # type: ignore[method-assign]
    async with sessionmaker() as session:
        assert await process_event(session, built, event_id) == "invoiced"
    assert len(sage.invoices) == 1
