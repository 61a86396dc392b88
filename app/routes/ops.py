"""Ops endpoints: the retry queue, one event, and replaying it. Bearer OPS_API_TOKEN required."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from app.errors import BadRequest, NotFound
from app.models import EventState, InboxEvent, utcnow
from app.queue import enqueue_event, webhook_state
from app.repositories import InboxRepository
from app.routes.deps import OpsAuth, QueueDep, SessionDep, SettingsDep

router = APIRouter(prefix="/ops", tags=["ops"], dependencies=[OpsAuth])

ATTENTION = [EventState.PENDING, EventState.RETRYING, EventState.FAILED, EventState.NEEDS_MAPPING]


class EventView(BaseModel):
    id: int
    deal_id: str
    deal_url: str | None
    action: str
    state: str
    attempt: int
    max_attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    task_state: str | None
    task_id: str | None
    received_at: datetime
    updated_at: datetime


class EventPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[EventView]


@router.get("/retries", response_model=EventPage)
async def retry_queue(
    session: SessionDep,
    settings: SettingsDep,
    state: Annotated[list[EventState] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> EventPage:
    """Events waiting for a retry, and those that ended failed or need a mapping."""
    states = [s.value for s in (state or ATTENTION)]
    rows, total = await InboxRepository(session).list(states=states, limit=limit, offset=offset)
    items = [
        _view(row, settings.kommo_base_url, len(settings.retry_delays_seconds)) for row in rows
    ]
    return EventPage(total=total, limit=limit, offset=offset, items=items)


class StatusView(BaseModel):
    events_by_state: dict[str, int]
    kommo_webhook: dict[str, Any] | None
    sandbox: bool


@router.get("/status", response_model=StatusView)
async def status(session: SessionDep, queue: QueueDep, settings: SettingsDep) -> StatusView:
    """Counts per state, and whether Kommo still has our webhook enabled (last check)."""
    return StatusView(
        events_by_state=await InboxRepository(session).count_by_state(),
        kommo_webhook=await webhook_state(queue),
        sandbox=settings.sandbox_mode,
    )


@router.get("/events/{event_id}", response_model=EventView)
async def get_event(event_id: int, session: SessionDep, settings: SettingsDep) -> EventView:
    event = await _event(session, event_id)
    return _view(event, settings.kommo_base_url, len(settings.retry_delays_seconds))


@router.post("/events/{event_id}/replay", response_model=EventView)
async def replay_event(
    event_id: int, session: SessionDep, settings: SettingsDep, queue: QueueDep
) -> EventView:
    """Run the event again from the start; a deal already invoiced is not invoiced twice."""
    event = await _event(session, event_id)
    if event.state == EventState.SKIPPED and not event.action == "leads.status":
        raise BadRequest(f"event {event_id} is a {event.action} event; there is nothing to replay")
    event.state = EventState.PENDING.value
    event.attempts = 0
    event.next_attempt_at = utcnow()
    event.lease_until = None
    event.task_state = None
    event.task_text = None
    await session.commit()
    await enqueue_event(queue, event.id, 0)
    return _view(event, settings.kommo_base_url, len(settings.retry_delays_seconds))


async def _event(session: SessionDep, event_id: int) -> InboxEvent:
    event = await InboxRepository(session).get(event_id)
    if event is None:
        raise NotFound(f"no event {event_id}")
    return event


def _view(event: InboxEvent, kommo_base_url: str | None, retries: int) -> EventView:
    deal_url = (
        f"{kommo_base_url.rstrip('/')}/leads/detail/{event.deal_id}" if kommo_base_url else None
    )
    return EventView(
        id=event.id,
        deal_id=event.deal_id,
        deal_url=deal_url if event.action.startswith("leads.") else None,
        action=event.action,
        state=event.state,
        attempt=event.attempts,
        max_attempts=retries + 1,
        next_attempt_at=event.next_attempt_at,
        last_error=event.last_error,
        task_state=event.task_state,
        task_id=event.task_id,
        received_at=event.received_at,
        updated_at=event.updated_at,
    )
