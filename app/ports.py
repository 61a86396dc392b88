"""The two small interfaces the invoice logic talks to. A new CRM or Sage product is a new adapter.

Adapters raise `app.errors.UpstreamTransientError` or `UpstreamPermanentError` for what the API
did, and `app.errors.InvoiceBlocked` for what the deal's own data makes impossible (a product
deleted or without a price, an answer that cannot be read), nothing else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from app.domain import (
    BusinessCurrency,
    CrmTask,
    Customer,
    CustomerRef,
    Deal,
    DealContents,
    DealInStage,
    InvoiceDraft,
    InvoiceRef,
    InvoiceStatus,
    TaxRate,
)


class DealNotFound(Exception):
    """The CRM no longer has the deal (deleted or never existed)."""


class Crm(Protocol):
    name: str

    async def get_deal(self, *, deal_id: str) -> Deal:
        """The deal's header as it is now (its stage, its owner), and nothing more: a deal
        that has left the invoice stage is skipped whatever else is wrong with it. Raises
        `DealNotFound` when the CRM no longer has it."""
        ...

    async def deal_contents(self, *, deal: Deal) -> DealContents:
        """The customer, the product lines fully described (anything else linked to the deal
        is left out and noted in the sync log), and the currency of its amounts when the CRM
        knows it. A product the deal still links but that is deleted or unpriced raises
        `InvoiceBlocked` naming it."""
        ...

    async def write_invoice(
        self, *, deal_id: str, invoice: InvoiceRef, payment_status: str | None = None
    ) -> None:
        """Show the invoice number and link (and its first payment status) on the deal."""
        ...

    async def create_task(
        self, *, deal_id: str, responsible_user_id: str | None, text: str, due: datetime
    ) -> str:
        """Open a follow-up for the deal's manager; returns the CRM task id."""
        ...

    async def get_task(self, *, task_id: str) -> CrmTask | None:
        """A task as the CRM holds it now; None when it no longer exists."""
        ...

    async def update_task(self, *, task_id: str, text: str) -> None:
        """Give an open task a new text."""
        ...

    async def complete_tasks(self, *, task_ids: list[str], result: str) -> None:
        """Mark the tasks done with this result text (in one request where the CRM allows)."""
        ...

    async def write_payment_statuses(self, *, updates: list[tuple[str, str]]) -> None:
        """Show each (deal id, payment status) on its deal; batched where the CRM allows."""
        ...

    async def deals_in_stage(
        self, *, pipeline_id: str, status_id: str, updated_since: int
    ) -> list[DealInStage]:
        """Deals now in the stage, changed at or after `updated_since` (unix seconds)."""
        ...

    async def webhook_disabled(self, *, destination_part: str) -> bool | None: ...

    def deal_url(self, *, deal_id: str) -> str: ...


class Accounting(Protocol):
    name: str

    async def find_customer(self, *, email: str) -> CustomerRef | None:
        """An existing customer contact with this email (and its currency), if any."""
        ...

    async def create_customer(
        self, *, customer: Customer, idempotency_key: str, currency: str | None = None
    ) -> CustomerRef:
        """A new customer; `currency` (ISO 4217) only when it is not the business's own."""
        ...

    async def business_currency(self) -> BusinessCurrency:
        """The base currency and whether invoices may be raised in others (cached)."""
        ...

    async def find_invoice(self, *, reference: str) -> InvoiceRef | None:
        """An invoice already raised with this reference (a previous attempt that timed out)."""
        ...

    async def create_invoice(self, *, draft: InvoiceDraft) -> InvoiceRef: ...

    async def tax_rates(self) -> dict[str, TaxRate]: ...

    async def changed_invoices(self, *, since: datetime) -> list[InvoiceStatus]:
        """Invoices changed at or after `since` (inclusive), deleted ones included."""
        ...

    async def status_ids(self) -> set[str]: ...

    async def ledger_account_ids(self) -> set[str]:
        """Ledger accounts an invoice line may be posted to."""
        ...
