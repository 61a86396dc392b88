"""POST /webhooks/sage: verify, store in the inbox, enqueue, answer."""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel

from app.clients.sage.callbacks import CallbackError, parse_callback, verify_signature
from app.errors import BadRequest, Unauthorized
from app.inbox.intake import accept, sage_status_events
from app.metrics import WEBHOOKS
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
    events = sage_status_events(webhook_id, status, business_id=settings.sage_business_id or "")
    due = await accept(session, queue, events, retry_hint="please retry")
    WEBHOOKS.labels("sage", "accepted").inc()
    log.info("sage_callback.accepted", webhook_id=webhook_id, invoice_id=status.invoice_id)
    return CallbackAck(accepted=True, queued=bool(due))
