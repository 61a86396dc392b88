"""POST /webhooks/kommo/{secret}: parse, authenticate, store, enqueue, answer — nothing more.

The hottest route, served straight from ASGI by `KommoWebhookLane`: it reads the body and
answers without Starlette's routing, exception middleware or Request/Response objects, which
were a third of a webhook's time in the API at its maximum rate (bench/, docs/PERFORMANCE.md).
Its rows go to the database with concurrent webhooks' in one transaction (`GroupCommit`). The
FastAPI route below documents it in /openapi.json and serves it the same way (one `accept`)
in an app built without the lane."""

from __future__ import annotations

import hmac
import json
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from app.clients.kommo.webhook import KommoWebhook, WebhookFormatError, parse_webhook
from app.errors import AppError, BadRequest, Forbidden, PayloadTooLarge, Unauthorized
from app.inbox.group_commit import GroupCommit
from app.inbox.intake import KommoBatch, kommo_events
from app.metrics import WEBHOOKS
from app.routes.deps import read_limited_body
from app.settings import Settings

router = APIRouter(tags=["webhooks"])
log = structlog.get_logger(__name__)
ACCEPTED = WEBHOOKS.labels("kommo", "accepted")

FORM = "application/x-www-form-urlencoded"
PREFIX = "/webhooks/kommo/"


class WebhookAck(BaseModel):
    received: int  # entries in the body
    queued: int  # moves into the trigger stage, and invoiced deals lost or deleted: now work
    skipped: int  # other lead entries, stored with the reason
    ignored: int  # entries of entities the bridge never acts on: counted, not stored


@router.post("/webhooks/kommo/{secret}", response_model=WebhookAck)
async def kommo_webhook(secret: str, request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    body = await read_limited_body(request, settings.max_webhook_body_bytes)
    ack = await accept(request.app.state, secret, body, request.headers.get("content-type", ""))
    return JSONResponse(ack)


async def accept(state: State, secret: str, body: bytes, content_type: str) -> dict[str, int]:
    """The webhook's events stored and their jobs enqueued; the acknowledgement's counts."""
    settings: Settings = state.settings
    intake: GroupCommit = state.intake
    _check_secret(secret, settings)
    hook = _parse(body, content_type)
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
    return ack


class KommoWebhookLane:
    """ASGI middleware that answers `POST /webhooks/kommo/{secret}` itself and hands every other
    request on. Its answers are the route's: the same JSON, the same `{"error", "detail"}` for an
    AppError (counted in sagebridge_webhooks_total as the app's handler does), and anything else
    raised goes up to Starlette's ServerErrorMiddleware, a 500 like any route's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        secret = _lane_secret(scope)
        if secret is None:
            await self.app(scope, receive, send)
            return
        state: State = scope["app"].state
        try:
            body = await _read_body(scope, receive, state.settings.max_webhook_body_bytes)
            if body is None:
                return  # the sender hung up before its body arrived: nothing stored, no answer
            ack = await accept(state, secret, body, _header(scope, b"content-type"))
        except AppError as exc:
            WEBHOOKS.labels("kommo", exc.error).inc()
            await _send_json(send, exc.status_code, {"error": exc.error, "detail": exc.detail})
            return
        await _send_json(send, 200, ack)


def _lane_secret(scope: Scope) -> str | None:
    """The secret of a POST to the webhook path, or None for any other request."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path = route_path(scope)
    if not path.startswith(PREFIX):
        return None
    secret = path[len(PREFIX) :]
    return secret if secret and "/" not in secret else None  # as the route's {secret} matches


def route_path(scope: Scope) -> str:
    """The path as the routes see it: without the root path a proxy mounts the bridge under
    (uvicorn --root-path /bridge puts the prefix in the ASGI path too)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole body, refused with 413 once it is over `limit` (declared or as it arrives)."""
    declared = _header(scope, b"content-length")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request bodies are limited to {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request bodies are limited to {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return ""


async def _send_json(send: Send, status: int, content: dict[str, Any]) -> None:
    """As JSONResponse renders it."""
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
