"""What "Add Credit Note" on an invoice does in Sage's web app (Sage's knowledge base, 'How to
create and manage sales credit notes': the credit note copies the invoice, "The credit note total
can't be more than the amount outstanding", and the invoice then shows Paid or Part Paid): a
credit note, then a contact allocation that sets it against the invoice."""

from __future__ import annotations

import datetime as dt
from datetime import datetime
from decimal import Decimal
from typing import Any

from sandbox.sage.allocations import record_allocation
from sandbox.sage.errors import SageError
from sandbox.sage.invoicing import HUNDRED, create_credit_note
from sandbox.sage.models import Book, SalesCreditNote, SalesInvoice
from sandbox.sage.money import round_money


def credit_by_hand(
    book: Book,
    invoice: SalesInvoice,
    amount: Decimal | None,
    day: dt.date,
    reference: str | None,
    *,
    now: datetime,
) -> SalesCreditNote:
    """`amount` includes tax; None credits the invoice's lines whole."""
    lines, total = _lines(book, invoice, amount)
    if total > invoice.outstanding_amount:
        message = (
            "The credit note total can't be more than the amount outstanding "
            f"({invoice.outstanding_amount})."
        )
        raise SageError.invalid(message, "amount")
    data = {
        "contact_id": invoice.contact_id,
        "date": day.isoformat(),
        "original_invoice_date": invoice.date.isoformat(),
        "reference": reference or f"Credit for {invoice.invoice_number}",
        "credit_note_lines": lines,
    }
    note = create_credit_note(book, data, now=now)
    allocation = {
        "transaction_type_id": "CUSTOMER_ALLOCATION",
        "contact_id": invoice.contact_id,
        "date": day.isoformat(),
        "allocated_artefacts": [
            {"artefact_id": invoice.id, "amount": total},
            {"artefact_id": note.id, "amount": -total},
        ],
    }
    record_allocation(book, allocation, now=now)
    return note


def _lines(
    book: Book, invoice: SalesInvoice, amount: Decimal | None
) -> tuple[list[dict[str, Any]], Decimal]:
    if amount is None:
        copied = [
            {
                "description": line.description,
                "ledger_account_id": line.ledger_account_id,
                "tax_rate_id": line.tax_rate_id,
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "unit_price_includes_tax": line.unit_price_includes_tax,
                "discount_amount": line.discount_amount,
                "tax_amount": line.tax_amount,
            }
            for line in invoice.lines
        ]
        return copied, sum((line.total_amount for line in invoice.lines), Decimal(0))
    first = invoice.lines[0]
    rate = book.tax_rates[first.tax_rate_id].percentage
    line = {
        "description": f"Credit for {invoice.invoice_number}",
        "ledger_account_id": first.ledger_account_id,
        "tax_rate_id": first.tax_rate_id,
        "quantity": Decimal(1),
        "unit_price": amount,
        "unit_price_includes_tax": True,
        "tax_amount": round_money(amount * rate / (HUNDRED + rate)),
    }
    return [line], amount
