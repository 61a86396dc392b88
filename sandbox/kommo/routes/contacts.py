"""``/api/v4/contacts``: read one, list, and the contact custom-field definitions."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from sandbox.kommo import render
from sandbox.kommo.deps import SandboxDep, SiteDep, UserDep
from sandbox.kommo.errors import HalResponse, no_content
from sandbox.kommo.query import int_values, paged

router = APIRouter(prefix="/api/v4", tags=["kommo contacts"])


@router.get("/contacts/custom_fields", response_model=None)
def contact_fields(
    request: Request, sandbox: SandboxDep, _user: UserDep, site: SiteDep
) -> Response:
    state = sandbox.state
    with state.lock:
        items = [render.custom_field(state, f, site=site) for f in state.contact_fields.values()]
    path = "/api/v4/contacts/custom_fields"
    return paged(items, request.query_params, site=site, path=path, key="custom_fields")


@router.get("/contacts", response_model=None)
def list_contacts(request: Request, sandbox: SandboxDep, _user: UserDep, site: SiteDep) -> Response:
    params, state = request.query_params, sandbox.state
    ids, query = set(int_values(params, "filter[id]")), (params.get("query") or "").lower()
    with state.lock:
        items = [
            render.contact(state, contact, site=site)
            for contact in state.contacts.values()
            if (not ids or contact.id in ids) and query in contact.name.lower()
        ]
    return paged(items, params, site=site, path="/api/v4/contacts", key="contacts")


@router.get("/contacts/{contact_id:int}", response_model=None)
def get_contact(contact_id: int, sandbox: SandboxDep, _user: UserDep, site: SiteDep) -> Response:
    state = sandbox.state
    with state.lock:
        contact = state.contacts.get(contact_id)
        if contact is None:
            return no_content()
        return HalResponse(render.contact(state, contact, site=site))
