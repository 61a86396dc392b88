"""``/sales_invoices``: list with Sage's filters, read, create (idempotent), void."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import QueryParams

from sandbox.sage import render
from sandbox.sage.deps import BodyDep, BookDep, SandboxDep
from sandbox.sage.errors import SageError
from sandbox.sage.idempotency import create_once
from sandbox.sage.invoicing import create_invoice, void_invoice
from sandbox.sage.listing import listed, parse_date, parse_since
from sandbox.sage.models import Book, SalesArtefact, SalesInvoice

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/v3.1", tags=["sage sales invoices"])
SORTABLE = ("created_at", "updated_at", "date", "due_date")
A = TypeVar("A", bound=SalesArtefact)


@dataclass(frozen=True)
class InvoiceQuery:
    since: datetime | None
    deleted_since: datetime | None
    search: str
    status_id: str | None
    contact_id: str | None
    from_date: date | None
    to_date: date | None

    @classmethod
    def from_params(cls, params: QueryParams) -> InvoiceQuery:
        return cls(
            since=parse_since(params, "updated_or_created_since"),
            deleted_since=parse_since(params, "deleted_since"),
            search=(params.get("search") or "").strip().lower(),
            status_id=params.get("status_id") or None,
            contact_id=params.get("contact_id") or None,
            from_date=parse_date(params, "from_date"),
            to_date=parse_date(params, "to_date"),
        )

    def matches(self, invoice: SalesArtefact) -> bool:
        return self._in_window(invoice) and self._attributes_match(invoice)

    def _in_window(self, invoice: SalesArtefact) -> bool:
        # deleted_since lists the deletions after it (exclusive); otherwise deleted are hidden.
        if self.deleted_since is not None:
            return invoice.deleted_at is not None and invoice.deleted_at > self.deleted_since
        if invoice.deleted_at is not None:
            return False
        return self.since is None or invoice.updated_at >= self.since

    def _attributes_match(self, invoice: SalesArtefact) -> bool:
        haystacks = ((invoice.reference or "").lower(), invoice.contact_name.lower())
        return (
            (not self.search or any(self.search in h for h in haystacks))
            and (self.status_id is None or invoice.status.value == self.status_id)
            and (self.contact_id is None or invoice.contact_id == self.contact_id)
            and (self.from_date is None or invoice.date >= self.from_date)
            and (self.to_date is None or invoice.date <= self.to_date)
        )


@router.get("/sales_invoices")
def list_sales_invoices(request: Request, book: BookDep, sandbox: SandboxDep) -> dict[str, Any]:
    query = InvoiceQuery.from_params(request.query_params)
    site = sandbox.site(request)
    with sandbox.state.lock:
        found = sort_artefacts(
            [i for i in book.invoices.values() if query.matches(i)], request.query_params
        )
        items = [render.invoice(book, invoice, site=site) for invoice in found]
    return listed(request, "/sales_invoices", items, sandbox.config.default_items_per_page)


def sort_artefacts(invoices: list[A], params: QueryParams) -> list[A]:
    raw = params.get("sort")
    if not raw:
        return invoices
    attribute, _, direction = raw.partition(":")
    if attribute not in SORTABLE or direction not in ("", "asc", "desc"):
        raise SageError.bad_parameter("sort", f"Cannot sort by {raw}")
    return sorted(invoices, key=lambda i: getattr(i, attribute), reverse=direction == "desc")


@router.get("/sales_invoices/{key}")
def get_sales_invoice(
    key: str, request: Request, book: BookDep, sandbox: SandboxDep
) -> dict[str, Any]:
    with sandbox.state.lock:
        return render.invoice(book, _live_invoice(book, key), site=sandbox.site(request))


@router.post("/sales_invoices", status_code=201)
async def post_sales_invoice(
    request: Request, body: BodyDep, book: BookDep, sandbox: SandboxDep
) -> JSONResponse:
    site = sandbox.site(request)

    def create(data: dict[str, Any]) -> dict[str, Any]:
        invoice = create_invoice(
            book,
            data,
            now=sandbox.state.now(),
            default_credit_days=sandbox.config.default_credit_days,
        )
        return render.invoice(book, invoice, site=site)

    return create_once(
        sandbox, book, body, entity="sales_invoice", definition="postSalesInvoices", create=create
    )


@router.delete("/sales_invoices/{key}", response_model=None)
async def void_sales_invoice(
    key: str, request: Request, book: BookDep, sandbox: SandboxDep
) -> dict[str, Any] | Response:
    """Voids the invoice (``void_reason`` required); a DRAFT is deleted instead (204)."""
    reason = await void_reason(request)
    with sandbox.state.lock:
        invoice = _live_invoice(book, key)
        deleted = void_invoice(invoice, reason, now=sandbox.state.now())
        log.info("sage.invoice.voided", invoice_id=key, deleted=deleted)
        if deleted:
            return Response(status_code=204)
        return render.invoice(book, invoice, site=sandbox.site(request))


async def void_reason(request: Request) -> str | None:
    """The spec puts ``void_reason`` in the query; Sage's invoicing guide ('From Unpaid To
    Void') sends it as a JSON body. Either is read, the query first."""
    given = request.query_params.get("void_reason")
    if given:
        return given
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    reason = body.get("void_reason") if isinstance(body, dict) else None
    return reason if isinstance(reason, str) else None


def _live_invoice(book: Book, key: str) -> SalesInvoice:
    invoice = book.invoices.get(key)
    if invoice is None or invoice.deleted_at is not None:
        raise SageError.not_found()
    return invoice
