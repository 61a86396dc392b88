"""Sage Business Cloud Accounting v3.1 shapes the bridge uses (names as in Sage's Swagger spec)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(_In, Generic[T]):
    """Sage's list envelope (the spec models lists as bare arrays; the live API does not)."""

    items: list[T] = Field(default_factory=list, alias="$items")
    total: int | None = Field(default=None, alias="$total")
    next: str | None = Field(default=None, alias="$next")


class Base(_In):
    id: str
    displayed_as: str | None = None


class Link(_In):
    href: str
    rel: str | None = None
    type: str | None = None


class ContactPerson(_In):
    email: str | None = None


class Contact(Base):
    name: str | None = None
    email: str | None = None
    contact_types: list[Base] = Field(default_factory=list)
    main_contact_person: ContactPerson | None = None

    @property
    def is_customer(self) -> bool:
        return any(t.id == "CUSTOMER" for t in self.contact_types)


class TaxRate(Base):
    name: str | None = None
    percentage: Decimal | None = None


class LedgerAccount(Base):
    name: str | None = None
    nominal_code: int | None = None


class SalesInvoice(Base):
    invoice_number: str | None = None
    reference: str | None = None
    total_amount: Decimal | None = None
    status: Base | None = None
    links: list[Link] = Field(default_factory=list)
    updated_at: str | None = None


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
    due_date: dt.date
    reference: str
    notes: str | None = None
    invoice_lines: list[InvoiceLineIn]
    # Sage's idempotency key: "a random 32 character hyphenless GUID", in the entity namespace.
    idempotency_id: str


class PostSalesInvoice(_Out):
    sales_invoice: SalesInvoiceIn


class InvoiceState(Base):
    """A sales invoice as the status poller reads it (`attributes=all`)."""

    status: Base | None = None
    due_date: dt.date | None = None
    outstanding_amount: Decimal | None = None
    updated_at: dt.datetime | None = None
    deleted_at: dt.datetime | None = None
