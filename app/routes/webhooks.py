"""POST /webhooks/kommo/{secret}: parse, authenticate, store, enqueue, answer — nothing more.

The hottest route: it reads the app's state directly instead of through dependencies (FastAPI
solves those per request) and answers a prebuilt JSONResponse (no response-model validation);
its rows go to the database with concurrent webhooks' in one transaction (`GroupCommit`)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel

from app.clients.kommo.webhook import KommoWebhook, WebhookFormatError, parse_webhook
from app.errors import BadRequest, Forbidden, Unauthorized
from app.inbox.group_commit import GroupCommit
from app.inbox.intake import KommoBatch, kommo_events
from app.metrics import WEBHOOKS
from app.routes.deps import read_limited_body
from app.settings import Settings


class _DirectRoute(APIRoute):
    """Documented like any route (its signature and response model), but served by calling the
    endpoint with the path's secret and the request: no per-request dependency solving or
    response validation, which were a tenth of a webhook's time (bench/)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(request.path_params["secret"], request)
            return response

        return handle


router = APIRouter(tags=["webhooks"], route_class=_DirectRoute)
log = structlog.get_logger(__name__)
ACCEPTED = WEBHOOKS.labels("kommo", "accepted")

FORM = "application/x-www-form-urlencoded"


class WebhookAck(BaseModel):
    received: int  # entries in the body
    queued: int  # moves into the trigger stage, and invoiced deals lost or deleted: now work
    skipped: int  # other lead entries, stored with the reason
    ignored: int  # entries of entities the bridge never acts on: counted, not stored


@router.post("/webhooks/kommo/{secret}", response_model=WebhookAck)
async def kommo_webhook(secret: str, request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    intake: GroupCommit = request.app.state.intake
    _check_secret(secret, settings)
    hook = _parse(
        await read_limited_body(request, settings.max_webhook_body_bytes),
        request.headers.get("content-type", ""),
    )
    account_id = _check_account(hook, settings)
    batch = KommoBatch(
        kommo_events(
            hook,
            account_id=account_id,
            trigger_pipeline_id=str(settings.kommo_trigger_pipeline_id or 0),
            trigger_status_id=str(settings.kommo_trigger_status_id or 0),
        )
    )
    due = await intake.accept(batch.work, retry_hint="Kommo will retry")
    ack = {
        "received": len(hook.entries),
        "queued": len(due),
        "skipped": sum(1 for e in batch.events if e.state != "pending"),
        "ignored": len(hook.entries) - len(batch.events),
    }
    ACCEPTED.inc()
    # Debug: at INFO a line per webhook cost 6 % of the API's time; /metrics counts them.
    log.debug("webhook.accepted", **ack)
    return JSONResponse(ack)


def _check_secret(secret: str, settings: Settings) -> None:
    expected = settings.secret("kommo_webhook_secret").encode()
    if not hmac.compare_digest(secret.encode(), expected):
        raise Unauthorized("unknown webhook URL: check the secret in the hook's address")


def _parse(body: bytes, content_type: str) -> KommoWebhook:
    if content_type.split(";")[0].strip().lower() != FORM:
        raise BadRequest(f"expected Content-Type {FORM}, got {content_type or 'none'}")
    try:
        return parse_webhook(body)
    except WebhookFormatError as exc:
        raise BadRequest(f"malformed Kommo webhook: {exc}") from exc


def _check_account(hook: KommoWebhook, settings: Settings) -> str:
    """The hook must come from the account this bridge is installed for: its account[id] always,
    and its subdomain too when both the body and KOMMO_SUBDOMAIN name one."""
    expected_id = str(settings.kommo_account_id)
    if hook.account.id is None:
        raise BadRequest("malformed Kommo webhook: the body has no account[id]")
    if hook.account.id != expected_id:
        raise Forbidden(f"webhook is for Kommo account {hook.account.id[:32]}, not {expected_id}")
    expected_sub = settings.kommo_subdomain
    if expected_sub and hook.account.subdomain and hook.account.subdomain != expected_sub:
        raise Forbidden(
            f"webhook is for Kommo subdomain {hook.account.subdomain[:64]!r}, not {expected_sub!r}"
        )
    return expected_id
