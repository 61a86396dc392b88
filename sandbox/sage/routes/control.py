"""Sage-specific control routes: OAuth helpers, payments, credit notes, voids and due dates,
the invoice HTML view.

Unauthenticated on purpose: they stand in for what a person does in Sage's web app.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from html import escape
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from sandbox.sage import render
from sandbox.sage.crediting import credit_by_hand
from sandbox.sage.deps import SandboxDep
from sandbox.sage.errors import SageError
from sandbox.sage.invoicing import void_invoice
from sandbox.sage.models import Book, SalesInvoice
from sandbox.sage.payments import record_payment
from sandbox.sage.state import SageState

router = APIRouter(prefix="/sandbox", tags=["sage sandbox control"])


class PaymentRequest(BaseModel):
    amount: Decimal = Field(gt=0)
    date: dt.date | None = None
    reference: str | None = None


class DueDateRequest(BaseModel):
    due_date: dt.date


class CreditRequest(BaseModel):
    # Including tax; omitted, the credit note copies the invoice's lines (a full credit).
    amount: Decimal | None = Field(default=None, gt=0)
    date: dt.date | None = None
    reference: str | None = None


class VoidRequest(BaseModel):
    void_reason: str = Field(min_length=1)


@router.post("/sales_invoices/{key}/payments", status_code=201)
def pay_invoice(
    key: str, body: PaymentRequest, request: Request, sandbox: SandboxDep
) -> dict[str, Any]:
    """Shortcut for POST /contact_payments: a receipt into the first bank account."""
    state = sandbox.state
    with state.lock:
        book, invoice = _find_invoice(state, key)
        bank_id = next(iter(book.bank_accounts), "")
        payment = {
            "transaction_type_id": "CUSTOMER_RECEIPT",
            "contact_id": invoice.contact_id,
            "bank_account_id": bank_id,
            "date": (body.date or state.now().date()).isoformat(),
            "total_amount": body.amount,
            "reference": body.reference,
            "allocated_artefacts": [{"artefact_id": invoice.id, "amount": body.amount}],
        }
        record_payment(book, payment, now=state.now())
        return render.invoice(book, invoice, site=sandbox.site(request))


@router.post("/sales_invoices/{key}/credit_notes", status_code=201)
def credit_invoice(
    key: str, body: CreditRequest, request: Request, sandbox: SandboxDep
) -> dict[str, Any]:
    """What "Add Credit Note" on an invoice does in Sage's web app: a credit note for it, at
    most its outstanding amount, allocated to it at once (the invoice turns PART_PAID or PAID).
    Answers with the credit note."""
    state = sandbox.state
    with state.lock:
        book, invoice = _find_invoice(state, key)
        day = body.date or state.now().date()
        note = credit_by_hand(book, invoice, body.amount, day, body.reference, now=state.now())
        return render.credit_note(book, note, site=sandbox.site(request))


@router.post("/sales_invoices/{key}/void")
def void_by_hand(
    key: str, body: VoidRequest, request: Request, sandbox: SandboxDep
) -> dict[str, Any]:
    """What voiding an invoice in Sage's web app does (Sage's rules: none paid or allocated)."""
    state = sandbox.state
    with state.lock:
        book, invoice = _find_invoice(state, key)
        void_invoice(invoice, body.void_reason, now=state.now())
        return render.invoice(book, invoice, site=sandbox.site(request))


@router.patch("/sales_invoices/{key}")
def set_due_date(
    key: str, body: DueDateRequest, request: Request, sandbox: SandboxDep
) -> dict[str, Any]:
    """Move an invoice's due date, e.g. into the past so it reads as overdue."""
    state = sandbox.state
    with state.lock:
        book, invoice = _find_invoice(state, key)
        invoice.due_date = body.due_date
        invoice.updated_at = state.now()
        return render.invoice(book, invoice, site=sandbox.site(request))


@router.get("/ui/sales_invoices/{key}", response_class=HTMLResponse)
def invoice_page(key: str, sandbox: SandboxDep) -> HTMLResponse:
    with sandbox.state.lock:
        book, invoice = _find_invoice(sandbox.state, key)
        return HTMLResponse(_invoice_html(book, invoice))


def _find_invoice(state: SageState, key: str) -> tuple[Book, SalesInvoice]:
    for book in state.books.values():
        invoice = book.invoices.get(key)
        if invoice is not None and invoice.deleted_at is None:
            return book, invoice
    raise SageError.not_found()


def _invoice_html(book: Book, invoice: SalesInvoice) -> str:
    rows = "".join(
        f"<tr><td>{escape(line.description)}</td><td>{line.quantity}</td>"
        f"<td>{line.unit_price}</td><td>{escape(line.tax_rate_id)}</td>"
        f"<td>{line.net_amount}</td><td>{line.tax_amount}</td><td>{line.total_amount}</td></tr>"
        for line in invoice.lines
    )
    title = escape(f"{invoice.invoice_number} · {book.business.name}")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<h1>Sales invoice {escape(invoice.invoice_number)}</h1>"
        f"<p>{escape(invoice.contact_name)} ({escape(invoice.contact_reference)}) · "
        f"reference {escape(invoice.reference or '-')} · date {invoice.date} · "
        f"due {invoice.due_date} · status <strong>{invoice.status.value}</strong></p>"
        "<table border='1'><tr><th>Description</th><th>Qty</th><th>Unit price</th>"
        f"<th>Tax rate</th><th>Net</th><th>Tax</th><th>Total</th></tr>{rows}</table>"
        f"<p>Net {invoice.net_amount} · Tax {invoice.tax_amount} · "
        f"Total {invoice.total_amount} {escape(invoice.currency_id)} · "
        f"Paid {invoice.total_paid} · Outstanding {invoice.outstanding_amount}</p>"
        "</body></html>"
    )
