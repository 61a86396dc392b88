"""Kommo-specific control routes: a UI-like stage move and deletion, webhook deliveries and
switches, OAuth helpers. Unauthenticated on purpose: they stand in for a person in Kommo's UI."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from sandbox.kommo import render
from sandbox.kommo.deps import SandboxDep
from sandbox.kommo.errors import KommoError

router = APIRouter(prefix="/sandbox", tags=["kommo sandbox control"])


class MoveRequest(BaseModel):
    status_id: int
    pipeline_id: int | None = None


@router.post("/leads/{lead_id}/move")
async def move_lead(
    lead_id: int, body: MoveRequest, request: Request, sandbox: SandboxDep
) -> dict[str, Any]:
    """What dragging the deal to another stage in Kommo's UI does, status webhook included."""
    change = body.model_dump(exclude_none=True)
    with sandbox.state.lock:
        old_status = (
            sandbox.state.leads[lead_id].status_id if lead_id in sandbox.state.leads else None
        )
    site = sandbox.site(request)
    user = sandbox.state.admin_user_id
    patch = sandbox.patch_leads([change], user_id=user, site=site, path_id=lead_id)[0]
    lead = patch.lead
    return {
        "id": lead.id,
        "pipeline_id": lead.pipeline_id,
        "status_id": lead.status_id,
        "old_status_id": old_status,
        "updated_at": lead.updated_at,
    }


@router.post("/leads/{lead_id}/delete")
async def delete_lead(lead_id: int, request: Request, sandbox: SandboxDep) -> dict[str, Any]:
    """What deleting the deal in Kommo's UI does: the lead goes to the trash (a read answers
    204; ``GET /api/v4/leads?with=only_deleted`` lists it) and ``delete_lead`` hooks are sent."""
    if not sandbox.delete_lead(lead_id, site=sandbox.site(request)):
        raise KommoError(404, "No such lead")
    return {"id": lead_id, "deleted": True}


@router.get("/webhook_deliveries")
async def list_deliveries(sandbox: SandboxDep, wait: bool = False) -> dict[str, Any]:
    """``?wait=true`` first waits for deliveries still in flight."""
    if wait:
        await sandbox.webhooks.wait_idle()
    deliveries = sandbox.webhooks.deliveries()
    return {"count": len(deliveries), "deliveries": [d.model_dump(mode="json") for d in deliveries]}


@router.delete("/webhook_deliveries", status_code=204)
async def clear_deliveries(sandbox: SandboxDep) -> Response:
    sandbox.webhooks.clear()
    return Response(status_code=204)


@router.post("/webhooks/{hook_id}/disable")
def disable_webhook(hook_id: int, sandbox: SandboxDep) -> dict[str, Any]:
    return _switch(sandbox, hook_id, disabled=True)


@router.post("/webhooks/{hook_id}/enable")
def enable_webhook(hook_id: int, sandbox: SandboxDep) -> dict[str, Any]:
    return _switch(sandbox, hook_id, disabled=False)


def _switch(sandbox: SandboxDep, hook_id: int, *, disabled: bool) -> dict[str, Any]:
    state = sandbox.state
    with state.lock:
        hook = state.webhooks.get(hook_id)
        if hook is None:
            raise KommoError(404, "No such webhook")
        hook.disabled, hook.updated_at = disabled, state.now()
        return render.webhook(state, hook)
