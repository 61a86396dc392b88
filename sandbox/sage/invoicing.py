"""Sales invoice and credit note creation, and voiding, with the rules Sage documents.

* the contact must exist (404 RecordNotFound) and be a customer (422 RecordInvalid);
* each line's ledger account must exist and be visible in sales, its tax rate must exist
  (404 RecordNotFound with the line in ``$source``);
* ``tax_amount`` is required unless the rate is of a zero, exempt or no_tax type, and must be
  round-half-up(net × rate, 2) within 0.01; net/total, when sent, must agree too (422).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sandbox.common.ids import new_hex_id
from sandbox.sage.contacts import customer_for
from sandbox.sage.errors import Issue, SageError
from sandbox.sage.models import (
    ZERO,
    Book,
    Contact,
    InvoiceLine,
    LedgerAccount,
    SalesArtefact,
    SalesCreditNote,
    SalesInvoice,
    Status,
    TaxRate,
)
from sandbox.sage.money import CENT, round_money, to_decimal

HUNDRED = Decimal(100)
CREATABLE_STATUSES = (Status.DRAFT, Status.UNPAID)


@dataclass(frozen=True)
class _LineRefs:
    index: int
    raw: dict[str, Any]
    ledger: LedgerAccount
    rate: TaxRate
    key: str = "invoice_lines"

    @property
    def label(self) -> str:
        kind = "Credit note" if self.key == "credit_note_lines" else "Invoice"
        return f"{kind} line {self.index + 1}"

    def source(self, attribute: str) -> str:
        return f"{self.key}.{self.index}.{attribute}"


def create_invoice(
    book: Book, data: dict[str, Any], *, now: datetime, default_credit_days: int
) -> SalesInvoice:
    """``data`` is the schema-valid ``sales_invoice`` namespace of a POST body."""
    contact = customer_for(book, data["contact_id"], source="contact_id")
    currency, rate = _currency(book, contact, data)
    status = _initial_status(data)
    lines = _priced_lines(_line_refs(book, data["invoice_lines"]))
    invoice_date = date.fromisoformat(data["date"])
    due_date = _due_date(data, contact, invoice_date, default_credit_days)
    invoice = SalesInvoice(
        id=new_hex_id(),
        invoice_number=book.next_invoice_number(),
        contact_id=contact.id,
        contact_name=contact.name,
        contact_reference=contact.reference,
        date=invoice_date,
        due_date=due_date,
        reference=data.get("reference"),
        notes=data.get("notes"),
        currency_id=currency,
        exchange_rate=rate,
        lines=lines,
        status=status,
        created_at=now,
        updated_at=now,
        total_adjustment=book.total_adjustment,
    )
    book.invoices[invoice.id] = invoice
    return invoice


def create_credit_note(book: Book, data: dict[str, Any], *, now: datetime) -> SalesCreditNote:
    """``data`` is the schema-valid ``sales_credit_note`` namespace of a POST body. The credit
    note is standalone (Sage's API names no original invoice): a contact allocation sets it
    against an invoice."""
    contact = customer_for(book, data["contact_id"], source="contact_id")
    currency, rate = _currency(book, contact, data)
    lines = _priced_lines(_line_refs(book, data["credit_note_lines"], key="credit_note_lines"))
    original = data.get("original_invoice_date")
    note = SalesCreditNote(
        id=new_hex_id(),
        credit_note_number=book.next_credit_note_number(),
        contact_id=contact.id,
        contact_name=contact.name,
        contact_reference=contact.reference,
        date=date.fromisoformat(data["date"]),
        original_invoice_date=date.fromisoformat(original) if original else None,
        reference=data.get("reference"),
        notes=data.get("notes"),
        currency_id=currency,
        exchange_rate=rate,
        lines=lines,
        status=_initial_status(data),
        created_at=now,
        updated_at=now,
    )
    book.credit_notes[note.id] = note
    return note


def void_invoice(invoice: SalesArtefact, reason: str | None, *, now: datetime) -> bool:
    """Void (or, for a DRAFT, delete) an invoice or a credit note; True if it was deleted."""
    if invoice.status is Status.DRAFT:
        invoice.deleted_at = now
        invoice.updated_at = now
        return True
    if invoice.status is Status.VOID:
        raise SageError.invalid("The sales invoice has already been voided.", "status")
    if invoice.allocations:
        # Sage's invoicing guide, 'From Part Paid Or Paid To Void': delete the payments and
        # allocations first.
        message = "Cannot void an artefact with payments or allocations; remove them first."
        raise SageError.invalid(message, "status")
    if not reason or not reason.strip():
        raise SageError.invalid("void_reason is required unless status is DRAFT", "void_reason")
    invoice.status = Status.VOID
    invoice.void_reason = reason
    invoice.updated_at = now
    return False


def _currency(book: Book, contact: Contact, data: dict[str, Any]) -> tuple[str, Decimal]:
    """The invoice is in its contact's currency; a foreign one needs multi-currency and a rate
    (the one posted, else the business's own)."""
    business = book.business
    trades_in = contact.currency_id or business.currency_id
    wanted = data.get("currency_id") or trades_in
    if wanted != business.currency_id and not business.multi_currency_enabled:
        message = "Multi-currency is not enabled for this business."
        raise SageError.invalid(message, "currency_id")
    if wanted != trades_in:
        message = f"The currency must be the contact's currency ({trades_in})."
        raise SageError.invalid(message, "currency_id")
    if wanted == business.currency_id:
        return wanted, Decimal(1)
    rate = data.get("exchange_rate")
    if rate is not None:
        return wanted, to_decimal(rate)
    if wanted not in business.exchange_rates:
        raise SageError.invalid(f"No exchange rate for {wanted}.", "exchange_rate")
    return wanted, business.exchange_rates[wanted]


def _initial_status(data: dict[str, Any]) -> Status:
    wanted = data.get("status_id", Status.UNPAID.value)
    if wanted not in {s.value for s in CREATABLE_STATUSES}:
        raise SageError.invalid(f"status_id {wanted} can't be set on a new invoice", "status_id")
    return Status(wanted)


def _due_date(data: dict[str, Any], contact: Contact, issued: date, fallback_days: int) -> date:
    if "due_date" in data:
        return date.fromisoformat(data["due_date"])
    days = contact.credit_days if contact.credit_days is not None else fallback_days
    return issued + timedelta(days=days)


def _line_refs(
    book: Book, raw_lines: list[dict[str, Any]], key: str = "invoice_lines"
) -> list[_LineRefs]:
    if not raw_lines:
        raise SageError.invalid("At least one line is needed.", key)
    refs: list[_LineRefs] = []
    missing: list[Issue] = []
    for index, raw in enumerate(raw_lines):
        ledger = book.ledger_accounts.get(raw["ledger_account_id"])
        if ledger is None or not ledger.visible_in_sales:
            missing.append(_not_found(key, index, "ledger_account_id"))
            continue
        rate_id = raw.get("tax_rate_id", ledger.default_tax_rate_id)
        rate = book.tax_rates.get(rate_id) if rate_id else None
        if rate is None:
            missing.append(_not_found(key, index, "tax_rate_id"))
            continue
        refs.append(_LineRefs(index, raw, ledger, rate, key))
    if missing:
        raise SageError(404, missing)
    return refs


def _not_found(key: str, index: int, attribute: str) -> Issue:
    return Issue("RecordNotFound", "Couldn't find record.", f"{key}.{index}.{attribute}")


def _priced_lines(refs: list[_LineRefs]) -> list[InvoiceLine]:
    lines: list[InvoiceLine] = []
    issues: list[Issue] = []
    for ref in refs:
        priced = _priced_line(ref)
        if isinstance(priced, InvoiceLine):
            lines.append(priced)
        else:
            issues.extend(priced)
    if issues:
        raise SageError(422, issues)
    return lines


def _priced_line(ref: _LineRefs) -> InvoiceLine | list[Issue]:
    raw, pct = ref.raw, ref.rate.percentage
    quantity = to_decimal(raw.get("quantity", 1))
    unit_price = to_decimal(raw["unit_price"])
    includes_tax = bool(raw.get("unit_price_includes_tax", False))
    amount = round_money(quantity * unit_price - _discount(raw, quantity * unit_price))
    if includes_tax:
        expected_tax = round_money(amount * pct / (HUNDRED + pct))
    else:
        expected_tax = round_money(amount * pct / HUNDRED)
    tax = _checked_tax(ref, expected_tax, amount)
    if isinstance(tax, Issue):
        return [tax]
    net = amount - tax if includes_tax else amount
    issues = _consistency_issues(ref, net, tax)
    if issues:
        return issues
    return InvoiceLine(
        id=new_hex_id(),
        description=raw["description"],
        ledger_account_id=ref.ledger.id,
        tax_rate_id=ref.rate.id,
        quantity=quantity,
        unit_price=unit_price,
        unit_price_includes_tax=includes_tax,
        discount_amount=_discount(raw, quantity * unit_price),
        net_amount=net,
        tax_amount=tax,
    )


def _discount(raw: dict[str, Any], gross: Decimal) -> Decimal:
    if "discount_amount" in raw:
        return round_money(to_decimal(raw["discount_amount"]))
    if "discount_percentage" in raw:
        return round_money(gross * to_decimal(raw["discount_percentage"]) / HUNDRED)
    return ZERO


def _checked_tax(ref: _LineRefs, expected: Decimal, base: Decimal) -> Decimal | Issue:
    given = ref.raw.get("tax_amount")
    rate = f"{ref.rate.id} ({ref.rate.percentage}%)"
    if given is None:
        if ref.rate.tax_inferred_as_zero:
            return ZERO
        message = f"{ref.label}: tax_amount is required for tax rate {rate}"
        return Issue("RecordInvalid", message, ref.source("tax_amount"))
    amount = to_decimal(given)
    if abs(amount - expected) > CENT:
        message = (
            f"{ref.label}: tax_amount {amount} does not match {rate} of {base} "
            f"(expected {expected})"
        )
        return Issue("RecordInvalid", message, ref.source("tax_amount"))
    return round_money(amount)


def _consistency_issues(ref: _LineRefs, net: Decimal, tax: Decimal) -> list[Issue]:
    issues: list[Issue] = []
    for attribute, computed in (("net_amount", net), ("total_amount", net + tax)):
        if attribute in ref.raw and abs(to_decimal(ref.raw[attribute]) - computed) > CENT:
            message = f"{ref.label}: {attribute} {ref.raw[attribute]} should be {computed}"
            issues.append(Issue("RecordInvalid", message, ref.source(attribute)))
    return issues
