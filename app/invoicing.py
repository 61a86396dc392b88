"""Raising one invoice for one deal: the business logic the worker job calls.

Every step can run again after a crash, a timeout or a duplicate delivery without a second
invoice: the local `deal_invoices` row (unique per deal) is written *before* the accounting POST,
a row left in POSTING means "look the invoice up by reference before creating again", and the POST
carries a deterministic idempotency key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app import lineage
from app.bridge import Bridge
from app.domain import (
    BusinessCurrency,
    Customer,
    CustomerRef,
    Deal,
    InvoiceDraft,
    InvoiceLine,
    InvoiceRef,
    LineItem,
    TaxRate,
)
from app.errors import InvoiceBlocked, UpstreamPermanentError, UpstreamTransientError
from app.invoice_currency import check_customer, invoice_currency
from app.mapping import Mapped
from app.metrics import INVOICE_TOTALS_DIFFER, INVOICES_CREATED
from app.models import ContactLink, DealInvoice, InvoiceRecordState
from app.money import line_amounts, totals_difference
from app.payment_status import UNPAID
from app.ports import DealNotFound
from app.repositories import ContactLinkRepository, InvoiceRepository

log = structlog.get_logger(__name__)
AGAIN = "then move the deal to the invoice stage again"


@dataclass
class InvoiceJob:
    """One deal to invoice, as the inbox hands it over. `responsible_user_id` becomes whoever
    owns the deal now, once it is read: any task goes to them, not to the owner at the hook."""

    event_id: int
    account_id: str
    deal_id: str
    responsible_user_id: str | None


@dataclass(frozen=True)
class Invoiced:
    invoice: InvoiceRef
    detail: str


@dataclass(frozen=True)
class Skipped:
    """Nothing to invoice: the deal is gone, or no longer in the invoice stage."""

    detail: str


class WriteBackRefused(UpstreamPermanentError):
    """The invoice exists in the accounting system; only showing it on the deal failed."""

    def __init__(self, invoice: InvoiceRef, cause: UpstreamPermanentError) -> None:
        super().__init__(cause.upstream, cause.detail, status=cause.status)
        self.invoice = invoice


def idempotency_key(*parts: str) -> str:
    """32 lowercase hex characters, the same for the same deal every time."""
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:32]


def invoice_reference(crm: str, deal_id: str, revision: int = 1) -> str:
    """`KOMMO-123`; a reissued invoice names its revision: `KOMMO-123-R2`."""
    base = f"{crm.upper()}-{deal_id}"
    return base if revision == 1 else f"{base}-R{revision}"


async def raise_invoice(
    session: AsyncSession, bridge: Bridge, job: InvoiceJob, *, replacing: str | None = None
) -> Invoiced | Skipped:
    """The deal's invoice, raised once and shown on the deal (`replacing`: what the deal's
    number field also says, for an invoice that replaces a credited one). What stops it is
    raised: `UnmappedLines`, `InvoiceBlocked`, `WriteBackRefused`, or an upstream error."""
    invoices = InvoiceRepository(session)
    record = await invoices.get(crm=bridge.crm.name, account_id=job.account_id, deal_id=job.deal_id)
    if record is not None and record.state == InvoiceRecordState.WRITTEN_BACK:
        lineage.note("invoice", "skipped", reason="already invoiced", invoice_id=record.invoice_id)
        return Invoiced(_ref(record), f"already invoiced as {record.invoice_number}")
    try:
        deal = await bridge.crm.get_deal(deal_id=job.deal_id)
    except DealNotFound:
        return Skipped("the deal no longer exists in the CRM")
    job.responsible_user_id = deal.responsible_user_id or job.responsible_user_id
    invoice = await _existing_invoice(bridge, record)
    if invoice is None:
        # A reissue's new invoice is owed whatever the stage: its credit note is already raised.
        if (record is None or record.revision == 1) and not in_invoice_stage(bridge, deal):
            return Skipped(
                f"the deal is now in pipeline {deal.pipeline_id} stage {deal.status_id}, "
                "not the invoice stage"
            )
        invoice = await _create_invoice(session, bridge, job, deal, record)
    record = await invoices.get(crm=bridge.crm.name, account_id=deal.account_id, deal_id=deal.id)
    assert record is not None
    shown = f"{invoice.number or invoice.id} ({replacing})" if replacing else None
    await _write_back(bridge, deal, invoice, record, shown)
    return Invoiced(invoice, f"invoice {invoice.number} ({invoice.id})")


def in_invoice_stage(bridge: Bridge, deal: Deal) -> bool:
    cfg = bridge.config
    return (deal.pipeline_id, deal.status_id) == (cfg.trigger_pipeline_id, cfg.trigger_status_id)


def _ref(record: DealInvoice) -> InvoiceRef:
    assert record.invoice_id is not None
    return InvoiceRef(record.invoice_id, record.invoice_number, record.invoice_url)


def unmapped_products(exc: UnmappedLines) -> tuple[dict[str, str | None], ...]:
    """What is kept on the event, so ops can replay it once the mapping covers each one."""
    return tuple(
        {
            "element_id": li.element_id,
            "name": li.name,
            "sku": li.sku,
            "product_type": li.product_type,
        }
        for li in exc.lines
    )


async def _write_back(
    bridge: Bridge, deal: Deal, invoice: InvoiceRef, record: DealInvoice, shown: str | None
) -> None:
    # A new invoice is unpaid: say so now, so the deal shows it before the first status poll.
    first_status = UNPAID if record.payment_status is None else None
    try:
        await bridge.crm.write_invoice(
            deal_id=deal.id, invoice=invoice, payment_status=first_status, shown_number=shown
        )
    except UpstreamPermanentError as exc:
        raise WriteBackRefused(invoice, exc) from exc
    number = shown or invoice.number
    lineage.note("deal", "updated", invoice_number=number, invoice_url=invoice.url)
    record.payment_status = record.payment_status or first_status
    record.state = InvoiceRecordState.WRITTEN_BACK.value
    log.info(
        "invoice.written_back",
        invoice_id=invoice.id,
        invoice_number=invoice.number,
        invoice_url=invoice.url,
    )


async def _existing_invoice(bridge: Bridge, record: DealInvoice | None) -> InvoiceRef | None:
    if record is None:
        return None
    if record.invoice_id is not None:
        return _ref(record)
    # POSTING: an earlier attempt may have created it and died (or timed out) before hearing so.
    found = await bridge.accounting.find_invoice(reference=record.reference)
    if found is not None:
        log.info("invoice.adopted", invoice_id=found.id, reference=record.reference)
        lineage.note("invoice", "adopted", invoice_id=found.id, reference=record.reference)
        _store_created(record, found)
    return found


async def _create_invoice(
    session: AsyncSession,
    bridge: Bridge,
    job: InvoiceJob,
    deal: Deal,
    record: DealInvoice | None,
) -> InvoiceRef:
    contents = await bridge.crm.deal_contents(deal=deal)
    lines = await price_lines(bridge, contents.lines)
    business = await bridge.accounting.business_currency()
    currency = invoice_currency(contents.currency, business, bridge.config.currency_policy)
    contact = await _resolve_contact(session, bridge, contents.customer, business, currency)
    check_customer(contact.id, contact.currency or business.base, currency)
    foreign = None if currency == business.base else currency
    draft = _draft(bridge, deal, contact.id, lines, record, foreign)
    if record is None:
        record = await _start_record(session, bridge, job, deal, draft)
    invoice = await _post_invoice(session, bridge, record, draft)
    _store_created(record, invoice)
    record.due_date = invoice.due_date or draft.due_date
    await session.commit()
    INVOICES_CREATED.inc()
    _note_created(draft, invoice)
    return invoice


async def _post_invoice(
    session: AsyncSession, bridge: Bridge, record: DealInvoice, draft: InvoiceDraft
) -> InvoiceRef:
    """POST the draft; a definitive refusal closes its idempotency key before it is reported."""
    try:
        return await bridge.accounting.create_invoice(draft=draft)
    except UpstreamPermanentError as exc:
        if exc.status is not None and 400 <= exc.status < 500:
            _close_key(bridge, record)
            await session.commit()
        raise


def _close_key(bridge: Bridge, record: DealInvoice) -> None:
    """The next attempt (a replay, or the deal moved again after a fix) gets a new key; the
    POSTING row and the look-up by reference still guard against a second invoice."""
    record.idempotency_generation += 1
    record.idempotency_key = idempotency_key(
        bridge.crm.name, record.account_id, record.deal_id, f"g{record.idempotency_generation}"
    )
    log.info("invoice.idempotency_key_closed", generation=record.idempotency_generation)
    lineage.note("invoice", "key_closed", generation=record.idempotency_generation)


def _note_created(draft: InvoiceDraft, invoice: InvoiceRef) -> None:
    lineage.note(
        "invoice",
        "created",
        invoice_id=invoice.id,
        invoice_number=invoice.number,
        reference=draft.reference,
        total=str(invoice.total_amount) if invoice.total_amount is not None else None,
        due_date=invoice.due_date.isoformat() if invoice.due_date else None,
        currency=invoice.currency or draft.currency,
    )
    log.info("invoice.created", invoice_id=invoice.id, invoice_number=invoice.number)
    if invoice.due_date is None and draft.due_date is None:
        # Sage documents a default due date; without one the deal cannot turn overdue until a
        # status poll brings it.
        log.warning("invoice.due_date_missing", invoice_id=invoice.id)
        lineage.note("invoice", "due_date_missing", invoice_id=invoice.id)
    _penny_check(draft, invoice)


def _penny_check(draft: InvoiceDraft, invoice: InvoiceRef) -> None:
    """Sage's totals against ours: a difference is recorded, never a reason to refuse."""
    differences = totals_difference(
        ours=(draft.net_amount, draft.tax_amount, draft.total_amount),
        theirs=(invoice.net_amount, invoice.tax_amount, invoice.total_amount),
    )
    if not differences:
        return
    INVOICE_TOTALS_DIFFER.inc()
    log.warning("invoice.totals_differ", invoice_id=invoice.id, **differences)
    lineage.note("invoice", "totals_differ", invoice_id=invoice.id, **differences)


async def _start_record(
    session: AsyncSession, bridge: Bridge, job: InvoiceJob, deal: Deal, draft: InvoiceDraft
) -> DealInvoice:
    record = DealInvoice(
        crm=bridge.crm.name,
        account_id=deal.account_id,
        deal_id=deal.id,
        event_id=job.event_id,
        reference=draft.reference,
        idempotency_key=draft.idempotency_key,
        idempotency_generation=0,
        contact_id=draft.contact_id,
    )
    started = await InvoiceRepository(session).start(record)
    if started is None:
        raise UpstreamTransientError("bridge", "another attempt is raising this deal's invoice")
    await session.commit()
    return started


def _store_created(record: DealInvoice, invoice: InvoiceRef) -> None:
    record.state = InvoiceRecordState.CREATED.value
    record.invoice_id = invoice.id
    record.invoice_number = invoice.number
    record.invoice_url = invoice.url
    record.total_amount = invoice.total_amount


class UnmappedLines(Exception):
    def __init__(self, lines: list[LineItem], mapping_file: str) -> None:
        names = ", ".join(_describe_line(line) for line in lines)
        super().__init__(f"no ledger mapping for {names}")
        self.lines = lines
        self.task_text = (
            f"Sage invoice NOT raised: no ledger account is mapped for {names}. Ask ops to add "
            f"a rule for each to {mapping_file} (match by element_id, sku or product_type); the "
            "invoice is raised when they replay it, or when you move the deal to the invoice "
            "stage again."
        )


def _describe_line(line: LineItem) -> str:
    extra = ", ".join(f"{k} {v}" for k, v in (("SKU", line.sku), ("type", line.product_type)) if v)
    return f"'{line.name}' (element {line.element_id}{', ' + extra if extra else ''})"


async def price_lines(bridge: Bridge, items: tuple[LineItem, ...]) -> tuple[InvoiceLine, ...]:
    """The deal's lines mapped and taxed, as an invoice would carry them (`UnmappedLines` or
    `InvoiceBlocked` when they cannot be)."""
    if not items:
        raise InvoiceBlocked("the deal has no products", f"Add them, {AGAIN}.")
    mapping = await bridge.mapping()
    mapped = [(line, mapping.resolve(line)) for line in items]
    for line, m in mapped:
        _note_mapping(line, m)
    unmapped = [line for line, m in mapped if m is None]
    if unmapped:
        raise UnmappedLines(unmapped, bridge.config.mapping_file)
    rates = await bridge.accounting.tax_rates()
    return tuple(
        _price(line, m.ledger_account_id, _rate(rates, m.tax_rate_id)) for line, m in mapped if m
    )


def _note_mapping(line: LineItem, mapped: Mapped | None) -> None:
    """Every line's mapping in the sync log, the unmapped ones too (they are why a deal waits)."""
    how: dict[str, str | None] = (
        {"sku": line.sku, "product_type": line.product_type}
        if mapped is None
        else {
            "matched_by": mapped.matched_by,
            "ledger_account_id": mapped.ledger_account_id,
            "tax_rate_id": mapped.tax_rate_id,
        }
    )
    action = "unmapped" if mapped is None else "mapped"
    lineage.note("line", action, element_id=line.element_id, name=line.name, **how)


def _rate(rates: dict[str, TaxRate], tax_rate_id: str | None) -> TaxRate | None:
    if tax_rate_id is None:
        return None
    if tax_rate_id not in rates:
        raise InvoiceBlocked(
            f"tax rate {tax_rate_id!r} from the ledger mapping does not exist in Sage",
            "Ask ops to correct the mapping; the invoice is raised when they replay it, or "
            "when you move the deal to the invoice stage again.",
        )
    return rates[tax_rate_id]


def _price(line: LineItem, ledger_account_id: str, rate: TaxRate | None) -> InvoiceLine:
    amounts = line_amounts(
        quantity=line.quantity,
        unit_price=line.unit_price,
        tax_percent=rate.percentage if rate else 0,  # type: ignore[arg-type]
        discount_percent=line.discount_percent,
    )
    return InvoiceLine(
        description=line.name,
        ledger_account_id=ledger_account_id,
        tax_rate_id=rate.id if rate else None,
        quantity=line.quantity,
        unit_price=line.unit_price,
        discount_amount=amounts.discount,
        net_amount=amounts.net,
        tax_amount=amounts.tax,
    )


async def _resolve_contact(
    session: AsyncSession,
    bridge: Bridge,
    customer: Customer | None,
    business: BusinessCurrency,
    currency: str,
) -> CustomerRef:
    """The customer (found by email or created once), with the currency it trades in."""
    if customer is None or not customer.email:
        raise InvoiceBlocked(
            "the deal's main contact has no email address",
            f"Add one so the customer can be found in Sage, {AGAIN}.",
        )
    links = ContactLinkRepository(session)
    link = await links.get(accounting=bridge.accounting.name, email=customer.email)
    if link is not None and link.currency:
        lineage.note("contact", "reused", contact_id=link.accounting_contact_id, found_in="link")
        return CustomerRef(link.accounting_contact_id, link.currency)
    found = await _linked_or_new(bridge, customer, customer.email, link, business, currency)
    ref = CustomerRef(found.id, found.currency or business.base)
    await links.remember(
        accounting=bridge.accounting.name,
        email=customer.email,
        crm_contact_id=customer.crm_id,
        accounting_contact_id=ref.id,
        currency=ref.currency,
    )
    await session.commit()
    return ref


async def _linked_or_new(
    bridge: Bridge,
    customer: Customer,
    email: str,
    link: ContactLink | None,
    business: BusinessCurrency,
    currency: str,
) -> CustomerRef:
    """A link kept before currencies were (no currency) is completed by one look-up."""
    if link is None:
        return await _find_or_create_customer(bridge, customer, email, business, currency)
    found = await bridge.accounting.find_customer(email=email)
    same = found is not None and found.id == link.accounting_contact_id
    lineage.note("contact", "reused", contact_id=link.accounting_contact_id, found_in="link")
    return CustomerRef(link.accounting_contact_id, found.currency if found and same else None)


async def _find_or_create_customer(
    bridge: Bridge, customer: Customer, email: str, business: BusinessCurrency, currency: str
) -> CustomerRef:
    found = await bridge.accounting.find_customer(email=email)
    if found is not None:
        log.info("contact.reused", contact_id=found.id)
        lineage.note("contact", "reused", contact_id=found.id, email_found_in="sage")
        return found
    key = idempotency_key(bridge.accounting.name, "contact", email.casefold())
    foreign = None if currency == business.base else currency
    created = await bridge.accounting.create_customer(
        customer=customer, idempotency_key=key, currency=foreign
    )
    log.info("contact.created", contact_id=created.id, currency=created.currency or currency)
    lineage.note("contact", "created", contact_id=created.id, currency=created.currency or currency)
    return created


def _draft(
    bridge: Bridge,
    deal: Deal,
    contact_id: str,
    lines: tuple[InvoiceLine, ...],
    record: DealInvoice | None,
    currency: str | None,
) -> InvoiceDraft:
    today = date.today()
    due_days = bridge.config.due_days
    key = record.idempotency_key if record is not None else None
    return InvoiceDraft(
        contact_id=contact_id,
        date=today,
        due_date=today + timedelta(days=due_days) if due_days is not None else None,
        reference=record.reference if record else invoice_reference(bridge.crm.name, deal.id),
        idempotency_key=key or idempotency_key(bridge.crm.name, deal.account_id, deal.id),
        lines=lines,
        notes=f"{deal.name} ({bridge.crm.deal_url(deal_id=deal.id)})",
        currency=currency,
    )
