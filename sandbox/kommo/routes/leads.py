"""``/api/v4/leads``: list with filters, read one with ``with=``, PATCH one or a batch."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.datastructures import QueryParams

from sandbox.kommo import render
from sandbox.kommo.deps import BodyDep, SandboxDep, SiteDep, UserDep
from sandbox.kommo.errors import HalResponse, KommoError, no_content
from sandbox.kommo.models import Lead
from sandbox.kommo.patching import LeadPatch
from sandbox.kommo.query import int_values, optional_int, paged, status_pairs, with_values

router = APIRouter(prefix="/api/v4", tags=["kommo leads"])
ORDERABLE = ("created_at", "updated_at", "id")
ONLY_DELETED = "only_deleted"


class LeadFilter:
    def __init__(self, params: QueryParams) -> None:
        self.stages = status_pairs(params)
        self.ids = set(int_values(params, "filter[id]"))
        self.pipelines = set(int_values(params, "filter[pipeline_id]"))
        self.updated_from = optional_int(params, "filter[updated_at][from]")
        self.updated_to = optional_int(params, "filter[updated_at][to]")
        self.query = (params.get("query") or "").lower()

    def matches(self, lead: Lead) -> bool:
        return (
            self._in_stage(lead)
            and (not self.ids or lead.id in self.ids)
            and (not self.pipelines or lead.pipeline_id in self.pipelines)
            and (self.updated_from is None or lead.updated_at >= self.updated_from)
            and (self.updated_to is None or lead.updated_at <= self.updated_to)
            and (not self.query or self.query in lead.name.lower())
        )

    def _in_stage(self, lead: Lead) -> bool:
        return not self.stages or any(
            (pipeline is None or lead.pipeline_id == pipeline)
            and (status is None or lead.status_id == status)
            for pipeline, status in self.stages
        )


@router.get("/leads", response_model=None)
def list_leads(request: Request, sandbox: SandboxDep, _user: UserDep, site: SiteDep) -> Response:
    """``with=only_deleted`` lists the leads deleted and still in the trash instead (Kommo's
    leads page, the list's `with` values; PHP SDK ``CanReturnDeletedInterface::ONLY_DELETED``)."""
    params = request.query_params
    wanted, state, with_ = LeadFilter(params), sandbox.state, with_values(params)
    deleted = ONLY_DELETED in with_
    with state.lock:
        pool = state.deleted_leads if deleted else state.leads
        leads = _ordered([lead for lead in pool.values() if wanted.matches(lead)], params)
        items = [
            render.lead(state, lead, site=site, with_=with_, deleted=deleted) for lead in leads
        ]
    return paged(items, params, site=site, path="/api/v4/leads", key="leads")


def _ordered(leads: list[Lead], params: QueryParams) -> list[Lead]:
    for attribute in ORDERABLE:
        direction = params.get(f"order[{attribute}]")
        if direction:
            if direction not in ("asc", "desc"):
                raise KommoError(400, f"order[{attribute}] must be asc or desc")
            return sorted(
                leads, key=lambda lead: getattr(lead, attribute), reverse=direction == "desc"
            )
    return leads


@router.get("/leads/{lead_id:int}", response_model=None)
def get_lead(
    lead_id: int, request: Request, sandbox: SandboxDep, _user: UserDep, site: SiteDep
) -> Response:
    state = sandbox.state
    with state.lock:
        lead = state.leads.get(lead_id)
        if lead is None:
            return no_content()
        with_ = with_values(request.query_params)
        return HalResponse(render.lead(state, lead, site=site, with_=with_))


@router.patch("/leads", response_model=None)
async def patch_leads(body: BodyDep, sandbox: SandboxDep, user: UserDep, site: SiteDep) -> Response:
    patches = sandbox.patch_leads(body, user_id=user, site=site)
    items = [_patched(patch, site) for patch in patches]
    return HalResponse({"_links": render.links(site, "/leads"), "_embedded": {"leads": items}})


@router.patch("/leads/{lead_id:int}", response_model=None)
async def patch_lead(
    lead_id: int, body: BodyDep, sandbox: SandboxDep, user: UserDep, site: SiteDep
) -> Response:
    if not isinstance(body, dict):
        raise KommoError(400, "Expected a JSON object")
    patch = sandbox.patch_leads([body], user_id=user, site=site, path_id=lead_id)[0]
    item = _patched(patch, site)
    del item["request_id"]
    return HalResponse(item)


def _patched(patch: LeadPatch, site: str) -> dict[str, Any]:
    return {
        "id": patch.lead.id,
        "updated_at": patch.lead.updated_at,
        "request_id": patch.request_id,
        "_links": render.links(site, f"/leads/{patch.lead.id}"),
    }
