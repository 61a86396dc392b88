"""The reconciliation report: where the CRM, Sage and the bridge's own records disagree, each
finding with the action that settles it.

    not_invoiced         a deal in the invoice stage or past it (won included) has no invoice:
                         `replay` its event (in the stage), `discard` it when no invoice is owed
                         (past it), `open_deal` when it has no event
    deal_gone            a live invoice's reference (KOMMO-<deal>) names a deal the CRM no
                         longer has: `open_invoice`, to void or credit it in Sage
    duplicate_reference  more than one live invoice carries one reference: `open_invoice`, to
                         void the one the deal does not show
    amount_drift         the deal's lines now total something else than its invoice: `replay`
                         (CHANGE_POLICY decides)
    voided_in_sage       the deal still shows an invoice voided or deleted in Sage (not by the
                         bridge): `open_deal`

Deals and invoices of the last `RECONCILE_REPORT_DAYS` are looked at; a deal whose event is at
work, or was discarded by ops, is not a finding. A check that cannot run (an upstream down, a
deal that cannot be priced) is listed under `problems`; the other checks still run.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.domain import DealInStage, InvoiceRef
from app.errors import InvoiceBlocked, UpstreamError
from app.inbox.intake import trigger_dedupe_key
from app.inbox.models import ACTIVE_STATES, EventState, InboxEvent
from app.inbox.repository import InboxRepository
from app.invoicing import UnmappedLines, price_lines
from app.metrics import RECONCILIATION_ROWS
from app.models import DealInvoice, ReconciliationReport, utcnow
from app.ports import DealNotFound
from app.repositories import AdjustmentRepository, InvoiceRepository, ReportRepository

log = structlog.get_logger(__name__)
VOID = "VOID"


class RowKind(enum.StrEnum):
    NOT_INVOICED = "not_invoiced"
    DEAL_GONE = "deal_gone"
    DUPLICATE_REFERENCE = "duplicate_reference"
    AMOUNT_DRIFT = "amount_drift"
    VOIDED_IN_SAGE = "voided_in_sage"


class Action(enum.StrEnum):
    REPLAY = "replay"  # POST /ops/events/{event_id}/replay
    DISCARD = "discard"  # POST /ops/events/{event_id}/discard
    OPEN_DEAL = "open_deal"  # a person looks at the deal in the CRM
    OPEN_INVOICE = "open_invoice"  # a person looks at the invoice in Sage


@dataclass(frozen=True)
class Row:
    kind: RowKind
    deal_id: str
    detail: str
    action: Action
    advice: str
    event_id: int | None = None
    invoice_id: str | None = None
    invoice_number: str | None = None
    reference: str | None = None
    invoice_url: str | None = None
    deal_url: str | None = None


@dataclass
class Findings:
    """What one run gathers: rows, and what could not be checked."""

    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    async def check(self, name: str, run: Callable[[], Awaitable[list[Row]]]) -> None:
        try:
            self.rows += await run()
        except (UpstreamError, InvoiceBlocked) as exc:
            detail = exc.detail
            self.problems.append(f"{name} could not be checked: {detail}")
            log.warning("reconcile_report.check_failed", check=name, error=detail)


async def run_report(
    session: AsyncSession, bridge: Bridge, *, now: datetime, days: int
) -> ReconciliationReport:
    """Run every check, store the report (committed) and publish its counts as metrics."""
    checks = _Checks(session, bridge, since=now - timedelta(days=days))
    findings = Findings()
    await findings.check("deals in or past the invoice stage", checks.not_invoiced)
    await findings.check("Sage invoices", checks.invoices)
    findings.problems += checks.problems
    report = ReconciliationReport(
        started_at=now,
        finished_at=utcnow(),
        counts={kind.value: sum(1 for r in findings.rows if r.kind is kind) for kind in RowKind},
        rows=[_plain(row) for row in findings.rows],
        problems=findings.problems,
    )
    ReportRepository(session).add(report)
    await session.commit()
    publish(report.counts)
    log.info("reconcile_report.done", rows=len(findings.rows), **report.counts)
    return report


async def report_now(
    sessionmaker: async_sessionmaker[AsyncSession], bridge: Bridge, *, days: int
) -> ReconciliationReport:
    """A run now, in its own session (the worker's daily run, the CLI, ops)."""
    async with sessionmaker() as session:
        return await run_report(session, bridge, now=utcnow(), days=days)


def publish(counts: dict[str, int] | None) -> None:
    """The latest report's counts as `sagebridge_reconciliation_rows{kind}` (0 without one)."""
    for kind in RowKind:
        RECONCILIATION_ROWS.labels(kind.value).set((counts or {}).get(kind.value, 0))


def _plain(row: Row) -> dict[str, Any]:
    return {key: value for key, value in asdict(row).items() if value is not None}


class _Checks:
    def __init__(self, session: AsyncSession, bridge: Bridge, *, since: datetime) -> None:
        self.session = session
        self.bridge = bridge
        self.since = since
        self.crm = bridge.crm.name
        self.prefix = f"{self.crm.upper()}-"
        self._reference = re.compile(rf"^{re.escape(self.prefix)}(\d+)(?:-R(\d+))?$")
        self.problems: list[str] = []

    # --- deals in or past the invoice stage, with no invoice ---------------------------------

    async def not_invoiced(self) -> list[Row]:
        cfg = self.bridge.config
        stages = await self.bridge.crm.stages_from(
            pipeline_id=cfg.trigger_pipeline_id, status_id=cfg.trigger_status_id
        )
        deals = await self.bridge.crm.deals_in_stages(
            pipeline_id=cfg.trigger_pipeline_id,
            status_ids=stages,
            updated_since=int(self.since.timestamp()),
        )
        invoiced = await InvoiceRepository(self.session).invoiced_deals(
            crm=self.crm, deal_ids=[d.id for d in deals]
        )
        events = await self._trigger_events(deals)
        rows = [self._not_invoiced(d, events.get(d.id)) for d in deals if d.id not in invoiced]
        return [row for row in rows if row is not None]

    async def _trigger_events(self, deals: list[DealInStage]) -> dict[str, InboxEvent]:
        cfg = self.bridge.config
        keys = {
            trigger_dedupe_key(
                d.account_id, d.id, cfg.trigger_pipeline_id, cfg.trigger_status_id
            ): d.id
            for d in deals
        }
        found = await InboxRepository(self.session).by_dedupe_keys(list(keys))
        return {keys[key]: event for key, event in found.items()}

    def _not_invoiced(self, deal: DealInStage, event: InboxEvent | None) -> Row | None:
        url = self.bridge.crm.deal_url(deal_id=deal.id)
        where = f"the deal is in stage {deal.status_id} with no invoice"
        if event is None:
            advice = (
                "No event either: the bridge never saw it enter the invoice stage. Move it into "
                "the invoice stage to have it invoiced, or leave it if it was invoiced outside "
                "the bridge."
            )
            return Row(RowKind.NOT_INVOICED, deal.id, where, Action.OPEN_DEAL, advice, deal_url=url)
        if event.state in {*ACTIVE_STATES, EventState.WAITING_CONNECTION, EventState.DISCARDED}:
            return None  # at work, or ended by ops on purpose
        detail = f"{where}; its event ended {event.state}: {event.last_error or 'no error'}"
        if deal.status_id == self.bridge.config.trigger_status_id:
            advice = "Fix what the event's error names, then replay it."
            action = Action.REPLAY
        else:
            advice = (
                "The deal moved on without an invoice. If it needs one, move it back into the "
                "invoice stage; if not (invoiced elsewhere, nothing to bill), discard its event "
                "with the reason: that also takes it off this report."
            )
            action = Action.DISCARD
        return Row(RowKind.NOT_INVOICED, deal.id, detail, action, advice, event.id, deal_url=url)

    # --- Sage's invoices against the CRM and the bridge's records ---------------------------

    async def invoices(self) -> list[Row]:
        listed = await self.bridge.accounting.referenced_invoices(
            prefix=self.prefix, since=self.since.date()
        )
        ours = {inv.id: inv for inv in listed if self._deal_of(inv) is not None}
        records = await InvoiceRepository(self.session).shown_since(crm=self.crm, since=self.since)
        rows = await self._deals_gone(list(ours.values()))
        rows += self._duplicates(list(ours.values()), records)
        gone = {row.deal_id for row in rows if row.kind is RowKind.DEAL_GONE}
        rows += await self._voided(records, ours)
        for record in records:
            live = ours.get(record.invoice_id or "")
            if live is not None and live.status_id != VOID and record.deal_id not in gone:
                rows += await self._drift(record, live)
        return rows

    def _deal_of(self, invoice: InvoiceRef) -> str | None:
        match = self._reference.match(invoice.reference or "")
        return match.group(1) if match else None

    async def _deals_gone(self, invoices: list[InvoiceRef]) -> list[Row]:
        live = [inv for inv in invoices if inv.status_id != VOID]
        deal_ids = sorted({deal for inv in live if (deal := self._deal_of(inv))})
        existing = await self.bridge.crm.existing_deals(deal_ids=deal_ids)
        advice = (
            "The deal was deleted in the CRM. If the sale is off, void the invoice in Sage "
            "(CANCEL_POLICY=void does it for unpaid ones) or credit what was paid."
        )
        return [
            self._invoice_row(RowKind.DEAL_GONE, inv, "its deal no longer exists", advice)
            for inv in live
            if self._deal_of(inv) not in existing
        ]

    def _duplicates(self, invoices: list[InvoiceRef], records: list[DealInvoice]) -> list[Row]:
        shown = {record.invoice_id for record in records}
        by_reference: dict[str, list[InvoiceRef]] = {}
        for inv in invoices:
            if inv.status_id != VOID:
                by_reference.setdefault(inv.reference or "", []).append(inv)
        rows = []
        for reference, same in by_reference.items():
            if len(same) < 2:
                continue
            numbers = ", ".join(inv.number or inv.id for inv in same)
            for inv in same:
                if inv.id not in shown:
                    detail = f"{len(same)} live invoices carry reference {reference} ({numbers})"
                    advice = "Void this one in Sage: the deal shows another (or none)."
                    rows.append(self._invoice_row(RowKind.DUPLICATE_REFERENCE, inv, detail, advice))
        return rows

    async def _voided(self, records: list[DealInvoice], ours: dict[str, InvoiceRef]) -> list[Row]:
        """Deals that still show an invoice cancelled in Sage (not by the bridge); a deal the
        CRM no longer has shows nothing."""
        ids = [record.invoice_id for record in records if record.invoice_id]
        by_bridge = await AdjustmentRepository(self.session).voided(ids)
        found = []
        for record in records:
            if record.invoice_id is None or record.invoice_id in by_bridge:
                continue
            listed = ours.get(record.invoice_id)
            status = listed.status_id if listed else await self._status(record.invoice_id)
            if status in (VOID, None):
                found.append((record, "voided" if status else "deleted"))
        existing = await self.bridge.crm.existing_deals(deal_ids=[r.deal_id for r, _ in found])
        return [self._voided_row(r, how) for r, how in found if r.deal_id in existing]

    async def _status(self, invoice_id: str) -> str | None:
        """An invoice missing from the listing: void, or gone (None)."""
        found = await self.bridge.accounting.get_invoice(invoice_id=invoice_id)
        return found.status_id if found else None

    def _voided_row(self, record: DealInvoice, how: str) -> Row:
        detail = f"the deal still shows invoice {record.invoice_number}, {how} in Sage"
        advice = (
            "Someone cancelled the invoice in Sage. If the deal still needs one, raise it in "
            "Sage by hand and put its number on the deal; if not, clear the deal's invoice "
            "fields. The bridge does not raise a second invoice for a deal on its own."
        )
        return Row(
            RowKind.VOIDED_IN_SAGE,
            record.deal_id,
            detail,
            Action.OPEN_DEAL,
            advice,
            record.event_id,
            record.invoice_id,
            record.invoice_number,
            record.reference,
            record.invoice_url,
            self.bridge.crm.deal_url(deal_id=record.deal_id),
        )

    async def _drift(self, record: DealInvoice, invoice: InvoiceRef) -> list[Row]:
        """The deal's lines priced now against the invoice's total."""
        try:
            deal = await self.bridge.crm.get_deal(deal_id=record.deal_id)
            contents = await self.bridge.crm.deal_contents(deal=deal)
            lines = await price_lines(self.bridge, contents.lines)
        except DealNotFound:
            return []
        except (UnmappedLines, InvoiceBlocked) as exc:
            why = exc.detail if isinstance(exc, InvoiceBlocked) else str(exc)
            self.problems.append(f"deal {record.deal_id} could not be priced: {why}")
            return []
        total = sum((line.net_amount + line.tax_amount for line in lines), Decimal(0))
        if invoice.total_amount is None or total == invoice.total_amount:
            return []
        detail = (
            f"the deal's lines now total {total}, invoice {invoice.number} {invoice.total_amount}"
        )
        advice = (
            "Replay the deal's event: the bridge compares the deal with its invoice and, by "
            "CHANGE_POLICY, opens a task listing the differences or credits and reissues it."
        )
        kind = RowKind.AMOUNT_DRIFT
        return [self._invoice_row(kind, invoice, detail, advice, Action.REPLAY, record.event_id)]

    def _invoice_row(
        self,
        kind: RowKind,
        invoice: InvoiceRef,
        detail: str,
        advice: str,
        action: Action = Action.OPEN_INVOICE,
        event_id: int | None = None,
    ) -> Row:
        deal_id = self._deal_of(invoice) or ""
        return Row(
            kind,
            deal_id,
            detail,
            action,
            advice,
            event_id,
            invoice_id=invoice.id,
            invoice_number=invoice.number,
            reference=invoice.reference,
            invoice_url=invoice.url,
            deal_url=self.bridge.crm.deal_url(deal_id=deal_id),
        )
