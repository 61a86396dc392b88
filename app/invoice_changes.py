"""A deal that changes after its invoice: moved into the invoice stage again, its lines now are
compared with the invoice in the accounting system (products, quantities, prices, the ledger
account and tax rate the mapping gives them).

* Same: nothing is done (`Unchanged`), and that is recorded.
* Different, `CHANGE_POLICY=task` (default): a task lists the differences; nothing is posted.
* Different, `CHANGE_POLICY=reissue`: a credit note for the whole old invoice, set against it,
  then a new invoice (reference `KOMMO-<deal>-R<n>`); the deal shows both numbers. An invoice
  with money paid or credited on it is never reissued: a task instead.

The reissue is done once however often it is interrupted: an `invoice_adjustments` row is
written before the credit note is posted (a crash means "look it up by reference first"), its
state says what is left (allocate it, start the new invoice), and the new invoice is the deal's
next revision, raised by `raise_invoice` with its own marker, look-up and idempotency key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app import lineage
from app.bridge import Bridge, ChangePolicy
from app.domain import CreditNoteDraft, InvoiceDetail, InvoiceLine
from app.errors import InvoiceBlocked, UpstreamPermanentError
from app.invoicing import (
    Invoiced,
    InvoiceJob,
    Skipped,
    UnmappedLines,
    idempotency_key,
    in_invoice_stage,
    invoice_reference,
    price_lines,
    raise_invoice,
)
from app.models import (
    AdjustmentKind,
    AdjustmentState,
    DealInvoice,
    InvoiceAdjustment,
    InvoiceRecordState,
)
from app.money import shown_amount
from app.ports import DealNotFound
from app.repositories import AdjustmentRepository, InvoiceRepository

log = structlog.get_logger(__name__)
UNPAID = "UNPAID"
Result = Invoiced | Skipped


@dataclass(frozen=True)
class Unchanged:
    detail: str


@dataclass(frozen=True)
class Changed:
    """The lines differ and nothing was posted: the manager's task says how and what to do."""

    detail: str
    task_text: str


@dataclass(frozen=True)
class Reissued:
    detail: str


class ReissueRefused(UpstreamPermanentError):
    """The accounting system refused a step of the reissue; `task_text` says what stands."""

    def __init__(self, cause: UpstreamPermanentError, task_text: str) -> None:
        super().__init__(cause.upstream, cause.detail, status=cause.status)
        self.task_text = task_text


async def invoice_deal(
    session: AsyncSession, bridge: Bridge, job: InvoiceJob
) -> Result | Unchanged | Changed | Reissued:
    """The trigger stage's work for one deal: its invoice, or (invoiced already) the change
    check; a reissue left unfinished is finished first, whatever else."""
    deal_key = {"crm": bridge.crm.name, "account_id": job.account_id, "deal_id": job.deal_id}
    unfinished = await AdjustmentRepository(session).unfinished_reissue(**deal_key)
    if unfinished is not None:
        return await finish_reissue(session, bridge, job, unfinished)
    record = await InvoiceRepository(session).get(**deal_key)
    if record is not None and record.state == InvoiceRecordState.WRITTEN_BACK:
        return await _check_change(session, bridge, job, record)
    return await raise_invoice(session, bridge, job)


async def _check_change(
    session: AsyncSession, bridge: Bridge, job: InvoiceJob, record: DealInvoice
) -> Skipped | Unchanged | Changed | Reissued:
    try:
        deal = await bridge.crm.get_deal(deal_id=job.deal_id)
    except DealNotFound:
        return Skipped("the deal no longer exists in the CRM")
    job.responsible_user_id = deal.responsible_user_id or job.responsible_user_id
    if not in_invoice_stage(bridge, deal):
        return Skipped(f"the deal left the invoice stage (now stage {deal.status_id})")
    assert record.invoice_id is not None
    number = record.invoice_number or record.invoice_id
    try:
        lines = await price_lines(bridge, (await bridge.crm.deal_contents(deal=deal)).lines)
    except (UnmappedLines, InvoiceBlocked) as exc:
        return _not_comparable(number, exc.detail if isinstance(exc, InvoiceBlocked) else str(exc))
    posted = await bridge.accounting.get_invoice(invoice_id=record.invoice_id)
    found = _differences(lines, posted)
    if not found:
        lineage.note("invoice", "unchanged", invoice_id=record.invoice_id)
        return Unchanged(f"the deal's lines match invoice {number}")
    lineage.note("invoice", "changed", invoice_id=record.invoice_id, differences=found)
    log.info("invoice.deal_changed", invoice_id=record.invoice_id, differences=found)
    refusal = _why_not_reissued(posted)
    if posted is None or refusal is not None or bridge.config.change_policy is ChangePolicy.TASK:
        return Changed(_changes_text(number, found), _task_text(number, found, refusal))
    adjustment = await _start_reissue(session, job, record, posted, found)
    return await finish_reissue(session, bridge, job, adjustment)


def _not_comparable(number: str, why: str) -> Changed:
    detail = f"the deal cannot be compared with invoice {number}: {why}"
    task = (
        f"This deal was moved to the invoice stage again after Sage invoice {number} was "
        f"raised, but the bridge cannot compare it with the invoice: {why}. Nothing was posted. "
        "Correct the deal (or ask ops to map its products), then move it to the invoice stage "
        "again."
    )
    return Changed(detail, task)


def _why_not_reissued(posted: InvoiceDetail | None) -> str | None:
    """Why the invoice cannot be credited and reissued, whatever the policy; None if it can."""
    if posted is None:
        return "it no longer exists in Sage"
    if posted.status_id != UNPAID or posted.settled_any:
        return _money_on_it(posted)
    return None


def _money_on_it(posted: InvoiceDetail) -> str:
    money = posted.money
    if posted.status_id == "VOID":
        return "it is void in Sage"
    return (
        f"it is {posted.status_id.lower().replace('_', ' ')} in Sage (paid "
        f"{shown_amount(money.paid)}, credited {shown_amount(money.credited)}), and the bridge "
        "never credits an invoice with money on it"
    )


def _differences(lines: tuple[InvoiceLine, ...], posted: InvoiceDetail | None) -> list[str]:
    """How the deal's lines now differ from the invoice's, line by line (by description)."""
    if posted is None:
        return ["the invoice no longer exists in Sage"]
    if posted.status_id == "VOID":
        return ["the invoice is void in Sage"]
    now, then = _by_name(lines), _by_name(posted.lines)
    found: list[str] = []
    for name in sorted(now.keys() | then.keys()):
        found += _line_differences(name, now.get(name, []), then.get(name, []))
    return found


def _by_name(lines: tuple[InvoiceLine, ...]) -> dict[str, list[InvoiceLine]]:
    grouped: dict[str, list[InvoiceLine]] = {}
    for line in lines:
        grouped.setdefault(line.description, []).append(line)
    return grouped


FIELDS = (
    ("quantity", "quantity"),
    ("unit_price", "unit price"),
    ("discount_amount", "discount"),
    ("ledger_account_id", "ledger account"),
    ("tax_rate_id", "tax rate"),
)


def _line_differences(name: str, now: list[InvoiceLine], then: list[InvoiceLine]) -> list[str]:
    if not then:
        return [f"'{name}' added ({_describe(line)})" for line in now]
    if not now:
        return [f"'{name}' removed ({_describe(line)})" for line in then]
    if len(now) != len(then):
        return [f"'{name}': {len(then)} line(s) invoiced, {len(now)} now"]
    found = []
    for new, old in zip(now, then, strict=True):
        for attribute, label in FIELDS:
            before, after = getattr(old, attribute), getattr(new, attribute)
            if (before or 0) != (after or 0):
                found.append(f"'{name}': {label} {_shown(before)} → {_shown(after)}")
    return found


def _describe(line: InvoiceLine) -> str:
    return f"{_shown(line.quantity)} × {_shown(line.unit_price)}"


def _shown(value: object) -> str:
    """3.0 and 3 are the same quantity: numbers without trailing zeros."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _changes_text(number: str, found: list[str]) -> str:
    return f"the deal changed after invoice {number}: {'; '.join(found)}"


def _task_text(number: str, found: list[str], refusal: str | None) -> str:
    changes = f"This deal changed after Sage invoice {number} was raised: {'; '.join(found)}."
    if refusal is not None:
        return (
            f"{changes} The bridge did not credit and reissue the invoice: {refusal}. Settle it "
            "in Sage (a credit note for what is no longer owed, or a new invoice), or undo the "
            "change in the deal."
        )
    return (
        f"{changes} Nothing was posted. If the invoice must follow the deal, credit it in Sage "
        "and raise a new one (or ask ops to set CHANGE_POLICY=reissue, then move the deal to "
        "the invoice stage again); if the change was a mistake, undo it in the deal."
    )


async def _start_reissue(
    session: AsyncSession,
    job: InvoiceJob,
    record: DealInvoice,
    posted: InvoiceDetail,
    found: list[str],
) -> InvoiceAdjustment:
    """The marker, committed before anything is posted: one credit note per invoice."""
    assert record.invoice_id is not None
    key = idempotency_key(record.crm, record.account_id, record.deal_id, "cn", record.invoice_id)
    adjustment = InvoiceAdjustment.of(
        record,
        AdjustmentKind.CREDIT_NOTE,
        event_id=job.event_id,
        contact_id=posted.contact_id or record.contact_id,
        amount=posted.money.total,
        reason="; ".join(found),
        idempotency_key=key,
    )
    started = await AdjustmentRepository(session).start(adjustment)
    if started is None:  # another attempt started it: finish that one
        existing = await AdjustmentRepository(session).get(
            kind=AdjustmentKind.CREDIT_NOTE, invoice_id=record.invoice_id
        )
        assert existing is not None
        return existing
    await session.commit()
    return started


async def finish_reissue(
    session: AsyncSession, bridge: Bridge, job: InvoiceJob, adjustment: InvoiceAdjustment
) -> Skipped | Reissued:
    """Whatever is left of the reissue: the credit note, its allocation, the new invoice."""
    if adjustment.state == AdjustmentState.POSTING:
        await _raise_credit_note(session, bridge, adjustment)
    if adjustment.state == AdjustmentState.CREATED:
        await _allocate(session, bridge, adjustment)
    record = await InvoiceRepository(session).get(
        crm=adjustment.crm, account_id=adjustment.account_id, deal_id=adjustment.deal_id
    )
    assert record is not None
    if record.invoice_id == adjustment.invoice_id:
        await _next_revision(session, job, record)
    replacing = f"replaces {adjustment.invoice_number}, credit note {adjustment.document_number}"
    result = await raise_invoice(session, bridge, job, replacing=replacing)
    if isinstance(result, Skipped):
        return result
    adjustment.state = AdjustmentState.DONE.value
    await session.commit()
    log.info("invoice.reissued", invoice_id=result.invoice.id, replaces=adjustment.invoice_id)
    return Reissued(
        f"invoice {result.invoice.number} replaces {adjustment.invoice_number} (credit note "
        f"{adjustment.document_number}): {adjustment.reason}"
    )


async def _raise_credit_note(
    session: AsyncSession, bridge: Bridge, adjustment: InvoiceAdjustment
) -> None:
    reference = f"{adjustment.invoice_reference}-CN"
    found = await bridge.accounting.find_credit_note(reference=reference)
    if found is None:
        draft = await _credit_note_draft(bridge, adjustment, reference)
        try:
            found = await bridge.accounting.create_credit_note(draft=draft)
        except UpstreamPermanentError as exc:
            raise ReissueRefused(exc, _refused_text(adjustment, "the credit note", exc)) from exc
        lineage.note("credit_note", "created", credit_note_id=found.id, number=found.number)
    else:
        lineage.note("credit_note", "adopted", credit_note_id=found.id, reference=reference)
    adjustment.document_id, adjustment.document_number = found.id, found.number
    adjustment.amount = found.total_amount or adjustment.amount
    adjustment.state = AdjustmentState.CREATED.value
    await session.commit()
    log.info("credit_note.created", credit_note_id=found.id, invoice_id=adjustment.invoice_id)


async def _credit_note_draft(
    bridge: Bridge, adjustment: InvoiceAdjustment, reference: str
) -> CreditNoteDraft:
    """The old invoice's own lines, as Sage holds them: the credit note cancels it whole."""
    posted = await bridge.accounting.get_invoice(invoice_id=adjustment.invoice_id)
    if posted is None:
        raise ReissueRefused(
            UpstreamPermanentError("sage", "the invoice no longer exists", status=404),
            f"Sage invoice {adjustment.invoice_number} vanished before it could be credited: "
            "ask ops to look at the deal's invoice in Sage.",
        )
    business = await bridge.accounting.business_currency()
    return CreditNoteDraft(
        contact_id=posted.contact_id or adjustment.contact_id or "",
        date=date.today(),
        original_invoice_date=posted.date,
        reference=reference,
        idempotency_key=adjustment.idempotency_key,
        lines=posted.lines,
        notes=f"Credits {adjustment.invoice_number}: the deal changed ({adjustment.reason})",
        currency=None if posted.currency in (None, business.base) else posted.currency,
    )


async def _allocate(session: AsyncSession, bridge: Bridge, adjustment: InvoiceAdjustment) -> None:
    """Set the credit note against the invoice, unless an earlier attempt already did (the
    credit note then has nothing left outstanding)."""
    assert adjustment.document_id is not None
    note = await bridge.accounting.get_credit_note(credit_note_id=adjustment.document_id)
    if note is None or note.outstanding_amount != Decimal(0):
        try:
            await bridge.accounting.allocate_credit_note(
                contact_id=adjustment.contact_id or "",
                invoice_id=adjustment.invoice_id,
                credit_note_id=adjustment.document_id,
                amount=adjustment.amount or Decimal(0),
                idempotency_key=idempotency_key(adjustment.idempotency_key, "allocation"),
            )
        except UpstreamPermanentError as exc:
            raise ReissueRefused(exc, _refused_text(adjustment, "the allocation", exc)) from exc
        lineage.note(
            "credit_note",
            "allocated",
            credit_note_id=adjustment.document_id,
            invoice_id=adjustment.invoice_id,
        )
    adjustment.state = AdjustmentState.ALLOCATED.value
    await session.commit()


async def _next_revision(session: AsyncSession, job: InvoiceJob, record: DealInvoice) -> None:
    """The old invoice is credited: the deal's record starts its next invoice (POSTING, a new
    reference and key), so the normal path raises it once."""
    record.revision += 1
    record.reference = invoice_reference(record.crm, record.deal_id, record.revision)
    record.idempotency_key = idempotency_key(
        record.crm, record.account_id, record.deal_id, f"r{record.revision}"
    )
    record.idempotency_generation = 0
    record.event_id = job.event_id
    record.state = InvoiceRecordState.POSTING.value
    for column in ("invoice_id", "invoice_number", "invoice_url", "total_amount", "due_date"):
        setattr(record, column, None)
    for column in ("payment_status", "status_source_updated_at", "outstanding_amount"):
        setattr(record, column, None)
    record.shown_money = None
    await session.commit()


def _refused_text(adjustment: InvoiceAdjustment, step: str, exc: UpstreamPermanentError) -> str:
    done = (
        f" Credit note {adjustment.document_number} WAS raised;"
        if adjustment.document_id
        else " Nothing was posted;"
    )
    return (
        f"This deal changed after Sage invoice {adjustment.invoice_number} was raised "
        f"({adjustment.reason}), and Sage refused {step}: {exc.detail}.{done} correct what Sage "
        "names, then ask ops to replay the event: the bridge carries on where it stopped."
    )
