"""GET /ops/sync-log: per deal, what happened and why, with the upstream requests behind it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from app.inbox.repository import InboxRepository
from app.repositories import SyncLogFilter, SyncLogRepository
from app.routes.deps import OpsAuth, SessionDep

router = APIRouter(prefix="/ops", tags=["ops"], dependencies=[OpsAuth])


class SyncEntry(BaseModel):
    at: datetime
    event_id: int
    deal_id: str
    record: str
    action: str
    detail: dict[str, Any]
    trigger: str | None
    trigger_received_at: datetime | None


class SyncLogPage(BaseModel):
    since: datetime | None
    until: datetime | None
    events_by_state: dict[str, int]
    records_by_action: dict[str, dict[str, int]]
    total: int
    limit: int
    offset: int
    items: list[SyncEntry]


@router.get("/sync-log", response_model=SyncLogPage)
async def sync_log(
    session: SessionDep,
    deal_id: str | None = None,
    record: Annotated[
        str | None, Query(description="deal, contact, invoice, line, request…")
    ] = None,
    action: Annotated[str | None, Query(description="created, updated, skipped, failed…")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> SyncLogPage:
    """Newest first. Counts cover the whole window (and deal), not just this page."""
    filters = SyncLogFilter(deal_id, record, action, since, until)
    logs = SyncLogRepository(session)
    rows, total = await logs.list(filters=filters, limit=limit, offset=offset)
    events = await InboxRepository(session).get_many({r.event_id for r in rows})
    items = [
        SyncEntry(
            at=r.at,
            event_id=r.event_id,
            deal_id=r.deal_id,
            record=r.record,
            action=r.action,
            detail=r.detail,
            trigger=events[r.event_id].action if r.event_id in events else None,
            trigger_received_at=events[r.event_id].received_at if r.event_id in events else None,
        )
        for r in rows
    ]
    return SyncLogPage(
        since=since,
        until=until,
        events_by_state=await InboxRepository(session).count_by_state(
            since=since, until=until, deal_id=deal_id
        ),
        records_by_action=await logs.count_by_action(
            SyncLogFilter(deal_id, None, None, since, until)
        ),
        total=total,
        limit=limit,
        offset=offset,
        items=items,
    )
