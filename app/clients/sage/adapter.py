"""Sage Business Cloud Accounting as the bridge's accounting system."""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal

from app.clients.sage.client import SageClient
from app.clients.sage.schemas import (
    ContactIn,
    ContactPersonIn,
    InvoiceLineIn,
    InvoiceState,
    PostContact,
    PostSalesInvoice,
    SalesInvoice,
    SalesInvoiceIn,
)
from app.domain import (
    Customer,
    InvoiceDraft,
    InvoiceRef,
    InvoiceStatus,
    LedgerAccountInfo,
    TaxRate,
)

TAX_RATE_TTL_SECONDS = 600.0


class SageAccounting:
    name = "sage"

    def __init__(self, client: SageClient, *, invoice_url_template: str) -> None:
        self._client = client
        self._url_template = invoice_url_template
        self._tax_rates: dict[str, TaxRate] = {}
        self._tax_rates_at = 0.0

    async def find_customer(self, *, email: str) -> str | None:
        wanted = email.casefold()
        for contact in await self._client.find_contacts(email=email):
            emails = {contact.email, getattr(contact.main_contact_person, "email", None)}
            if contact.is_customer and wanted in {e.casefold() for e in emails if e}:
                return contact.id
        return None

    async def create_customer(self, *, customer: Customer, idempotency_key: str) -> str:
        person = ContactPersonIn(name=customer.name, email=customer.email, telephone=customer.phone)
        body = PostContact(
            contact=ContactIn(
                name=customer.name or customer.email or f"Kommo contact {customer.crm_id}",
                contact_type_ids=["CUSTOMER"],
                main_contact_person=person,
                idempotency_id=idempotency_key,
            )
        )
        return (await self._client.create_contact(body=body)).id

    async def find_invoice(self, *, reference: str) -> InvoiceRef | None:
        for invoice in await self._client.find_sales_invoices(search=reference):
            if invoice.reference == reference:
                return self._ref(invoice)
        return None

    async def create_invoice(self, *, draft: InvoiceDraft) -> InvoiceRef:
        lines = [
            InvoiceLineIn(
                description=line.description,
                ledger_account_id=line.ledger_account_id,
                quantity=line.quantity,
                unit_price=line.unit_price,
                discount_amount=line.discount_amount or None,
                tax_rate_id=line.tax_rate_id,
                tax_amount=line.tax_amount,
            )
            for line in draft.lines
        ]
        body = PostSalesInvoice(
            sales_invoice=SalesInvoiceIn(
                contact_id=draft.contact_id,
                date=draft.date,
                due_date=draft.due_date,
                reference=draft.reference,
                notes=draft.notes,
                invoice_lines=lines,
                idempotency_id=draft.idempotency_key,
            )
        )
        return self._ref(await self._client.create_sales_invoice(body=body))

    async def changed_invoices(self, *, since: datetime) -> list[InvoiceStatus]:
        """Every invoice changed at or after `since`, and every one deleted after it."""
        changed = await self._client.changed_sales_invoices(since=since)
        deleted = await self._client.deleted_sales_invoices(since=since)
        return [_status(i, deleted=False) for i in changed if i.status and i.updated_at] + [
            _status(i, deleted=True) for i in deleted if i.deleted_at or i.updated_at
        ]

    async def ledger_account_ids(self) -> set[str]:
        return {a.id for a in await self.sales_ledger_accounts()}

    async def sales_ledger_accounts(self) -> list[LedgerAccountInfo]:
        return [
            LedgerAccountInfo(
                id=a.id,
                name=a.name or a.displayed_as or a.id,
                code=str(a.nominal_code) if a.nominal_code is not None else None,
            )
            for a in await self._client.sales_ledger_accounts()
        ]

    async def tax_rate_names(self) -> dict[str, str]:
        return {r.id: r.name or r.displayed_as or r.id for r in await self._client.list_tax_rates()}

    async def status_ids(self) -> set[str]:
        return await self._client.artefact_status_ids()

    async def tax_rates(self) -> dict[str, TaxRate]:
        if time.monotonic() - self._tax_rates_at > TAX_RATE_TTL_SECONDS or not self._tax_rates:
            rates = await self._client.list_tax_rates()
            self._tax_rates = {
                r.id: TaxRate(id=r.id, percentage=r.percentage or Decimal(0)) for r in rates
            }
            self._tax_rates_at = time.monotonic()
        return self._tax_rates

    def _ref(self, invoice: SalesInvoice) -> InvoiceRef:
        page = next((link.href for link in invoice.links if link.rel == "alternate"), None)
        return InvoiceRef(
            id=invoice.id,
            number=invoice.invoice_number or invoice.displayed_as,
            url=page or self._url_template.format(id=invoice.id),
            reference=invoice.reference,
            total_amount=invoice.total_amount,
        )


def _status(invoice: InvoiceState, *, deleted: bool) -> InvoiceStatus:
    when = (invoice.deleted_at if deleted else None) or invoice.updated_at
    assert when is not None
    return InvoiceStatus(
        invoice_id=invoice.id,
        status_id="VOID" if deleted else (invoice.status.id if invoice.status else ""),
        updated_at=when,
        due_date=invoice.due_date,
        outstanding_amount=invoice.outstanding_amount,
        deleted=deleted,
    )
