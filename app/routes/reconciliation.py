"""GET /ops/reconciliation (the latest report) and POST /ops/reconciliation/run (a run now)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from app.bridge import Bridge
from app.errors import NotFound
from app.models import ReconciliationReport
from app.reconciliation import report_now
from app.repositories import ReportRepository
from app.routes.deps import OpsAuth, QueueDep, SessionDep, SettingsDep
from app.runtime import pipeline_config

router = APIRouter(prefix="/ops", tags=["ops"], dependencies=[OpsAuth])


class ReportView(BaseModel):
    id: int
    started_at: datetime
    finished_at: datetime
    counts: dict[str, int]
    rows: list[dict[str, Any]]
    problems: list[str]


@router.get("/reconciliation", response_model=ReportView)
async def latest_report(session: SessionDep, settings: SettingsDep) -> ReportView:
    """The latest report: each finding with its suggested action (docs/OPERATIONS.md, Reconciliation
    report)."""
    report = await ReportRepository(session).latest()
    if report is None:
        raise NotFound(
            "no reconciliation report yet: a worker runs one every day at "
            f"{settings.reconcile_report_hour:02d}:23 UTC; POST /ops/reconciliation/run or "
            "`sagebridge reconcile report` runs one now"
        )
    return _view(report)


@router.post("/reconciliation/run", response_model=ReportView)
async def run_now(request: Request, settings: SettingsDep, queue: QueueDep) -> ReportView:
    """Run the report now, in this API process (it reads Kommo and Sage: it may take a while)."""
    state = request.app.state
    bridge = Bridge(
        crm=state.upstreams.crm,
        accounting=state.upstreams.accounting,
        mapping=state.mapping.mapping,
        config=pipeline_config(settings),
        schedule=lambda event_id, attempt, at: _enqueue(queue, event_id, attempt, at),
    )
    report = await report_now(state.db.sessionmaker, bridge, days=settings.reconcile_report_days)
    return _view(report)


async def _enqueue(queue: Any, event_id: int, attempt: int, at: datetime | None) -> None:
    await queue.enqueue_event(event_id, attempt, at)


def _view(report: ReconciliationReport) -> ReportView:
    return ReportView.model_validate(report, from_attributes=True)
