"""GET /metrics in Prometheus' text format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.connections.metrics import observe_connections
from app.inbox.models import EventState
from app.inbox.repository import InboxRepository
from app.metrics import EVENTS_BY_STATE, KOMMO_WEBHOOK_DISABLED, OLDEST_PENDING, QUEUE_DEPTH
from app.models import utcnow
from app.reconciliation import publish
from app.repositories import ReportRepository
from app.routes.deps import QueueDep, SessionDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(session: SessionDep, queue: QueueDep) -> Response:
    await observe_connections(session)
    inbox = InboxRepository(session)
    counts = await inbox.count_by_state()
    for state in EventState:
        EVENTS_BY_STATE.labels(state.value).set(counts.get(state.value, 0))
    oldest = await inbox.oldest_active()
    OLDEST_PENDING.set((utcnow() - oldest).total_seconds() if oldest else 0)
    QUEUE_DEPTH.set(await queue.depth())
    hook = await queue.webhook_state()
    KOMMO_WEBHOOK_DISABLED.set(1 if hook and hook.get("state") == "disabled" else 0)
    publish(await ReportRepository(session).latest_counts())
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
