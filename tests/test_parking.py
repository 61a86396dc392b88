"""A dead upstream grant parks events (no retries burnt, no task) until ops reconnect."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.connections.errors import ReauthorizationRequired
from app.domain import Deal
from app.inbox.runner import process_event, resume_waiting
from app.settings import Settings
from tests.helpers import Scheduled, load_event, record_trigger
from tests.upstreams import Upstreams

Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
def upstreams(upstreams: Upstreams) -> Upstreams:
    upstreams.kommo.add_lead(1, products=[(102, 1)])
    return upstreams


async def test_a_dead_grant_parks_the_event_and_reconnecting_resumes_it(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Scheduled], upstreams: Upstreams
) -> None:
    kommo, sage = upstreams
    built, scheduled = bridge
    event_id = await record_trigger(sessionmaker, settings, 1)

    async def revoked(*, deal_id: str) -> Deal:
        raise ReauthorizationRequired("sage", "b" * 32, "invalid_grant from the token endpoint")

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(built.crm, "get_deal", revoked)
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

    async with sessionmaker() as session:
        assert await process_event(session, built, event_id) == "invoiced"
    assert len(sage.invoices) == 1
