"""Account-level configuration: ``/account``, pipelines and stages, lead custom fields."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from sandbox.kommo import render
from sandbox.kommo.deps import SandboxDep, SiteDep, UserDep
from sandbox.kommo.errors import HalResponse, no_content
from sandbox.kommo.query import paged

router = APIRouter(prefix="/api/v4", tags=["kommo account"])


@router.get("/account", response_model=None)
def get_account(sandbox: SandboxDep, _user: UserDep, site: SiteDep) -> Response:
    with sandbox.state.lock:
        return HalResponse(render.account(sandbox.state, site=site))


@router.get("/leads/pipelines", response_model=None)
def list_pipelines(sandbox: SandboxDep, _user: UserDep, site: SiteDep) -> Response:
    state = sandbox.state
    with state.lock:
        items = [render.pipeline(state, p, site=site) for p in state.pipelines.values()]
    return HalResponse(
        {
            "_total_items": len(items),
            "_links": render.links(site, "/leads/pipelines"),
            "_embedded": {"pipelines": items},
        }
    )


@router.get("/leads/pipelines/{pipeline_id:int}", response_model=None)
def get_pipeline(pipeline_id: int, sandbox: SandboxDep, _user: UserDep, site: SiteDep) -> Response:
    state = sandbox.state
    with state.lock:
        pipeline = state.pipelines.get(pipeline_id)
        if pipeline is None:
            return no_content()
        return HalResponse(render.pipeline(state, pipeline, site=site))


@router.get("/leads/pipelines/{pipeline_id:int}/statuses", response_model=None)
def list_statuses(pipeline_id: int, sandbox: SandboxDep, _user: UserDep, site: SiteDep) -> Response:
    state = sandbox.state
    with state.lock:
        pipeline = state.pipelines.get(pipeline_id)
        if pipeline is None:
            return no_content()
        items = [render.status(state, s, site=site) for s in pipeline.statuses]
    return HalResponse(
        {
            "_total_items": len(items),
            "_links": render.links(site, f"/leads/pipelines/{pipeline_id}/statuses"),
            "_embedded": {"statuses": items},
        }
    )


@router.get("/leads/custom_fields", response_model=None)
def lead_fields(request: Request, sandbox: SandboxDep, _user: UserDep, site: SiteDep) -> Response:
    state = sandbox.state
    with state.lock:
        items = [render.custom_field(state, f, site=site) for f in state.lead_fields.values()]
    path = "/api/v4/leads/custom_fields"
    return paged(items, request.query_params, site=site, path=path, key="custom_fields")
