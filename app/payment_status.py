"""Payment status back to the deal: from Sage polling and from signed callbacks, one apply path.

Sage Accounting has no webhooks, so a scheduled poll lists invoices changed since a durable
watermark. A relay that pushes changes uses signed callbacks, stored in the same inbox. Both end
in `apply_statuses`, which never lets an older status overwrite a newer one (Sage `updated_at`)
and writes only deals whose shown status changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app import lineage
from app.domain import InvoiceStatus
from app.models import DealInvoice
from app.ports import Accounting, Crm
from app.repositories import CursorRepository, InvoiceRepository

log = structlog.get_logger(__name__)

UNPAID, PART_PAID, PAID, OVERDUE, VOID = "unpaid", "part_paid", "paid", "overdue", "void"
PAYMENT_STATUSES = (UNPAID, PART_PAID, PAID, OVERDUE, VOID)
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
    return shown


async def apply_statuses(
    session: AsyncSession, crm: Crm, statuses: list[InvoiceStatus], *, today: date
) -> int:
    """Write each changed status to its deal, then store it; returns the number of deals written.

    The CRM write comes first: if it fails nothing is stored and the caller retries the batch.
    """
    records = await InvoiceRepository(session).by_invoice_ids([s.invoice_id for s in statuses])
    changes: dict[str, tuple[DealInvoice, str]] = {}
    for status in sorted(statuses, key=lambda s: s.updated_at):
        record = records.get(status.invoice_id)
        if record is None or _is_older(status, record):
            continue
        _remember(record, status)
        shown = shown_status(status, today)
        if shown is not None and shown != record.payment_status:
            changes[record.deal_id] = (record, shown)
        else:
            changes.pop(record.deal_id, None)
    await crm.write_payment_statuses(updates=[(deal, s) for deal, (_, s) in changes.items()])
    for record, shown in changes.values():
        record.payment_status = shown
        lineage.note("deal", "updated", payment_status=shown, invoice_id=record.invoice_id)
        log.info("deal.payment_status", deal_id=record.deal_id, status=shown)
    await session.commit()
    return len(changes)


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
    await crm.write_payment_statuses(updates=[(r.deal_id, OVERDUE) for r in due])
    for record in due:
        record.payment_status = OVERDUE
        log.info("deal.payment_status", deal_id=record.deal_id, status=OVERDUE)
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
