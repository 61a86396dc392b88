"""``/api/v4/webhooks``: list, subscribe (an existing destination is updated), unsubscribe."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response

from sandbox.kommo import render
from sandbox.kommo.deps import BodyDep, SandboxDep, UserDep
from sandbox.kommo.errors import FieldError, HalResponse, KommoError, no_content
from sandbox.kommo.models import Webhook
from sandbox.kommo.state import KommoState

router = APIRouter(prefix="/api/v4", tags=["kommo webhooks"])
_URL = re.compile(r"^https?://\S+$")
_ENTITIES = ("lead", "contact", "company", "customer", "task")
EVENTS = frozenset(
    {f"{action}_{entity}" for entity in _ENTITIES for action in ("add", "update", "delete")}
    | {f"restore_{e}" for e in ("lead", "contact", "company")}
    | {f"responsible_{e}" for e in _ENTITIES}
    | {f"note_{e}" for e in ("lead", "contact", "company", "customer")}
    | {"status_lead", "add_talk", "update_talk", "add_message", "add_chat_template_review"}
)


@router.get("/webhooks", response_model=None)
def list_webhooks(request: Request, sandbox: SandboxDep, _user: UserDep) -> Response:
    destination = request.query_params.get("filter[destination]")
    state = sandbox.state
    with state.lock:
        items = [
            render.webhook(state, hook)
            for hook in state.webhooks.values()
            if destination is None or hook.destination == destination
        ]
    if not items:
        return no_content()
    return HalResponse({"_total_items": len(items), "_embedded": {"webhooks": items}})


@router.post("/webhooks", status_code=201, response_model=None)
async def subscribe(body: BodyDep, sandbox: SandboxDep, user: UserDep) -> Response:
    destination, settings, sort = _subscription(body)
    state = sandbox.state
    with state.lock:
        hook = _upsert(state, destination, settings, sort, user)
        return HalResponse(render.webhook(state, hook), status_code=201)


@router.delete("/webhooks", response_model=None)
async def unsubscribe(body: BodyDep, sandbox: SandboxDep, _user: UserDep) -> Response:
    destination = body.get("destination") if isinstance(body, dict) else None
    state = sandbox.state
    with state.lock:
        found = [k for k, hook in state.webhooks.items() if hook.destination == destination]
        if not found:
            raise KommoError.validation({"0": [FieldError("NotFound", "destination", "Not found")]})
        for key in found:
            del state.webhooks[key]
    return no_content()


def _subscription(body: Any) -> tuple[str, list[str], int]:
    data = body if isinstance(body, dict) else {}
    destination, settings = data.get("destination"), data.get("settings")
    errors: list[FieldError] = []
    if not isinstance(destination, str) or not _URL.match(destination):
        errors.append(FieldError("InvalidValue", "destination", "This value is not a valid URL."))
        destination = ""
    if not isinstance(settings, list) or not settings or not set(settings) <= EVENTS:
        errors.append(FieldError("NotSupportedChoice", "settings", "Unknown or missing events."))
        settings = []
    if errors:
        raise KommoError.validation({"0": errors})
    return destination, [str(s) for s in settings], int(data.get("sort", 1))


def _upsert(
    state: KommoState, destination: str, settings: list[str], sort: int, user: int
) -> Webhook:
    now = state.now()
    hook = next((h for h in state.webhooks.values() if h.destination == destination), None)
    if hook is None:
        hook = Webhook(state.next_webhook_id(), destination, settings, sort, user, now, now)
        state.webhooks[hook.id] = hook
        return hook
    # Subscribing again updates the events and switches a disabled hook back on.
    hook.settings, hook.sort, hook.disabled, hook.updated_at = settings, sort, False, now
    return hook
