"""Payment status and money back to the deal: from Sage polling and from signed callbacks, one
apply path.

Sage Accounting has no webhooks, so a scheduled poll lists invoices changed since a durable
watermark. A relay that pushes changes uses signed callbacks, stored in the same inbox. Both end
in `apply_statuses`, which never lets an older status overwrite a newer one (Sage `updated_at`)
and writes only what changes on a deal: its status, and (where the CRM has fields for them) the
amount paid, outstanding and credited, the last payment date and the credit notes' numbers. A
credit note allocated to the invoice, by the bridge or by hand in Sage, lowers what is
outstanding; an invoice settled by credit notes alone shows "credited".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app import lineage
from app.domain import InvoiceMoney, InvoiceStatus, PaymentView
from app.errors import UpstreamPermanentError
from app.models import DealInvoice
from app.ports import Accounting, Crm
from app.repositories import CursorRepository, InvoiceRepository

log = structlog.get_logger(__name__)

UNPAID, PART_PAID, PAID, OVERDUE, VOID = "unpaid", "part_paid", "paid", "overdue", "void"
CREDITED = "credited"  # settled by credit notes, nothing paid
PAYMENT_STATUSES = (UNPAID, PART_PAID, PAID, OVERDUE, VOID, CREDITED)
# Sage artefact status id → the status shown on the deal. Ids are checked against
# GET /artefact_statuses at each poll; DRAFT (and anything unknown) shows nothing.
SAGE_STATUSES: Mapping[str, str] = {
    "UNPAID": UNPAID,
    "PART_PAID": PART_PAID,
    "PAID": PAID,
    "VOID": VOID,
}
CURSOR = "sage.sales_invoices.updated"
FIRST_POLL_LOOKBACK = timedelta(days=1)


def shown_status(status: InvoiceStatus, today: date) -> str | None:
    """The deal's status: Sage's, or overdue when the due date passed with money outstanding."""
    if status.deleted:
        return VOID
    shown = SAGE_STATUSES.get(status.status_id)
    outstanding = status.outstanding_amount if status.outstanding_amount is not None else 1
    past_due = status.due_date is not None and status.due_date < today and outstanding > 0
    if shown in (UNPAID, PART_PAID) and past_due:
        return OVERDUE
    money = status.money
    if shown == PAID and money is not None and money.credited and not money.paid:
        return CREDITED
    return shown


def payment_view(status: InvoiceStatus, today: date) -> PaymentView:
    """What the deal should show: the status, and the money Sage reported (None: not known)."""
    money = status.money or InvoiceMoney(outstanding=status.outstanding_amount)
    return PaymentView(
        status=shown_status(status, today),
        paid=money.paid,
        outstanding=money.outstanding,
        last_payment=money.last_payment,
        credited=money.credited,
        credit_notes=", ".join(money.credit_notes) or None,
    )


def shown_view(record: DealInvoice) -> PaymentView:
    """What the deal shows now, as last written."""
    kept = record.shown_money or {}
    return PaymentView(
        status=record.payment_status,
        paid=_decimal(kept.get("paid")),
        outstanding=_decimal(kept.get("outstanding")),
        last_payment=date.fromisoformat(kept["last_payment"]) if kept.get("last_payment") else None,
        credited=_decimal(kept.get("credited")),
        credit_notes=kept.get("credit_notes"),
    )


def remember_shown(record: DealInvoice, changes: PaymentView) -> None:
    """Store what was just written to the deal (the fields that changed)."""
    if changes.status is not None:
        record.payment_status = changes.status
    kept = dict(record.shown_money or {})
    for name in ("paid", "outstanding", "credited", "credit_notes", "last_payment"):
        value = getattr(changes, name)
        if value is not None:
            kept[name] = value.isoformat() if isinstance(value, date) else str(value)
    record.shown_money = kept


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


async def apply_statuses(
    session: AsyncSession, crm: Crm, statuses: list[InvoiceStatus], *, today: date
) -> int:
    """Write what changed on each deal, in batches, then store it; returns the number of deals
    written. The CRM write comes first: if it fails nothing is stored and the caller retries."""
    records = await InvoiceRepository(session).by_invoice_ids([s.invoice_id for s in statuses])
    changes: dict[str, tuple[DealInvoice, PaymentView]] = {}
    for status in sorted(statuses, key=lambda s: s.updated_at):
        record = records.get(status.invoice_id)
        if record is None or _is_older(status, record):
            continue
        _remember(record, status)
        changed = payment_view(status, today).changes_from(shown_view(record))
        if changed is not None:
            changes[record.deal_id] = (record, changed)
        else:
            changes.pop(record.deal_id, None)
    await write_changes(crm, list(changes.values()))
    await session.commit()
    return len(changes)


async def write_changes(crm: Crm, changes: list[tuple[DealInvoice, PaymentView]]) -> None:
    """Write to the deals in one batch, then remember it on each record (not committed). A batch
    the CRM refuses (all or nothing: one deleted deal refuses it whole) is written deal by deal;
    a deal refused on its own is logged and remembered, so it does not hold up the others at
    every poll."""
    try:
        await crm.write_payments(updates=[(record.deal_id, view) for record, view in changes])
    except UpstreamPermanentError:
        await _one_by_one(crm, changes)
    for record, view in changes:
        remember_shown(record, view)
        shown = {k: str(v) for k, v in vars(view).items() if v is not None}
        status = shown.pop("status", None)
        lineage.note(
            "deal", "updated", invoice_id=record.invoice_id, payment_status=status, **shown
        )
        log.info("deal.payment_status", deal_id=record.deal_id, status=status, **shown)


async def _one_by_one(crm: Crm, changes: list[tuple[DealInvoice, PaymentView]]) -> None:
    for record, view in changes:
        try:
            await crm.write_payments(updates=[(record.deal_id, view)])
        except UpstreamPermanentError as exc:
            log.warning("deal.write_refused", deal_id=record.deal_id, error=exc.detail)
            lineage.note("deal", "write_refused", deal_id=record.deal_id, error=exc.detail)


def _is_older(status: InvoiceStatus, record: DealInvoice) -> bool:
    seen = record.status_source_updated_at
    if seen is not None and status.updated_at < seen:
        log.info("invoice.status_out_of_order", invoice_id=status.invoice_id)
        return True
    return False


def _remember(record: DealInvoice, status: InvoiceStatus) -> None:
    record.status_source_updated_at = status.updated_at
    record.due_date = status.due_date or record.due_date
    if status.outstanding_amount is not None:
        record.outstanding_amount = status.outstanding_amount


async def mark_overdue(session: AsyncSession, crm: Crm, *, today: date) -> int:
    """Time alone makes an invoice overdue; Sage records no change for it, so look locally."""
    due = await InvoiceRepository(session).past_due(today=today, statuses=[UNPAID, PART_PAID])
    await write_changes(crm, [(record, PaymentView(status=OVERDUE)) for record in due])
    await session.commit()
    return len(due)


async def poll_statuses(
    session: AsyncSession, crm: Crm, accounting: Accounting, *, now: datetime
) -> int:
    """One poll: changes since the watermark, applied, then the watermark moves (never before)."""
    cursors = CursorRepository(session)
    since = await cursors.get(CURSOR) or await _first_watermark(session, now)
    statuses = await accounting.changed_invoices(since=since)
    _warn_unknown(statuses, await accounting.status_ids())
    written = await apply_statuses(session, crm, statuses, today=now.date())
    written += await mark_overdue(session, crm, today=now.date())
    # Inclusive filter: the newest change is listed again next time and found unchanged.
    # Only updates move it: the update list may stop at a page cap, deletions never do.
    await cursors.set(CURSOR, max([since, *(s.updated_at for s in statuses if not s.deleted)]))
    await session.commit()
    log.info("status_poll.done", since=since.isoformat(), seen=len(statuses), written=written)
    return written


async def _first_watermark(session: AsyncSession, now: datetime) -> datetime:
    earliest = await InvoiceRepository(session).earliest_created()
    return earliest if earliest is not None else now - FIRST_POLL_LOOKBACK


def _warn_unknown(statuses: list[InvoiceStatus], known: set[str]) -> None:
    for status_id in {s.status_id for s in statuses if not s.deleted} - known - {""}:
        log.warning("invoice.status_unknown", status_id=status_id)
    for status_id in set(SAGE_STATUSES) - known:
        log.warning("invoice.status_missing_in_sage", status_id=status_id)


def status_from_payload(payload: Mapping[str, Any]) -> InvoiceStatus:
    """The InvoiceStatus a stored callback payload describes (see `callback_payload`)."""
    return InvoiceStatus(
        invoice_id=str(payload["invoice_id"]),
        status_id=str(payload["status_id"]),
        updated_at=datetime.fromisoformat(payload["updated_at"]).astimezone(UTC),
        due_date=date.fromisoformat(payload["due_date"]) if payload.get("due_date") else None,
        outstanding_amount=(
            Decimal(str(payload["outstanding_amount"]))
            if payload.get("outstanding_amount") is not None
            else None
        ),
        deleted=bool(payload.get("deleted")),
    )


def callback_payload(status: InvoiceStatus) -> dict[str, Any]:
    return {
        "invoice_id": status.invoice_id,
        "status_id": status.status_id,
        "updated_at": status.updated_at.isoformat(),
        "due_date": status.due_date.isoformat() if status.due_date else None,
        "outstanding_amount": (
            str(status.outstanding_amount) if status.outstanding_amount is not None else None
        ),
        "deleted": status.deleted,
    }
