"""``/api/v4/catalogs``: lists, their custom fields and elements (products)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from sandbox.kommo import render
from sandbox.kommo.deps import SandboxDep, SiteDep, UserDep
from sandbox.kommo.errors import HalResponse, no_content
from sandbox.kommo.query import int_values, paged

router = APIRouter(prefix="/api/v4", tags=["kommo catalogs"])


@router.get("/catalogs", response_model=None)
def list_catalogs(request: Request, sandbox: SandboxDep, _user: UserDep, site: SiteDep) -> Response:
    state = sandbox.state
    with state.lock:
        items = [render.catalog(state, c, site=site) for c in state.catalogs.values()]
    return paged(items, request.query_params, site=site, path="/api/v4/catalogs", key="catalogs")


@router.get("/catalogs/{catalog_id:int}/custom_fields", response_model=None)
def catalog_fields(
    catalog_id: int, request: Request, sandbox: SandboxDep, _user: UserDep, site: SiteDep
) -> Response:
    state = sandbox.state
    with state.lock:
        catalog = state.catalogs.get(catalog_id)
        if catalog is None:
            return no_content()
        items = [render.custom_field(state, f, site=site) for f in catalog.fields.values()]
    path = f"/api/v4/catalogs/{catalog_id}/custom_fields"
    return paged(items, request.query_params, site=site, path=path, key="custom_fields")


@router.get("/catalogs/{catalog_id:int}/elements", response_model=None)
def list_elements(
    catalog_id: int, request: Request, sandbox: SandboxDep, _user: UserDep, site: SiteDep
) -> Response:
    params, state = request.query_params, sandbox.state
    ids, query = set(int_values(params, "filter[id]")), (params.get("query") or "").lower()
    with state.lock:
        catalog = state.catalogs.get(catalog_id)
        if catalog is None:
            return no_content()
        items = [
            render.element(state, element, site=site)
            for element in catalog.elements.values()
            if (not ids or element.id in ids) and query in element.name.lower()
        ]
    path = f"/api/v4/catalogs/{catalog_id}/elements"
    return paged(items, params, site=site, path=path, key="elements")


@router.get("/catalogs/{catalog_id:int}/elements/{element_id:int}", response_model=None)
def get_element(
    catalog_id: int, element_id: int, sandbox: SandboxDep, _user: UserDep, site: SiteDep
) -> Response:
    state = sandbox.state
    with state.lock:
        catalog = state.catalogs.get(catalog_id)
        element = catalog.elements.get(element_id) if catalog else None
        if element is None:
            return no_content()
        return HalResponse(render.element(state, element, site=site))
