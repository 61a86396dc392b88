"""``/sales_credit_notes`` (list, read, create idempotently, void) and ``/contact_allocations``
(set credit notes against invoices)."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from sandbox.sage import render
from sandbox.sage.allocations import record_allocation
from sandbox.sage.deps import BodyDep, BookDep, SandboxDep
from sandbox.sage.errors import SageError
from sandbox.sage.idempotency import create_once
from sandbox.sage.invoicing import create_credit_note, void_invoice
from sandbox.sage.listing import listed
from sandbox.sage.models import Book, SalesCreditNote
from sandbox.sage.routes.invoices import InvoiceQuery, sort_artefacts, void_reason

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v3.1", tags=["sage sales credit notes"])


@router.get("/sales_credit_notes")
def list_sales_credit_notes(request: Request, book: BookDep, sandbox: SandboxDep) -> dict[str, Any]:
    """The invoice list's filters: ``search`` matches "the credit note reference or contact
    name" (the spec's parameter)."""
    query = InvoiceQuery.from_params(request.query_params)
    site = sandbox.site(request)
    with sandbox.state.lock:
        found = [note for note in book.credit_notes.values() if query.matches(note)]
        items = [
            render.credit_note(book, note, site=site)
            for note in sort_artefacts(found, request.query_params)
        ]
    return listed(request, "/sales_credit_notes", items, sandbox.config.default_items_per_page)


@router.get("/sales_credit_notes/{key}")
def get_sales_credit_note(
    key: str, request: Request, book: BookDep, sandbox: SandboxDep
) -> dict[str, Any]:
    with sandbox.state.lock:
        return render.credit_note(book, _live(book, key), site=sandbox.site(request))


@router.post("/sales_credit_notes", status_code=201)
async def post_sales_credit_note(
    request: Request, body: BodyDep, book: BookDep, sandbox: SandboxDep
) -> JSONResponse:
    site = sandbox.site(request)

    def create(data: dict[str, Any]) -> dict[str, Any]:
        note = create_credit_note(book, data, now=sandbox.state.now())
        return render.credit_note(book, note, site=site)

    return create_once(
        sandbox,
        book,
        body,
        entity="sales_credit_note",
        definition="postSalesCreditNotes",
        create=create,
    )


@router.delete("/sales_credit_notes/{key}", response_model=None)
async def void_sales_credit_note(
    key: str, request: Request, book: BookDep, sandbox: SandboxDep
) -> dict[str, Any] | Response:
    """Voids the credit note (``void_reason`` required); a DRAFT is deleted instead (204)."""
    reason = await void_reason(request)
    with sandbox.state.lock:
        note = _live(book, key)
        if void_invoice(note, reason, now=sandbox.state.now()):
            return Response(status_code=204)
        return render.credit_note(book, note, site=sandbox.site(request))


@router.post("/contact_allocations", status_code=201)
async def post_contact_allocation(
    body: BodyDep, book: BookDep, sandbox: SandboxDep
) -> JSONResponse:
    def create(data: dict[str, Any]) -> dict[str, Any]:
        allocation = record_allocation(book, data, now=sandbox.state.now())
        return render.contact_allocation(book, allocation)

    return create_once(
        sandbox,
        book,
        body,
        entity="contact_allocation",
        definition="postContactAllocations",
        create=create,
    )


@router.get("/contact_allocations/{key}")
def get_contact_allocation(key: str, book: BookDep, sandbox: SandboxDep) -> dict[str, Any]:
    with sandbox.state.lock:
        allocation = book.allocations.get(key)
        if allocation is None:
            raise SageError.not_found()
        return render.contact_allocation(book, allocation)


def _live(book: Book, key: str) -> SalesCreditNote:
    note = book.credit_notes.get(key)
    if note is None or note.deleted_at is not None:
        raise SageError.not_found()
    return note
