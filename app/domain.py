"""The bridge's own vocabulary, shared by every CRM and accounting adapter.

Glossary (docs/GUARANTEES.md): deal = Kommo lead; line item = catalog element linked to the
lead; customer = the lead's main contact = a Sage CUSTOMER contact; invoice = Sage sales invoice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class Customer:
    crm_id: str
    name: str
    email: str | None
    phone: str | None = None


@dataclass(frozen=True)
class LineItem:
    """One product on a deal, as the CRM describes it (before any ledger mapping)."""

    element_id: str
    name: str
    quantity: Decimal
    unit_price: Decimal
    sku: str | None = None
    product_type: str | None = None
    discount_percent: Decimal | None = None


@dataclass(frozen=True)
class Deal:
    """A deal's header: enough to tell whether it is in the invoice stage and who owns it.
    Pipeline, stage and user are the CRM's own identifiers as text: numbers in Kommo, 19-digit
    ids or stage names in other CRMs."""

    id: str
    account_id: str
    name: str
    pipeline_id: str
    status_id: str
    responsible_user_id: str | None
    # What the adapter read, for its own later use (Kommo: the lead, so reading the deal's
    # contents needs no second read of it). Never compared or shown.
    source: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class DealContents:
    """What an invoice is made of, read only for a deal in the invoice stage."""

    customer: Customer | None
    lines: tuple[LineItem, ...] = ()
    # ISO 4217 code the CRM's amounts are in (Kommo: the account's currency); None = unknown.
    currency: str | None = None


@dataclass(frozen=True)
class InvoiceLine:
    """A line ready for the accounting system: mapped and with tax computed."""

    description: str
    ledger_account_id: str
    tax_rate_id: str | None
    quantity: Decimal
    unit_price: Decimal
    discount_amount: Decimal
    net_amount: Decimal
    tax_amount: Decimal


@dataclass(frozen=True)
class InvoiceDraft:
    contact_id: str
    date: dt.date
    reference: str
    idempotency_key: str
    lines: tuple[InvoiceLine, ...]
    notes: str | None = None
    # None: the accounting system applies the customer's terms (Sage: contact credit_days,
    # else the business default); a date only when ops set INVOICE_DUE_DAYS.
    due_date: dt.date | None = None
    # None: the accounting system's base currency; otherwise an ISO 4217 code.
    currency: str | None = None

    @property
    def net_amount(self) -> Decimal:
        return sum((line.net_amount for line in self.lines), Decimal(0))

    @property
    def tax_amount(self) -> Decimal:
        return sum((line.tax_amount for line in self.lines), Decimal(0))

    @property
    def total_amount(self) -> Decimal:
        return self.net_amount + self.tax_amount


@dataclass(frozen=True)
class InvoiceRef:
    id: str
    number: str | None
    url: str | None
    reference: str | None = None
    total_amount: Decimal | None = None
    net_amount: Decimal | None = None
    tax_amount: Decimal | None = None
    due_date: dt.date | None = None
    currency: str | None = None
    # The accounting system's status id (Sage: UNPAID, PART_PAID, PAID, VOID), when listed.
    status_id: str | None = None


@dataclass(frozen=True)
class InvoiceMoney:
    """What has been paid or credited on an invoice and what is left; None: not known."""

    total: Decimal | None = None
    paid: Decimal | None = None
    credited: Decimal | None = None
    outstanding: Decimal | None = None
    last_payment: dt.date | None = None
    credit_notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class InvoiceDetail:
    """An invoice as the accounting system holds it now: its lines, status and money."""

    id: str
    number: str | None
    status_id: str
    contact_id: str | None
    date: dt.date | None
    currency: str | None
    lines: tuple[InvoiceLine, ...]
    money: InvoiceMoney

    @property
    def settled_any(self) -> bool:
        """Something paid or credited on it: it is never voided or reissued by the bridge."""
        return bool(self.money.paid) or bool(self.money.credited)


@dataclass(frozen=True)
class CreditNoteDraft:
    """A credit note for one invoice, whole: its lines, so the invoice is cancelled out."""

    contact_id: str
    date: dt.date
    original_invoice_date: dt.date | None
    reference: str
    idempotency_key: str
    lines: tuple[InvoiceLine, ...]
    notes: str | None = None
    currency: str | None = None


@dataclass(frozen=True)
class CreditNoteRef:
    id: str
    number: str | None
    total_amount: Decimal | None = None
    outstanding_amount: Decimal | None = None


@dataclass(frozen=True)
class PaymentView:
    """What a deal shows about its invoice's money. A field left None is not written."""

    status: str | None = None
    paid: Decimal | None = None
    outstanding: Decimal | None = None
    last_payment: dt.date | None = None
    credited: Decimal | None = None
    credit_notes: str | None = None

    def changes_from(self, shown: PaymentView) -> PaymentView | None:
        """Only the fields that differ from what the deal shows; None when nothing does."""
        changed = {
            name: value
            for name, value in vars(self).items()
            if value is not None and value != getattr(shown, name)
        }
        return PaymentView(**changed) if changed else None


@dataclass(frozen=True)
class CustomerRef:
    """A customer in the accounting system and the currency it trades in (None: unknown or
    the business's own)."""

    id: str
    currency: str | None = None


@dataclass(frozen=True)
class BusinessCurrency:
    """The accounting system's base currency and whether it may invoice in others."""

    base: str
    multi_currency: bool


@dataclass(frozen=True)
class TaxRate:
    id: str
    percentage: Decimal


@dataclass(frozen=True)
class InvoiceStatus:
    """What the accounting system says about an invoice's payment, and when it said it."""

    invoice_id: str
    status_id: str  # the accounting system's own id, e.g. Sage's UNPAID / PART_PAID / PAID / VOID
    updated_at: dt.datetime
    due_date: dt.date | None = None
    outstanding_amount: Decimal | None = None
    deleted: bool = False
    # Paid, credited and left, when the accounting system said (a poll does; a callback may not).
    money: InvoiceMoney | None = None


@dataclass(frozen=True)
class DealInStage:
    """A deal the CRM lists in the invoice stage (for reconciling lost webhooks)."""

    id: str
    account_id: str
    pipeline_id: str
    status_id: str
    responsible_user_id: str | None
    updated_at: int


@dataclass(frozen=True)
class CrmTask:
    """A follow-up the bridge opened, as the CRM holds it now."""

    id: str
    text: str
    is_completed: bool


@dataclass(frozen=True)
class LedgerAccountInfo:
    id: str
    name: str
    code: str | None = None
