"""``/contacts``: list with Sage's filters, read one, create (idempotent)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sandbox.sage import render
from sandbox.sage.contacts import create_contact
from sandbox.sage.deps import BodyDep, BookDep, SandboxDep
from sandbox.sage.errors import SageError
from sandbox.sage.idempotency import create_once
from sandbox.sage.listing import listed, parse_since
from sandbox.sage.models import Contact

router = APIRouter(prefix="/v3.1", tags=["sage contacts"])


@router.get("/contacts")
def list_contacts(request: Request, book: BookDep, sandbox: SandboxDep) -> dict[str, Any]:
    params = request.query_params
    since = parse_since(params, "updated_or_created_since")
    with sandbox.state.lock:
        found = [
            render.contact(book, contact)
            for contact in book.contacts.values()
            if _matches(contact, params.get("email"), params.get("search"), since)
            and (
                not params.get("contact_type_id")
                or params["contact_type_id"] in contact.contact_type_ids
            )
        ]
    return listed(request, "/contacts", found, sandbox.config.default_items_per_page)


def _matches(
    contact: Contact, email: str | None, search: str | None, since: datetime | None
) -> bool:
    if email and (contact.email or "").lower() != email.strip().lower():
        return False
    needle = (search or "").lower()
    if needle and needle not in contact.name.lower() and needle not in contact.reference.lower():
        return False
    return since is None or contact.updated_at >= since


@router.get("/contacts/{key}")
def get_contact(key: str, book: BookDep, sandbox: SandboxDep) -> dict[str, Any]:
    with sandbox.state.lock:
        contact = book.contacts.get(key)
        if contact is None:
            raise SageError.not_found()
        return render.contact(book, contact)


@router.post("/contacts", status_code=201)
async def post_contact(body: BodyDep, book: BookDep, sandbox: SandboxDep) -> JSONResponse:
    def create(data: dict[str, Any]) -> dict[str, Any]:
        contact = create_contact(book, data, now=sandbox.state.now())
        return render.contact(book, contact)

    return create_once(
        sandbox, book, body, entity="contact", definition="postContacts", create=create
    )
