"""Sage Business Cloud Accounting as the bridge's accounting system."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from async_lru import alru_cache

from app.clients.sage.client import SageClient
from app.clients.sage.schemas import (
    AllocatedArtefactIn,
    ArtefactLine,
    Contact,
    ContactAllocationIn,
    ContactIn,
    ContactPersonIn,
    InvoiceLineIn,
    InvoiceState,
    PaymentAllocation,
    PostContact,
    PostContactAllocation,
    PostSalesCreditNote,
    PostSalesInvoice,
    SalesCreditNote,
    SalesCreditNoteIn,
    SalesInvoice,
    SalesInvoiceIn,
    Settlement,
)
from app.domain import (
    BusinessCurrency,
    CreditNoteDraft,
    CreditNoteRef,
    Customer,
    CustomerRef,
    InvoiceDetail,
    InvoiceDraft,
    InvoiceLine,
    InvoiceMoney,
    InvoiceRef,
    InvoiceStatus,
    LedgerAccountInfo,
    TaxRate,
)

# Both change rarely (a new VAT rate, turning multi-currency on): a burst of deals reads each
# once, which also keeps a burst inside Sage's first minute of requests (docs/PERFORMANCE.md).
TAX_RATE_TTL_SECONDS = 600.0
SETTINGS_TTL_SECONDS = 600.0


class SageAccounting:
    name = "sage"

    def __init__(self, client: SageClient, *, invoice_url_template: str) -> None:
        self._client = client
        self._url_template = invoice_url_template
        # Per adapter (one per process and event loop). Jobs asking at once share one read, in
        # a task none of them owns: a job cancelled meanwhile does not fail the others'. A
        # failed read is not kept; the next job asks again.
        self.business_currency = alru_cache(maxsize=1, ttl=SETTINGS_TTL_SECONDS)(
            self._read_business_currency
        )
        self.tax_rates = alru_cache(maxsize=1, ttl=TAX_RATE_TTL_SECONDS)(self._read_tax_rates)

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

    async def _read_business_currency(self) -> BusinessCurrency:
        settings = await self._client.financial_settings()
        return BusinessCurrency(
            base=settings.base_currency.id.upper(),
            multi_currency=bool(settings.multi_currency_enabled),
        )

    async def find_invoice(self, *, reference: str) -> InvoiceRef | None:
        for invoice in await self._client.find_sales_invoices(search=reference):
            if invoice.reference == reference:
                return self._ref(invoice)
        return None

    async def create_invoice(self, *, draft: InvoiceDraft) -> InvoiceRef:
        lines = _lines_out(draft.lines)
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

    async def get_invoice(self, *, invoice_id: str) -> InvoiceDetail | None:
        invoice = await self._client.get_sales_invoice(invoice_id=invoice_id)
        return None if invoice is None else _detail(invoice)

    async def void_invoice(self, *, invoice_id: str, reason: str) -> None:
        await self._client.void_sales_invoice(invoice_id=invoice_id, void_reason=reason)

    async def referenced_invoices(self, *, prefix: str, since: date) -> list[InvoiceRef]:
        found = await self._client.referenced_sales_invoices(search=prefix, from_date=since)
        return [self._ref(i) for i in found if (i.reference or "").startswith(prefix)]

    async def find_credit_note(self, *, reference: str) -> CreditNoteRef | None:
        for note in await self._client.find_sales_credit_notes(search=reference):
            if note.reference == reference:
                return _credit_note(note)
        return None

    async def get_credit_note(self, *, credit_note_id: str) -> CreditNoteRef | None:
        note = await self._client.get_sales_credit_note(credit_note_id=credit_note_id)
        return None if note is None else _credit_note(note)

    async def create_credit_note(self, *, draft: CreditNoteDraft) -> CreditNoteRef:
        body = PostSalesCreditNote(
            sales_credit_note=SalesCreditNoteIn(
                contact_id=draft.contact_id,
                date=draft.date,
                original_invoice_date=draft.original_invoice_date,
                reference=draft.reference,
                notes=draft.notes,
                currency_id=draft.currency,
                credit_note_lines=_lines_out(draft.lines),
                idempotency_id=draft.idempotency_key,
            )
        )
        return _credit_note(await self._client.create_sales_credit_note(body=body))

    async def allocate_credit_note(
        self,
        *,
        contact_id: str,
        invoice_id: str,
        credit_note_id: str,
        amount: Decimal,
        idempotency_key: str,
    ) -> None:
        """Sage's invoicing guide: the invoice positive, the credit note negative."""
        body = PostContactAllocation(
            contact_allocation=ContactAllocationIn(
                contact_id=contact_id,
                date=date.today(),
                allocated_artefacts=[
                    AllocatedArtefactIn(artefact_id=invoice_id, amount=amount),
                    AllocatedArtefactIn(artefact_id=credit_note_id, amount=-amount),
                ],
                idempotency_id=idempotency_key,
            )
        )
        await self._client.create_contact_allocation(body=body)

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

    async def _read_tax_rates(self) -> dict[str, TaxRate]:
        rates = await self._client.list_tax_rates()
        return {r.id: TaxRate(id=r.id, percentage=r.percentage or Decimal(0)) for r in rates}

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
            status_id=invoice.status.id if invoice.status else None,
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
        money=None if deleted else money(invoice, invoice.total_amount),
    )


def money(settlement: Settlement, total: Decimal | None) -> InvoiceMoney:
    """Paid (receipts) and credited (allocations: credit notes set against the invoice), split
    from `payments_allocations`; when Sage did not list them, everything paid counts as paid."""
    entries = settlement.payments_allocations
    if entries is None:
        return InvoiceMoney(
            total=total,
            paid=settlement.total_paid,
            outstanding=settlement.outstanding_amount,
            last_payment=settlement.last_paid,
        )
    credits = [e for e in entries if _is_allocation(e)]
    receipts = [e for e in entries if not _is_allocation(e)]
    dates = [e.date for e in receipts if e.date]
    return InvoiceMoney(
        total=total,
        paid=_total(receipts),
        credited=_total(credits),
        outstanding=settlement.outstanding_amount,
        last_payment=max(dates) if dates else settlement.last_paid,
        credit_notes=tuple(n for e in credits if (n := _credit_note_number(e))),
    )


def _total(entries: list[PaymentAllocation]) -> Decimal:
    return sum((abs(e.amount) for e in entries if e.amount is not None), Decimal(0))


def _is_allocation(entry: PaymentAllocation) -> bool:
    kind = entry.type if isinstance(entry.type, str) else (entry.type.id if entry.type else "")
    return entry.contact_allocation is not None or "ALLOCATION" in (kind or "").upper()


def _credit_note_number(entry: PaymentAllocation) -> str | None:
    artefact = entry.artefact
    if artefact is not None and (artefact.path or "").startswith("/sales_credit_notes/"):
        return artefact.displayed_as or artefact.id
    return None


def _detail(invoice: SalesInvoice) -> InvoiceDetail:
    return InvoiceDetail(
        id=invoice.id,
        number=invoice.invoice_number or invoice.displayed_as,
        status_id=invoice.status.id or "" if invoice.status else "",
        contact_id=invoice.contact.id if invoice.contact else None,
        date=invoice.date,
        currency=_code(invoice.currency.id if invoice.currency else None),
        lines=tuple(_line(line) for line in invoice.invoice_lines or []),
        money=money(invoice, invoice.total_amount),
    )


def _line(line: ArtefactLine) -> InvoiceLine:
    return InvoiceLine(
        description=line.description or "",
        ledger_account_id=line.ledger_account.id or "" if line.ledger_account else "",
        tax_rate_id=line.tax_rate.id if line.tax_rate else None,
        quantity=line.quantity or Decimal(0),
        unit_price=line.unit_price or Decimal(0),
        discount_amount=line.discount_amount or Decimal(0),
        net_amount=line.net_amount or Decimal(0),
        tax_amount=line.tax_amount or Decimal(0),
    )


def _lines_out(lines: tuple[InvoiceLine, ...]) -> list[InvoiceLineIn]:
    return [
        InvoiceLineIn(
            description=line.description,
            ledger_account_id=line.ledger_account_id,
            quantity=line.quantity,
            unit_price=line.unit_price,
            discount_amount=line.discount_amount or None,
            tax_rate_id=line.tax_rate_id,
            tax_amount=line.tax_amount,
        )
        for line in lines
    ]


def _credit_note(note: SalesCreditNote) -> CreditNoteRef:
    return CreditNoteRef(
        id=note.id,
        number=note.credit_note_number or note.displayed_as,
        total_amount=note.total_amount,
        outstanding_amount=note.outstanding_amount,
    )
