"""Ops endpoints: the retry queue, one event, replay/discard, the mapping in force, status.

All need `Authorization: Bearer <OPS_API_TOKEN>`. Every replay and discard is recorded on the
event (`payload.ops`: what, when, why).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field

from app.errors import BadGateway, MappingRefused, UpstreamError
from app.inbox import ops as operations
from app.inbox.models import NEEDS_ATTENTION, EventState, InboxEvent
from app.inbox.repository import InboxRepository
from app.mapping import MappingError
from app.mapping_store import CurrentMapping, How
from app.models import MappingRefusal, utcnow
from app.payment_status import poll_statuses
from app.routes.deps import MappingsDep, OpsAuth, QueueDep, SessionDep, SettingsDep

BIGINT_MAX = 2**63 - 1  # ids are 64-bit in the database: larger ones are a 400, not a 500
EventId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]

router = APIRouter(prefix="/ops", tags=["ops"], dependencies=[OpsAuth])


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
    ops: list[dict[str, Any]] = Field(default_factory=list)


class EventPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[EventView]


class DiscardRequest(BaseModel):
    reason: str = Field(min_length=3, max_length=500)


class ReplayedMapping(BaseModel):
    replayed: list[int]
    still_unmapped: list[int]


class RefusalView(BaseModel):
    sha256: str
    source: str
    problems: list[str]
    refused_at: datetime
    refused_by: str


class MappingView(BaseModel):
    """The version in force (every process uses it) and the last refused edit, if any since."""

    id: int
    sha256: str
    source: str
    loaded_at: datetime
    loaded_by: str
    rules: list[dict[str, Any]]
    defaults: dict[str, Any]
    last_refusal: RefusalView | None


class StatusView(BaseModel):
    events_by_state: dict[str, int]
    kommo_webhook: dict[str, Any] | None
    sandbox: bool


@router.get("/retries", response_model=EventPage)
async def retry_queue(
    session: SessionDep,
    settings: SettingsDep,
    state: Annotated[list[EventState] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0,
) -> EventPage:
    """Events waiting for a retry, and those that ended failed or need a mapping."""
    states = [s.value for s in (state or NEEDS_ATTENTION)]
    rows, total = await InboxRepository(session).list(states=states, limit=limit, offset=offset)
    items = [
        event_view(row, settings.kommo_base_url, len(settings.retry_delays_seconds)) for row in rows
    ]
    return EventPage(total=total, limit=limit, offset=offset, items=items)


@router.get("/status", response_model=StatusView)
async def status(session: SessionDep, queue: QueueDep, settings: SettingsDep) -> StatusView:
    """Counts per state, and whether Kommo still has our webhook enabled (last check)."""
    return StatusView(
        events_by_state=await InboxRepository(session).count_by_state(),
        kommo_webhook=await queue.webhook_state(),
        sandbox=settings.sandbox_mode,
    )


class PollView(BaseModel):
    written: int


@router.post("/status/poll", response_model=PollView)
async def poll_now(request: Request, session: SessionDep, settings: SettingsDep) -> PollView:
    """Payment statuses from the accounting system now, not at the next scheduled poll (e.g.
    after an outage, or to see a payment on the deal at once). Runs in this API process; a
    poll overlapping the worker's only writes the same values twice."""
    upstreams = request.app.state.upstreams
    try:
        written = await poll_statuses(session, upstreams.crm, upstreams.accounting, now=utcnow())
    except UpstreamError as exc:
        # The watermark moves only after a whole poll: the next one reads the same changes.
        raise BadGateway(
            f"no statuses read: {exc.upstream} failed ({exc.detail}). Nothing on the deals "
            f"changed; the worker polls again within {settings.status_poll_minutes} minute(s), "
            "or call this again once it answers."
        ) from exc
    return PollView(written=written)


@router.get("/events/{event_id}", response_model=EventView)
async def get_event(event_id: EventId, session: SessionDep, settings: SettingsDep) -> EventView:
    event = await operations.get_event(session, event_id)
    return event_view(event, settings.kommo_base_url, len(settings.retry_delays_seconds))


@router.post("/events/{event_id}/replay", response_model=EventView)
async def replay_event(
    event_id: EventId, session: SessionDep, settings: SettingsDep, queue: QueueDep
) -> EventView:
    """Run the event again from the start; a deal already invoiced is not invoiced twice."""
    event = await operations.replay(session, queue, event_id)
    return event_view(event, settings.kommo_base_url, len(settings.retry_delays_seconds))


@router.post("/events/{event_id}/discard", response_model=EventView)
async def discard_event(
    event_id: EventId, body: DiscardRequest, session: SessionDep, settings: SettingsDep
) -> EventView:
    """End an event by hand (e.g. the deal was invoiced outside the bridge)."""
    event = await operations.discard(session, event_id, body.reason)
    return event_view(event, settings.kommo_base_url, len(settings.retry_delays_seconds))


@router.post("/events/replay-needs-mapping", response_model=ReplayedMapping)
async def replay_needs_mapping(
    session: SessionDep, mappings: MappingsDep, queue: QueueDep
) -> ReplayedMapping:
    """Replay every event parked for a missing mapping that the mapping in force now covers."""
    in_force = await mappings.current()
    replayed, still = await operations.replay_covered(session, queue, in_force.mapping)
    return ReplayedMapping(replayed=replayed, still_unmapped=still)


@router.get("/mappings", response_model=MappingView)
async def current_mapping(mappings: MappingsDep) -> MappingView:
    return mapping_view(await mappings.current(), await mappings.last_refusal())


@router.post("/mappings/reload", response_model=MappingView)
async def reload_mapping(mappings: MappingsDep, request: Request) -> MappingView:
    """Validate this host's file and its ids against Sage; store it as the version in force
    when it differs. On any problem the version in force stays."""
    try:
        current = await mappings.load(How.OPS_RELOAD, request.app.state.upstreams.accounting)
    except MappingError as exc:
        raise MappingRefused(
            "the mapping was refused and the previous one stays in force: "
            + "; ".join(exc.problems)
        ) from exc
    return mapping_view(current, None)


def mapping_view(current: CurrentMapping, refusal: MappingRefusal | None) -> MappingView:
    return MappingView(
        id=current.id,
        sha256=current.sha256,
        source=current.source,
        loaded_at=current.loaded_at,
        loaded_by=current.loaded_by,
        rules=[rule.model_dump(exclude_none=True) for rule in current.mapping.file.rules],
        defaults=current.mapping.file.defaults.model_dump(exclude_none=True),
        last_refusal=RefusalView.model_validate(refusal, from_attributes=True) if refusal else None,
    )


def event_view(event: InboxEvent, kommo_base_url: str | None, retries: int) -> EventView:
    base = (kommo_base_url or "").rstrip("/")
    deal_url = f"{base}/leads/detail/{event.deal_id}" if base and event.deal_id else None
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
        ops=list(event.payload.get("ops", [])),
    )
