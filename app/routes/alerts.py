"""GET /ops/alerts: every alert raised, newest first, with how its delivery went."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from app.alerts.causes import Kind
from app.alerts.models import AlertState
from app.alerts.repository import AlertRepository
from app.routes.deps import OpsAuth, SessionDep

router = APIRouter(prefix="/ops", tags=["ops"], dependencies=[OpsAuth])


class AlertView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    cause: str
    kind: str
    title: str
    text: str
    digest: bool
    count: int
    items: list[dict[str, Any]]
    channels: list[str]
    delivered: list[str]
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


class AlertPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AlertView]


@router.get("/alerts", response_model=AlertPage)
async def list_alerts(
    session: SessionDep,
    state: Annotated[list[AlertState] | None, Query()] = None,
    kind: Kind | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> AlertPage:
    """Pending, sent, failed (every retry used) and recorded (no channel configured)."""
    rows, total = await AlertRepository(session).list(
        states=[s.value for s in state] if state else None,
        kind=kind.value if kind else None,
        limit=limit,
        offset=offset,
    )
    items = [AlertView.model_validate(row) for row in rows]
    return AlertPage(total=total, limit=limit, offset=offset, items=items)
