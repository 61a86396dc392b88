"""A deal lost (Kommo's closed-lost, 143) or deleted after its invoice, by `CANCEL_POLICY`:

* `task` (default): the invoice stands (`Kept`) and the manager gets a task saying so.
* `void`: an unpaid invoice with nothing paid or credited on it is voided, with a reason naming
  the deal, and the deal shows "void" (`Voided`). One with money on it is never voided: `Kept`,
  with a task.

A deleted deal has nowhere to show a status or hold a task: its invoice is voided or kept all
the same, and the event (`/ops/retries`) says so. The void is done once: an `invoice_adjustments`
row is written before the DELETE, and a retry first asks Sage whether the invoice is void.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app import lineage
from app.bridge import Bridge, CancelPolicy
from app.domain import Deal, InvoiceDetail, PaymentView
from app.errors import UpstreamPermanentError, UpstreamTransientError
from app.invoicing import InvoiceJob, Skipped, idempotency_key
from app.models import (
    AdjustmentKind,
    AdjustmentState,
    DealInvoice,
    InvoiceAdjustment,
    InvoiceRecordState,
)
from app.money import shown_amount
from app.payment_status import VOID, remember_shown, shown_view, write_changes
from app.ports import DealNotFound
from app.repositories import AdjustmentRepository, InvoiceRepository

log = structlog.get_logger(__name__)
VOIDABLE = "UNPAID"
NOT_INVOICED = "the bridge raised no invoice for this deal: nothing to cancel"


@dataclass(frozen=True)
class Voided:
    detail: str


@dataclass(frozen=True)
class Kept:
    """The invoice stands; `task_text` is the manager's task (None for a deleted deal)."""

    detail: str
    task_text: str | None


@dataclass(frozen=True)
class _Cancelled:
    """What the job found: the deal's invoice record, the deal (None once deleted), and how."""

    record: DealInvoice
    deal: Deal | None
    how: str  # "lost" or "deleted"


async def cancel_invoice(
    session: AsyncSession, bridge: Bridge, job: InvoiceJob, *, deleted: bool
) -> Voided | Kept | Skipped:
    """What a lost or deleted deal's invoice becomes."""
    found = await _find(session, bridge, job, deleted=deleted)
    if isinstance(found, Skipped):
        return found
    record = found.record
    assert record.invoice_id is not None
    adjustments = AdjustmentRepository(session)
    started = await adjustments.get(kind=AdjustmentKind.VOID, invoice_id=record.invoice_id)
    if started is not None and started.state == AdjustmentState.DONE:
        return Voided(f"invoice {record.invoice_number} was voided already")
    posted = await bridge.accounting.get_invoice(invoice_id=record.invoice_id)
    if posted is None or posted.status_id == "VOID":  # voided or deleted in Sage already
        await _done(session, bridge, found, started)
        return Voided(f"invoice {record.invoice_number} is void in Sage already")
    if started is None and bridge.config.cancel_policy is CancelPolicy.TASK:
        return _kept(found, "CANCEL_POLICY is task, so the bridge leaves it to you", posted)
    if posted.status_id != VOIDABLE or posted.settled_any:
        return _kept(found, "it has money paid or credited on it, so it is never voided", posted)
    started = started or await _start(session, job, found, posted)
    refusal = await _void(bridge, found, started)
    if refusal is not None:
        return _kept(found, refusal, posted)
    await _done(session, bridge, found, started)
    return Voided(f"invoice {record.invoice_number} voided: the deal was {found.how}")


async def _find(
    session: AsyncSession, bridge: Bridge, job: InvoiceJob, *, deleted: bool
) -> _Cancelled | Skipped:
    """The invoice record, and the deal as the CRM has it now (hooks are triggers, not data)."""
    record = await InvoiceRepository(session).get(
        crm=bridge.crm.name, account_id=job.account_id, deal_id=job.deal_id
    )
    if record is None:
        return Skipped(NOT_INVOICED)
    if record.state == InvoiceRecordState.POSTING:
        raise UpstreamTransientError("bridge", "the deal's invoice is still being raised")
    try:
        deal: Deal | None = await bridge.crm.get_deal(deal_id=job.deal_id)
    except DealNotFound:
        deal = None
    if deal is not None:
        job.responsible_user_id = deal.responsible_user_id or job.responsible_user_id
        if deleted:
            return Skipped("the deal was restored in the CRM")
        if deal.status_id != bridge.crm.lost_status_id:
            return Skipped(f"the deal is no longer lost (now stage {deal.status_id})")
    return _Cancelled(record, deal, "deleted" if deal is None else "lost")


def _kept(found: _Cancelled, why: str, posted: InvoiceDetail | None) -> Kept:
    record = found.record
    number = record.invoice_number or record.invoice_id
    lineage.note("invoice", "kept", invoice_id=record.invoice_id, reason=why)
    detail = f"the deal was {found.how}; invoice {number} stands: {why}"
    if found.deal is None:
        return Kept(f"{detail}; the deal is gone, so no task could be opened", None)
    state = _state(posted)
    task = (
        f"This deal was {found.how}, but Sage invoice {number} stands{state}: {why}. If the "
        "sale is off, void the invoice in Sage, or raise a credit note for what was paid; if "
        "not, move the deal back to where it belongs."
    )
    return Kept(detail, task)


def _state(posted: InvoiceDetail | None) -> str:
    if posted is None:
        return ""
    money = posted.money
    status = posted.status_id.lower().replace("_", " ")
    if money.outstanding is None:
        return f" ({status})"
    return f" ({status}, {shown_amount(money.outstanding)} outstanding)"


async def _start(
    session: AsyncSession, job: InvoiceJob, found: _Cancelled, posted: InvoiceDetail
) -> InvoiceAdjustment:
    """The marker, committed before the DELETE."""
    record = found.record
    adjustment = InvoiceAdjustment.of(
        record,
        AdjustmentKind.VOID,
        event_id=job.event_id,
        contact_id=posted.contact_id,
        amount=posted.money.total,
        reason=f"Kommo deal {record.deal_id} was {found.how}",
        idempotency_key=idempotency_key(record.crm, record.account_id, record.deal_id, "void"),
    )
    started = await AdjustmentRepository(session).start(adjustment)
    if started is None:
        raise UpstreamTransientError("bridge", "another attempt is voiding this deal's invoice")
    await session.commit()
    return started


async def _void(bridge: Bridge, found: _Cancelled, adjustment: InvoiceAdjustment) -> str | None:
    """The DELETE; Sage's refusal (e.g. a payment just recorded) is returned, not raised."""
    try:
        await bridge.accounting.void_invoice(
            invoice_id=adjustment.invoice_id, reason=adjustment.reason
        )
    except UpstreamPermanentError as exc:
        log.warning("invoice.void_refused", invoice_id=adjustment.invoice_id, error=exc.detail)
        return f"Sage refused to void it: {exc.detail}"
    lineage.note("invoice", "voided", invoice_id=adjustment.invoice_id, reason=adjustment.reason)
    log.info("invoice.voided", invoice_id=adjustment.invoice_id, deal_was=found.how)
    return None


async def _done(
    session: AsyncSession, bridge: Bridge, found: _Cancelled, adjustment: InvoiceAdjustment | None
) -> None:
    """The invoice is void in Sage (by us now, or before): the deal shows "void"."""
    if adjustment is not None:
        adjustment.state = AdjustmentState.DONE.value
    record = found.record
    shown = PaymentView(status=VOID, outstanding=Decimal(0)).changes_from(shown_view(record))
    if shown is not None and found.deal is not None:
        await write_changes(bridge.crm, [(record, shown)])
    elif shown is not None:  # a deleted deal shows nothing: remembered, never written
        remember_shown(record, shown)
    await session.commit()
