"""Sage Business Cloud Accounting as the bridge's accounting system."""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal

from app.clients.sage.client import SageClient
from app.clients.sage.schemas import (
    Contact,
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
    BusinessCurrency,
    Customer,
    CustomerRef,
    InvoiceDraft,
    InvoiceRef,
    InvoiceStatus,
    LedgerAccountInfo,
    TaxRate,
)

TAX_RATE_TTL_SECONDS = 600.0
SETTINGS_TTL_SECONDS = 600.0


class SageAccounting:
    name = "sage"

    def __init__(self, client: SageClient, *, invoice_url_template: str) -> None:
        self._client = client
        self._url_template = invoice_url_template
        self._tax_rates: dict[str, TaxRate] = {}
        self._tax_rates_at = 0.0
        self._currency: BusinessCurrency | None = None
        self._currency_at = 0.0

    async def find_customer(self, *, email: str) -> CustomerRef | None:
        wanted = email.casefold()
        for contact in await self._client.find_contacts(email=email):
            if contact.is_customer and wanted in contact.emails:
                return _customer(contact)
        return None

    async def create_customer(
        self, *, customer: Customer, idempotency_key: str, currency: str | None = None
    ) -> CustomerRef:
        person = ContactPersonIn(name=customer.name, email=customer.email, telephone=customer.phone)
        body = PostContact(
            contact=ContactIn(
                name=customer.name or customer.email or f"Kommo contact {customer.crm_id}",
                contact_type_ids=["CUSTOMER"],
                main_contact_person=person,
                currency_id=currency,
                idempotency_id=idempotency_key,
            )
        )
        created = _customer(await self._client.create_contact(body=body))
        return created if created.currency else CustomerRef(created.id, currency)

    async def business_currency(self) -> BusinessCurrency:
        if self._currency is None or time.monotonic() - self._currency_at > SETTINGS_TTL_SECONDS:
            settings = await self._client.financial_settings()
            self._currency = BusinessCurrency(
                base=settings.base_currency.id.upper(),
                multi_currency=bool(settings.multi_currency_enabled),
            )
            self._currency_at = time.monotonic()
        return self._currency

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
                currency_id=draft.currency,
                invoice_lines=lines,
                idempotency_id=draft.idempotency_key,
            )
        )
        return self._ref(await self._client.create_sales_invoice(body=body))

    async def changed_invoices(self, *, since: datetime) -> list[InvoiceStatus]:
        """Every invoice changed at or after `since`, and every one deleted after it."""
        changed = await self._client.changed_sales_invoices(since=since)
        deleted = await self._client.deleted_sales_invoices(since=since)
        # A deletion listed with base attributes only (no deleted_at) happened after `since`.
        return [
            _status(i, deleted=False) for i in changed if i.status and i.status.id and i.updated_at
        ] + [_status(i, deleted=True, fallback=since) for i in deleted]

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
        links = invoice.links or []
        page = next((link.href for link in links if link.rel == "alternate" and link.href), None)
        return InvoiceRef(
            id=invoice.id,
            number=invoice.invoice_number or invoice.displayed_as,
            url=page or self._url_template.format(id=invoice.id),
            reference=invoice.reference,
            total_amount=invoice.total_amount,
            net_amount=invoice.net_amount,
            tax_amount=invoice.tax_amount,
            due_date=invoice.due_date,
            currency=_code(invoice.currency.id if invoice.currency else None),
        )


def _customer(contact: Contact) -> CustomerRef:
    return CustomerRef(contact.id, _code(contact.currency.id if contact.currency else None))


def _code(currency_id: str | None) -> str | None:
    return currency_id.upper() if currency_id else None


def _status(
    invoice: InvoiceState, *, deleted: bool, fallback: datetime | None = None
) -> InvoiceStatus:
    when = (invoice.deleted_at if deleted else None) or invoice.updated_at or fallback
    assert when is not None
    return InvoiceStatus(
        invoice_id=invoice.id,
        status_id="VOID" if deleted else (invoice.status.id or "" if invoice.status else ""),
        updated_at=when,
        due_date=invoice.due_date,
        outstanding_amount=invoice.outstanding_amount,
        deleted=deleted,
    )
