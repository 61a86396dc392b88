"""The records a simulated Sage business holds. Money is ``Decimal`` throughout."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

ZERO = Decimal("0.00")


class TaxKind(StrEnum):
    """Sage infers ``tax_amount`` as 0.0 for the last three kinds; the others require it."""

    STANDARD = "standard"
    REDUCED = "reduced"
    ZERO = "zero"
    EXEMPT = "exempt"
    NO_TAX = "no_tax"


class Status(StrEnum):
    DRAFT = "DRAFT"
    UNPAID = "UNPAID"
    PART_PAID = "PART_PAID"
    PAID = "PAID"
    VOID = "VOID"


STATUS_NAMES = {
    Status.DRAFT: "Draft",
    Status.UNPAID: "Unpaid",
    Status.PART_PAID: "Part Paid",
    Status.PAID: "Paid",
    Status.VOID: "Void",
}

CONTACT_TYPE_NAMES = {"CUSTOMER": "Customer", "VENDOR": "Supplier"}
CURRENCY_NAMES = {"GBP": "Pound Sterling", "EUR": "Euro", "USD": "US Dollar"}


@dataclass
class Business:
    id: str
    name: str
    currency_id: str
    country_id: str
    created_at: datetime
    multi_currency_enabled: bool = False
    # Foreign currency -> units of it per 1 unit of the base currency (the business's own rates;
    # the sandbox has no live rates).
    exchange_rates: dict[str, Decimal] = field(default_factory=dict)


@dataclass
class TaxRate:
    id: str
    name: str
    percentage: Decimal
    kind: TaxKind
    created_at: datetime

    @property
    def tax_inferred_as_zero(self) -> bool:
        return self.kind in (TaxKind.ZERO, TaxKind.EXEMPT, TaxKind.NO_TAX)


@dataclass
class LedgerAccount:
    id: str
    name: str
    nominal_code: int
    type_id: str
    type_name: str
    visible_scopes: tuple[str, ...]
    default_tax_rate_id: str | None
    created_at: datetime

    @property
    def visible_in_sales(self) -> bool:
        return "sales" in self.visible_scopes


@dataclass
class BankAccount:
    id: str
    name: str
    nominal_code: int
    created_at: datetime


@dataclass
class ContactPerson:
    id: str
    name: str | None
    email: str | None
    telephone: str | None = None
    mobile: str | None = None
    job_title: str | None = None


@dataclass
class Contact:
    id: str
    name: str
    reference: str
    contact_type_ids: list[str]
    main_contact_person: ContactPerson | None
    created_at: datetime
    updated_at: datetime
    # The currency the contact trades in; None = the business's base currency.
    currency_id: str | None = None
    credit_days: int | None = None
    # Every other posted attribute (notes, tax_number, main_address…), echoed back as sent.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def email(self) -> str | None:
        return self.main_contact_person.email if self.main_contact_person else None

    @property
    def is_customer(self) -> bool:
        return "CUSTOMER" in self.contact_type_ids


@dataclass
class InvoiceLine:
    id: str
    description: str
    ledger_account_id: str
    tax_rate_id: str
    quantity: Decimal
    unit_price: Decimal
    unit_price_includes_tax: bool
    discount_amount: Decimal
    net_amount: Decimal
    tax_amount: Decimal

    @property
    def total_amount(self) -> Decimal:
        return self.net_amount + self.tax_amount


class AllocationKind(StrEnum):
    """How money came off an artefact: a customer receipt, or a contact allocation that sets
    a credit note against an invoice."""

    RECEIPT = "CUSTOMER_RECEIPT"
    ALLOCATION = "CUSTOMER_ALLOCATION"


@dataclass
class Allocation:
    """Money taken off one artefact: part of a contact payment, or one side of a contact
    allocation (``counterpart`` is then the other artefact: the credit note on an invoice, the
    invoice on a credit note)."""

    payment_id: str  # the contact payment's id, or the contact allocation's
    amount: Decimal
    date: dt.date
    reference: str | None
    kind: AllocationKind = AllocationKind.RECEIPT
    counterpart: tuple[str, str, str] | None = None  # (collection, id, displayed_as)


@dataclass(kw_only=True)
class SalesArtefact:
    """What a sales invoice and a sales credit note share: lines, contact, money, status."""

    id: str
    contact_id: str
    contact_name: str
    contact_reference: str
    date: dt.date
    reference: str | None
    notes: str | None
    currency_id: str
    lines: list[InvoiceLine]
    status: Status
    created_at: datetime
    updated_at: datetime
    # Units of the artefact currency per 1 unit of the base currency (1 for base artefacts).
    exchange_rate: Decimal = Decimal(1)
    void_reason: str | None = None
    deleted_at: datetime | None = None
    allocations: list[Allocation] = field(default_factory=list)
    # Added to the total only (see Book.total_adjustment).
    total_adjustment: Decimal = ZERO

    @property
    def number(self) -> str:
        raise NotImplementedError

    @property
    def net_amount(self) -> Decimal:
        return sum((line.net_amount for line in self.lines), ZERO)

    @property
    def tax_amount(self) -> Decimal:
        return sum((line.tax_amount for line in self.lines), ZERO)

    @property
    def total_amount(self) -> Decimal:
        return self.net_amount + self.tax_amount + self.total_adjustment

    @property
    def total_paid(self) -> Decimal:
        return sum((a.amount for a in self.allocations), ZERO)

    @property
    def inverse_exchange_rate(self) -> Decimal:
        return (Decimal(1) / self.exchange_rate).quantize(Decimal("0.000001"))

    def in_base(self, amount: Decimal) -> Decimal:
        return (amount / self.exchange_rate).quantize(ZERO)

    @property
    def outstanding_amount(self) -> Decimal:
        if self.status in (Status.VOID, Status.DRAFT):
            return ZERO
        return self.total_amount - self.total_paid

    def settle(self, allocation: Allocation, now: datetime) -> None:
        """Money (a receipt or an allocation) taken off: PART_PAID, or PAID once none is left."""
        self.allocations.append(allocation)
        self.status = Status.PAID if self.outstanding_amount == ZERO else Status.PART_PAID
        self.updated_at = now


@dataclass(kw_only=True)
class SalesInvoice(SalesArtefact):
    invoice_number: str
    due_date: dt.date

    @property
    def number(self) -> str:
        return self.invoice_number


@dataclass(kw_only=True)
class SalesCreditNote(SalesArtefact):
    credit_note_number: str
    original_invoice_date: dt.date | None = None

    @property
    def number(self) -> str:
        return self.credit_note_number


@dataclass
class ContactAllocation:
    """Credit notes set against invoices of one customer; the amounts add up to zero."""

    id: str
    contact_id: str
    date: dt.date
    # (artefact collection, artefact id, signed amount: + on invoices, - on credit notes)
    artefacts: list[tuple[str, str, Decimal]]
    created_at: datetime


@dataclass
class ContactPayment:
    id: str
    contact_id: str
    bank_account_id: str
    date: dt.date
    total_amount: Decimal
    reference: str | None
    payment_method_id: str | None
    allocations: list[tuple[str, Decimal]]
    created_at: datetime


@dataclass
class Book:
    """One business's ledgers: everything a request with that ``X-Business`` can see."""

    business: Business
    tax_rates: dict[str, TaxRate] = field(default_factory=dict)
    ledger_accounts: dict[str, LedgerAccount] = field(default_factory=dict)
    bank_accounts: dict[str, BankAccount] = field(default_factory=dict)
    contacts: dict[str, Contact] = field(default_factory=dict)
    invoices: dict[str, SalesInvoice] = field(default_factory=dict)
    credit_notes: dict[str, SalesCreditNote] = field(default_factory=dict)
    payments: dict[str, ContactPayment] = field(default_factory=dict)
    allocations: dict[str, ContactAllocation] = field(default_factory=dict)
    invoice_sequence: int = 0
    credit_note_sequence: int = 0
    # (entity, idempotency_id) -> (status, body) of the first successful POST.
    idempotent: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    # A test instrument, 0 unless set: added to each new invoice's total (not its lines), for a
    # client that must notice totals differing from the lines it sent, and record, not refuse.
    total_adjustment: Decimal = ZERO

    def next_invoice_number(self) -> str:
        self.invoice_sequence += 1
        return f"SI-{self.invoice_sequence}"

    def next_credit_note_number(self) -> str:
        self.credit_note_sequence += 1
        return f"SCN-{self.credit_note_sequence}"
