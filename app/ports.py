"""The two small interfaces the invoice logic talks to. A new CRM or Sage product is a new adapter.

Adapters raise `app.errors.UpstreamTransientError` or `UpstreamPermanentError` for what the API
did, and `app.errors.InvoiceBlocked` for what the deal's own data makes impossible (a product
deleted or without a price, an answer that cannot be read), nothing else.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from app.domain import (
    BusinessCurrency,
    CreditNoteDraft,
    CreditNoteRef,
    CrmTask,
    Customer,
    CustomerRef,
    Deal,
    DealContents,
    DealInStage,
    InvoiceDetail,
    InvoiceDraft,
    InvoiceRef,
    InvoiceStatus,
    PaymentView,
    TaxRate,
)


class DealNotFound(Exception):
    """The CRM no longer has the deal (deleted or never existed)."""


class Crm(Protocol):
    name: str
    # The stage a lost deal is in (Kommo: 143, in every pipeline).
    lost_status_id: str

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
        self,
        *,
        deal_id: str,
        invoice: InvoiceRef,
        payment_status: str | None = None,
        shown_number: str | None = None,
    ) -> None:
        """Show the invoice number (or `shown_number`, e.g. naming the invoice it replaces) and
        link, and its first payment status, on the deal."""
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

    async def write_payments(self, *, updates: list[tuple[str, PaymentView]]) -> None:
        """Show each (deal id, what changed about its invoice's money) on its deal; batched
        where the CRM allows. Fields the CRM has no place for are left out."""
        ...

    async def deals_in_stage(
        self, *, pipeline_id: str, status_id: str, updated_since: int
    ) -> list[DealInStage]:
        """Deals now in the stage, changed at or after `updated_since` (unix seconds)."""
        ...

    async def deals_in_stages(
        self, *, pipeline_id: str, status_ids: list[str], updated_since: int
    ) -> list[DealInStage]:
        """Deals now in any of the stages, changed at or after `updated_since`."""
        ...

    async def stages_from(self, *, pipeline_id: str, status_id: str) -> list[str]:
        """The stage and those after it in the pipeline, won included, lost left out."""
        ...

    async def existing_deals(self, *, deal_ids: list[str]) -> set[str]:
        """Which of these deals the CRM still has (not deleted)."""
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

    async def get_invoice(self, *, invoice_id: str) -> InvoiceDetail | None:
        """The invoice as it is now; None when it no longer exists (deleted)."""
        ...

    async def void_invoice(self, *, invoice_id: str, reason: str) -> None:
        """Cancel an invoice nothing has been paid or allocated on, saying why."""
        ...

    async def find_credit_note(self, *, reference: str) -> CreditNoteRef | None:
        """A credit note already raised with this reference (an attempt that timed out)."""
        ...

    async def get_credit_note(self, *, credit_note_id: str) -> CreditNoteRef | None: ...

    async def create_credit_note(self, *, draft: CreditNoteDraft) -> CreditNoteRef: ...

    async def allocate_credit_note(
        self,
        *,
        contact_id: str,
        invoice_id: str,
        credit_note_id: str,
        amount: Decimal,
        idempotency_key: str,
    ) -> None:
        """Set the credit note against the invoice, `amount` on each side."""
        ...

    async def referenced_invoices(self, *, prefix: str, since: date) -> list[InvoiceRef]:
        """Invoices dated on or after `since` whose reference starts with `prefix` (with
        their status)."""
        ...

    async def tax_rates(self) -> dict[str, TaxRate]: ...

    async def changed_invoices(self, *, since: datetime) -> list[InvoiceStatus]:
        """Invoices changed at or after `since` (inclusive), deleted ones included."""
        ...

    async def status_ids(self) -> set[str]: ...

    async def ledger_account_ids(self) -> set[str]:
        """Ledger accounts an invoice line may be posted to."""
        ...
