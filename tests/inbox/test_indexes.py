"""The sweeper's partial index must name exactly the rows the sweeper asks for, or PostgreSQL
cannot use it and walks the whole primary key again (`python -m bench --only scale`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.inbox.models import ACTIVE_STATES, WORKABLE, TaskState
from app.inbox.repository import InboxRepository
from app.models import utcnow


def test_the_workable_index_predicate_is_the_sweepers_condition() -> None:
    states = ", ".join(f"'{s.value}'" for s in ACTIVE_STATES)
    assert f"state IN ({states}) OR task_state = '{TaskState.PENDING.value}'" == WORKABLE


async def test_the_sweeper_sends_its_states_as_literals_so_every_plan_can_use_the_index(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    sent: list[str] = []

    def capture(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        sent.append(statement)

    engine = sessionmaker.kw["bind"]
    event.listen(engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with sessionmaker() as session:
            await InboxRepository(session).due(now=utcnow())
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", capture)

    (statement,) = sent
    assert "state IN ('pending', 'retrying') OR inbox_events.task_state = 'pending'" in statement
