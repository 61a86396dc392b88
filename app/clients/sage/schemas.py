"""Sage Business Cloud Accounting v3.1 shapes the bridge uses (names as in Sage's Swagger spec).

Reading is tolerant (the documented bodies are in tests/contracts/sage/): every attribute the
bridge does not strictly need may be null or missing, unknown keys are ignored, and numbers may
come as JSON numbers or as decimal strings ("294.0", as Sage's invoicing guide shows them). What
the bridge needs (an entity's `id`, a list's `$items`, the business's base currency) fails as a
`SageResponseError` naming the entity and the field, never as a pydantic dump.

Writing is strict (closed models): what is sent is checked against Sage's spec in the tests.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.clients.sage.errors import SageResponseError

T = TypeVar("T")
M = TypeVar("M", bound="_In")


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    # How an error names this shape ("sales invoice", "contact list", ...).
    entity: ClassVar[str] = "response"


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ref(_In):
    """A nested reference `{id, displayed_as, $path}`; any part of it may be missing."""

    id: str | None = None
    displayed_as: str | None = None


class Base(_In):
    """A top-level record: its `id` is what the bridge keeps, so it is required."""

    entity: ClassVar[str] = "record"

    id: str
    displayed_as: str | None = None


class Page(_In, Generic[T]):
    """Sage's list envelope (the spec models lists as bare arrays; the live API does not).
    `$items` is required: an answer without it must not read as "nothing found"."""

    items: list[T] = Field(alias="$items")
    total: int | None = Field(default=None, alias="$total")
    next: str | None = Field(default=None, alias="$next")


class Link(_In):
    href: str | None = None
    rel: str | None = None
    type: str | None = None


class ArtefactRef(Ref):
    """A reference whose `$path` says what it is: `/sales_credit_notes/…`, `/sales_invoices/…`."""

    path: str | None = Field(default=None, alias="$path")


class PaymentAllocation(_In):
    """One item of an artefact's `payments_allocations` (the spec's PaymentAllocation): a receipt
    names its `contact_payment`; an allocation its `contact_allocation` and the `artefact` on the
    other side (a credit note, for an invoice)."""

    date: dt.date | None = None
    # The spec says a string; an object {id, …} is read too.
    type: str | Ref | None = None
    amount: Decimal | None = None
    contact_payment: Ref | None = None
    contact_allocation: Ref | None = None
    artefact: ArtefactRef | None = None
    displayed_as: str | None = None


class ArtefactLine(_In):
    """A line of an invoice or credit note as Sage shows it."""

    description: str | None = None
    ledger_account: Ref | None = None
    tax_rate: Ref | None = None
    quantity: Decimal | None = None
    unit_price: Decimal | None = None
    unit_price_includes_tax: bool | None = None
    discount_amount: Decimal | None = None
    net_amount: Decimal | None = None
    tax_amount: Decimal | None = None
    total_amount: Decimal | None = None


class Settlement(_In):
    """What has been paid or allocated on an artefact, and what is left."""

    total_paid: Decimal | None = None
    outstanding_amount: Decimal | None = None
    last_paid: dt.date | None = None
    payments_allocations: list[PaymentAllocation] | None = None


class ContactPerson(_In):
    email: str | None = None


class Contact(Base):
    entity: ClassVar[str] = "contact"

    name: str | None = None
    email: str | None = None
    contact_types: list[Ref] | None = None
    main_contact_person: ContactPerson | None = None
    # "The currency that the contact trades in" (not on Start); null = the business's own.
    currency: Ref | None = None
    credit_days: int | None = None

    @property
    def is_customer(self) -> bool:
        return any(t.id == "CUSTOMER" for t in self.contact_types or [])

    @property
    def emails(self) -> set[str]:
        person = self.main_contact_person.email if self.main_contact_person else None
        return {e.casefold() for e in (self.email, person) if e}


class TaxRate(Base):
    entity: ClassVar[str] = "tax rate"

    name: str | None = None
    percentage: Decimal | None = None


class LedgerAccount(Base):
    entity: ClassVar[str] = "ledger account"

    name: str | None = None
    nominal_code: int | None = None


class SalesInvoice(Base, Settlement):
    entity: ClassVar[str] = "sales invoice"

    invoice_number: str | None = None
    reference: str | None = None
    date: dt.date | None = None
    due_date: dt.date | None = None
    net_amount: Decimal | None = None
    tax_amount: Decimal | None = None
    total_amount: Decimal | None = None
    currency: Ref | None = None
    status: Ref | None = None
    links: list[Link] | None = None
    updated_at: dt.datetime | None = None
    contact: Ref | None = None
    void_reason: str | None = None
    invoice_lines: list[ArtefactLine] | None = None


class InvoiceState(Base, Settlement):
    """A sales invoice as the status poller reads it (`attributes=all`, or `deleted_since`)."""

    entity: ClassVar[str] = "sales invoice"

    status: Ref | None = None
    due_date: dt.date | None = None
    total_amount: Decimal | None = None
    updated_at: dt.datetime | None = None
    deleted_at: dt.datetime | None = None


class SalesCreditNote(Base):
    entity: ClassVar[str] = "sales credit note"

    credit_note_number: str | None = None
    reference: str | None = None
    total_amount: Decimal | None = None
    outstanding_amount: Decimal | None = None
    status: Ref | None = None
    contact: Ref | None = None


class ContactAllocation(Base):
    entity: ClassVar[str] = "contact allocation"


class CurrencyRef(_In):
    id: str


class FinancialSettings(_In):
    entity: ClassVar[str] = "financial settings"

    base_currency: CurrencyRef
    multi_currency_enabled: bool | None = None
    use_live_exchange_rates: bool | None = None


def read(model: type[M], data: Any, *, entity: str | None = None) -> M:
    """Validate `data` as `model`; a failure names the entity and the field, not the value."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SageResponseError(entity or model.entity, _first_problem(exc)) from None


def read_page(model: type[M], data: Any) -> Page[M]:
    page: type[Page[M]] = Page[model]  # type: ignore[valid-type]
    return read(page, data, entity=f"{model.entity} list")


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "the body"
    if error["type"] == "missing":
        return f"{field} is missing"
    if error["type"] in ("model_type", "dict_type", "list_type") or error.get("input") is None:
        return f"{field} is null or not of the documented type"
    return f"{field} is not a valid value ({error['msg'].lower()})"


class ContactPersonIn(_Out):
    name: str | None = None
    email: str | None = None
    telephone: str | None = None
    is_main_contact: bool = True


class ContactIn(_Out):
    name: str
    contact_type_ids: list[str]
    reference: str | None = None
    main_contact_person: ContactPersonIn | None = None
    currency_id: str | None = None
    idempotency_id: str | None = None


class PostContact(_Out):
    contact: ContactIn


class InvoiceLineIn(_Out):
    description: str
    ledger_account_id: str
    quantity: Decimal
    unit_price: Decimal
    discount_amount: Decimal | None = None
    tax_rate_id: str | None = None
    tax_amount: Decimal


class SalesInvoiceIn(_Out):
    contact_id: str
    date: dt.date
    # Omitted by default: Sage then uses the contact's credit_days, else the business default.
    due_date: dt.date | None = None
    reference: str
    notes: str | None = None
    currency_id: str | None = None
    invoice_lines: list[InvoiceLineIn]
    # Sage's idempotency key: "a random 32 character hyphenless GUID", in the entity namespace.
    idempotency_id: str


class PostSalesInvoice(_Out):
    sales_invoice: SalesInvoiceIn


class SalesCreditNoteIn(_Out):
    """A standalone credit note (the API names no original invoice): an allocation sets it
    against the invoice."""

    contact_id: str
    date: dt.date
    original_invoice_date: dt.date | None = None
    reference: str
    notes: str | None = None
    currency_id: str | None = None
    credit_note_lines: list[InvoiceLineIn]
    idempotency_id: str


class PostSalesCreditNote(_Out):
    sales_credit_note: SalesCreditNoteIn


class AllocatedArtefactIn(_Out):
    artefact_id: str
    amount: Decimal


class ContactAllocationIn(_Out):
    """Sage's invoicing guide, 'From Unpaid To Part Paid Or Paid': CUSTOMER_ALLOCATION, the
    invoice positive, the credit note negative, adding up to zero."""

    transaction_type_id: str = "CUSTOMER_ALLOCATION"
    contact_id: str
    date: dt.date
    allocated_artefacts: list[AllocatedArtefactIn]
    idempotency_id: str


class PostContactAllocation(_Out):
    contact_allocation: ContactAllocationIn
