"""Customer receipts allocated to sales invoices: UNPAID → PART_PAID → PAID."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sandbox.common.ids import new_hex_id
from sandbox.sage.contacts import customer_for
from sandbox.sage.errors import Issue, SageError
from sandbox.sage.models import ZERO, Allocation, Book, ContactPayment, SalesInvoice, Status
from sandbox.sage.money import to_decimal

PAYABLE = (Status.UNPAID, Status.PART_PAID)


def record_payment(book: Book, data: dict[str, Any], *, now: datetime) -> ContactPayment:
    """``data`` is the schema-valid ``contact_payment`` namespace of POST /contact_payments.

    Only customer receipts fully allocated to invoices are simulated (no payment on account).
    """
    if data["transaction_type_id"] != "CUSTOMER_RECEIPT":
        message = "Only CUSTOMER_RECEIPT payments are supported by the sandbox."
        raise SageError.invalid(message, "transaction_type_id")
    contact = customer_for(book, data["contact_id"], source="contact_id")
    if data["bank_account_id"] not in book.bank_accounts:
        raise SageError.not_found("bank_account_id")
    allocations = _allocations(book, contact.id, data.get("allocated_artefacts") or [])
    total = to_decimal(data["total_amount"])
    if sum((amount for _, amount in allocations), ZERO) != total:
        message = "The allocated amounts must add up to total_amount."
        raise SageError.invalid(message, "total_amount")
    payment = ContactPayment(
        id=new_hex_id(),
        contact_id=contact.id,
        bank_account_id=data["bank_account_id"],
        date=date.fromisoformat(data["date"]),
        total_amount=total,
        reference=data.get("reference"),
        payment_method_id=data.get("payment_method_id"),
        allocations=[(invoice.id, amount) for invoice, amount in allocations],
        created_at=now,
    )
    _apply(payment, allocations, now)
    book.payments[payment.id] = payment
    return payment


def _allocations(
    book: Book, contact_id: str, raw: list[dict[str, Any]]
) -> list[tuple[SalesInvoice, Decimal]]:
    if not raw:
        message = "Payments on account are not simulated; allocate the payment to invoices."
        raise SageError.invalid(message, "allocated_artefacts")
    found = [_allocated_invoice(book, contact_id, index, item) for index, item in enumerate(raw)]
    pairs = [
        (invoice, to_decimal(item.get("amount", 0)))
        for invoice, item in zip(found, raw, strict=True)
    ]
    issues = _amount_issues(pairs)
    if issues:
        raise SageError(422, issues)
    return pairs


def _allocated_invoice(
    book: Book, contact_id: str, index: int, item: dict[str, Any]
) -> SalesInvoice:
    source = f"allocated_artefacts.{index}.artefact_id"
    invoice = book.invoices.get(item.get("artefact_id", ""))
    if invoice is None or invoice.deleted_at is not None:
        raise SageError.not_found(source)
    if invoice.contact_id != contact_id:
        raise SageError.invalid("The artefact belongs to another contact.", source)
    if invoice.status not in PAYABLE:
        raise SageError.invalid(f"A {invoice.status.value} invoice cannot take payments.", source)
    return invoice


def _amount_issues(pairs: list[tuple[SalesInvoice, Decimal]]) -> list[Issue]:
    issues: list[Issue] = []
    remaining: dict[str, Decimal] = {}
    for index, (invoice, amount) in enumerate(pairs):
        source = f"allocated_artefacts.{index}.amount"
        left = remaining.setdefault(invoice.id, invoice.outstanding_amount)
        if amount <= ZERO:
            issues.append(Issue("RecordInvalid", "The allocated amount must be positive.", source))
        elif amount > left:
            message = f"The allocated amount {amount} exceeds the outstanding amount {left}."
            issues.append(Issue("RecordInvalid", message, source))
        remaining[invoice.id] = left - amount
    return issues


def _apply(
    payment: ContactPayment, pairs: list[tuple[SalesInvoice, Decimal]], now: datetime
) -> None:
    for invoice, amount in pairs:
        invoice.settle(Allocation(payment.id, amount, payment.date, payment.reference), now)
