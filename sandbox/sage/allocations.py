"""Contact allocations: credit notes set against invoices of one customer.

As Sage's invoicing guide ('From Unpaid To Part Paid Or Paid') documents them: the
``transaction_type_id`` is CUSTOMER_ALLOCATION, each allocated artefact is an invoice (a positive
amount) or a credit note (a negative one), and the amounts add up to zero. Each side is settled
like a payment: PART_PAID, then PAID once nothing is outstanding.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sandbox.common.ids import new_hex_id
from sandbox.sage.contacts import customer_for
from sandbox.sage.errors import Issue, SageError
from sandbox.sage.models import (
    ZERO,
    Allocation,
    AllocationKind,
    Book,
    ContactAllocation,
    SalesArtefact,
    SalesCreditNote,
    Status,
)
from sandbox.sage.money import to_decimal

SETTLEABLE = (Status.UNPAID, Status.PART_PAID)
Side = tuple[SalesArtefact, Decimal]


def record_allocation(book: Book, data: dict[str, Any], *, now: datetime) -> ContactAllocation:
    """``data`` is the schema-valid ``contact_allocation`` namespace of POST
    /contact_allocations."""
    if data["transaction_type_id"] != "CUSTOMER_ALLOCATION":
        message = "Only CUSTOMER_ALLOCATION (sales artefacts) is supported by the sandbox."
        raise SageError.invalid(message, "transaction_type_id")
    contact = customer_for(book, data["contact_id"], source="contact_id")
    raw = data.get("allocated_artefacts") or []
    sides = [_side(book, contact.id, index, item) for index, item in enumerate(raw)]
    _check_amounts(sides)
    allocation = ContactAllocation(
        id=new_hex_id(),
        contact_id=contact.id,
        date=date.fromisoformat(data["date"]) if data.get("date") else now.date(),
        artefacts=[(_collection(a), a.id, amount) for a, amount in sides],
        created_at=now,
    )
    _settle(allocation, sides, now)
    book.allocations[allocation.id] = allocation
    return allocation


def _side(book: Book, contact_id: str, index: int, item: dict[str, Any]) -> Side:
    source = f"allocated_artefacts.{index}.artefact_id"
    key = item.get("artefact_id", "")
    artefact: SalesArtefact | None = book.invoices.get(key) or book.credit_notes.get(key)
    if artefact is None or artefact.deleted_at is not None:
        raise SageError.not_found(source)
    if artefact.contact_id != contact_id:
        raise SageError.invalid("The artefact belongs to another contact.", source)
    if artefact.status not in SETTLEABLE:
        raise SageError.invalid(f"A {artefact.status.value} artefact cannot be allocated.", source)
    return artefact, to_decimal(item.get("amount", 0))


def _check_amounts(sides: list[Side]) -> None:
    issues: list[Issue] = []
    for index, (artefact, amount) in enumerate(sides):
        source = f"allocated_artefacts.{index}.amount"
        credit = isinstance(artefact, SalesCreditNote)
        if (amount >= ZERO) if credit else (amount <= ZERO):
            sign = "negative on a credit note" if credit else "positive on an invoice"
            issues.append(Issue("RecordInvalid", f"The amount must be {sign}.", source))
        elif abs(amount) > artefact.outstanding_amount:
            message = (
                f"The allocated amount {abs(amount)} exceeds the outstanding amount "
                f"{artefact.outstanding_amount} of {artefact.number}."
            )
            issues.append(Issue("RecordInvalid", message, source))
    if sum((amount for _, amount in sides), ZERO) != ZERO and not issues:
        message = "The sum of the allocated amounts must be zero."
        issues.append(Issue("RecordInvalid", message, "allocated_artefacts"))
    if len(sides) < 2 and not issues:
        issues.append(
            Issue("RecordInvalid", "Allocate at least two artefacts.", "allocated_artefacts")
        )
    if issues:
        raise SageError(422, issues)


def _settle(allocation: ContactAllocation, sides: list[Side], now: datetime) -> None:
    """Each artefact names the first one on the other side as its counterpart."""
    for artefact, amount in sides:
        other = next(a for a, _ in sides if isinstance(a, SalesCreditNote) != _is_credit(artefact))
        entry = Allocation(
            allocation.id,
            abs(amount),
            allocation.date,
            None,
            AllocationKind.ALLOCATION,
            (_collection(other), other.id, other.number),
        )
        artefact.settle(entry, now)


def _is_credit(artefact: SalesArtefact) -> bool:
    return isinstance(artefact, SalesCreditNote)


def _collection(artefact: SalesArtefact) -> str:
    return "sales_credit_notes" if _is_credit(artefact) else "sales_invoices"
