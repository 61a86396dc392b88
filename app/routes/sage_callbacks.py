"""POST /webhooks/sage: verify, store in the inbox, enqueue, answer."""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from app.clients.sage.callbacks import CallbackError, parse_callback, verify_signature
from app.errors import BadRequest, ServiceUnavailable, Unauthorized
from app.inbox.intake import sage_status_event
from app.inbox.repository import InboxRepository
from app.metrics import WEBHOOKS
from app.queue import enqueue_event
from app.repositories import InvoiceRepository
from app.routes.deps import QueueDep, SessionDep, SettingsDep, read_limited_body

router = APIRouter(tags=["webhooks"])
log = structlog.get_logger(__name__)


class CallbackAck(BaseModel):
    accepted: bool
    queued: bool


@router.post("/webhooks/sage", response_model=CallbackAck)
async def sage_callback(
    request: Request, settings: SettingsDep, session: SessionDep, queue: QueueDep
) -> CallbackAck:
    """A replayed `webhook-id` is acknowledged and not applied again."""
    body = await read_limited_body(request, settings.max_webhook_body_bytes)
    secrets = [s.get_secret_value() for s in settings.sage_callback_secrets]
    if not secrets:
        raise Unauthorized("Sage callbacks are disabled: set SAGE_CALLBACK_SECRETS")
    try:
        webhook_id = verify_signature(body, request.headers, secrets)
    except CallbackError as exc:
        raise Unauthorized(f"callback signature refused: {exc}") from exc
    try:
        status = parse_callback(body)
    except CallbackError as exc:
        raise BadRequest(str(exc)) from exc
    try:
        records = await InvoiceRepository(session).by_invoice_ids([status.invoice_id])
        record = records.get(status.invoice_id)
        event = sage_status_event(
            webhook_id,
            status,
            business_id=settings.sage_business_id or "",
            deal_id=record.deal_id if record else None,
        )
        due = await InboxRepository(session).record([event])
        await session.commit()
    except (SQLAlchemyError, OSError) as exc:
        raise ServiceUnavailable("the callback could not be stored; please retry") from exc
    for event_id in due:
        await enqueue_event(queue, event_id, 0)
    WEBHOOKS.labels("sage", "accepted").inc()
    log.info("sage_callback.accepted", webhook_id=webhook_id, invoice_id=status.invoice_id)
    return CallbackAck(accepted=True, queued=bool(due))
