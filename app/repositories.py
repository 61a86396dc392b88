"""SQL for invoices and their adjustments, the sync log, watermarks, contact links and the
reconciliation reports (the inbox's own is in `app.inbox.repository`). Callers decide when to
commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from sqlalchemy import func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import as_utc, dialect_name
from app.lineage import Entry
from app.models import (
    AdjustmentKind,
    AdjustmentState,
    ContactLink,
    DealInvoice,
    InvoiceAdjustment,
    InvoiceRecordState,
    ReconciliationReport,
    SyncCursor,
    SyncRecord,
    utcnow,
)

Row = TypeVar("Row")


class InvoiceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, *, crm: str, account_id: str, deal_id: str) -> DealInvoice | None:
        stmt = select(DealInvoice).where(
            DealInvoice.crm == crm,
            DealInvoice.account_id == account_id,
            DealInvoice.deal_id == deal_id,
        )
        return (await self.session.scalars(stmt)).one_or_none()

    async def by_invoice_ids(self, ids: list[str]) -> dict[str, DealInvoice]:
        if not ids:
            return {}
        rows = await self.session.scalars(
            select(DealInvoice).where(DealInvoice.invoice_id.in_(ids))
        )
        return {row.invoice_id: row for row in rows.all() if row.invoice_id}

    async def past_due(self, *, today: date, statuses: list[str]) -> list[DealInvoice]:
        """Invoices shown as unpaid/part paid whose due date has passed with money outstanding."""
        stmt = select(DealInvoice).where(
            DealInvoice.payment_status.in_(statuses),
            DealInvoice.due_date < today,
            or_(DealInvoice.outstanding_amount.is_(None), DealInvoice.outstanding_amount > 0),
        )
        return list((await self.session.scalars(stmt)).all())

    async def earliest_created(self) -> datetime | None:
        return as_utc(await self.session.scalar(select(func.min(DealInvoice.created_at))))

    async def has_invoice(self, *, crm: str, account_id: str, deal_ids: list[str]) -> set[str]:
        stmt = select(DealInvoice.deal_id).where(
            DealInvoice.crm == crm,
            DealInvoice.account_id == account_id,
            DealInvoice.deal_id.in_(deal_ids),
        )
        return set((await self.session.scalars(stmt)).all())

    async def start(self, record: DealInvoice) -> DealInvoice | None:
        """Insert the POSTING marker; None when another attempt already holds this deal."""
        record.state = InvoiceRecordState.POSTING.value
        return await _insert_once(self.session, record)

    async def shown_since(self, *, crm: str, since: datetime) -> list[DealInvoice]:
        """The invoices deals show (written back), raised since `since`."""
        stmt = select(DealInvoice).where(
            DealInvoice.crm == crm,
            DealInvoice.state == InvoiceRecordState.WRITTEN_BACK.value,
            DealInvoice.created_at >= since,
        )
        return list((await self.session.scalars(stmt.order_by(DealInvoice.id))).all())

    async def invoiced_deals(self, *, crm: str, deal_ids: list[str]) -> dict[str, DealInvoice]:
        """Those of these deals that have an invoice (not merely one being raised)."""
        if not deal_ids:
            return {}
        stmt = select(DealInvoice).where(
            DealInvoice.crm == crm,
            DealInvoice.deal_id.in_(deal_ids),
            DealInvoice.invoice_id.is_not(None),
        )
        return {row.deal_id: row for row in (await self.session.scalars(stmt)).all()}


async def _insert_once(session: AsyncSession, row: Row) -> Row | None:
    """Insert a marker row; None when a unique constraint says another attempt holds it."""
    try:
        # A savepoint: losing the race must not roll back (and detach) the claimed event.
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return None
    return row


class AdjustmentRepository:
    """What the bridge did to invoices after raising them: one row per kind and invoice."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, *, kind: AdjustmentKind, invoice_id: str) -> InvoiceAdjustment | None:
        stmt = select(InvoiceAdjustment).where(
            InvoiceAdjustment.kind == kind.value, InvoiceAdjustment.invoice_id == invoice_id
        )
        return (await self.session.scalars(stmt)).one_or_none()

    async def unfinished_reissue(
        self, *, crm: str, account_id: str, deal_id: str
    ) -> InvoiceAdjustment | None:
        """A credit note started for the deal whose new invoice is not on the deal yet."""
        stmt = select(InvoiceAdjustment).where(
            InvoiceAdjustment.crm == crm,
            InvoiceAdjustment.account_id == account_id,
            InvoiceAdjustment.deal_id == deal_id,
            InvoiceAdjustment.kind == AdjustmentKind.CREDIT_NOTE.value,
            InvoiceAdjustment.state != AdjustmentState.DONE.value,
        )
        return (await self.session.scalars(stmt.order_by(InvoiceAdjustment.id))).first()

    async def voided(self, invoice_ids: list[str]) -> set[str]:
        """Which of these invoices the bridge itself voided (or is voiding)."""
        if not invoice_ids:
            return set()
        stmt = select(InvoiceAdjustment.invoice_id).where(
            InvoiceAdjustment.kind == AdjustmentKind.VOID.value,
            InvoiceAdjustment.invoice_id.in_(invoice_ids),
        )
        return set((await self.session.scalars(stmt)).all())

    async def start(self, adjustment: InvoiceAdjustment) -> InvoiceAdjustment | None:
        """Insert the POSTING marker; None when this invoice already has one of this kind."""
        adjustment.state = AdjustmentState.POSTING.value
        return await _insert_once(self.session, adjustment)


class ReportRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, report: ReconciliationReport) -> None:
        self.session.add(report)

    async def latest(self) -> ReconciliationReport | None:
        stmt = select(ReconciliationReport).order_by(ReconciliationReport.started_at.desc())
        return (await self.session.scalars(stmt.limit(1))).first()

    async def latest_counts(self) -> dict[str, int] | None:
        """The latest report's counts alone (its rows may be many)."""
        stmt = select(ReconciliationReport.counts).order_by(ReconciliationReport.started_at.desc())
        counts: dict[str, int] | None = (await self.session.scalars(stmt.limit(1))).first()
        return counts


class SyncLogRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, *, event_id: int, deal_id: str, entries: list[Entry]) -> None:
        self.session.add_all(
            SyncRecord(
                event_id=event_id,
                deal_id=deal_id,
                record=e.record,
                action=e.action,
                detail=e.detail,
                at=e.at,
            )
            for e in entries
        )

    async def list(
        self, *, filters: SyncLogFilter, limit: int, offset: int
    ) -> tuple[list[SyncRecord], int]:
        query = select(SyncRecord).where(*filters.clauses())
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.scalars(
            query.order_by(SyncRecord.at.desc(), SyncRecord.id.desc()).limit(limit).offset(offset)
        )
        return list(rows.all()), int(total or 0)

    async def count_by_action(self, filters: SyncLogFilter) -> dict[str, dict[str, int]]:
        """{record: {action: count}} within the filter's window."""
        rows = await self.session.execute(
            select(SyncRecord.record, SyncRecord.action, func.count())
            .where(*filters.clauses())
            .group_by(SyncRecord.record, SyncRecord.action)
        )
        counts: dict[str, dict[str, int]] = {}
        for record, action, count in rows.all():
            counts.setdefault(record, {})[action] = int(count)
        return counts


@dataclass(frozen=True)
class SyncLogFilter:
    deal_id: str | None = None
    record: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def clauses(self) -> list[Any]:
        clauses: list[Any] = []
        if self.deal_id:
            clauses.append(SyncRecord.deal_id == self.deal_id)
        if self.record:
            clauses.append(SyncRecord.record == self.record)
        if self.action:
            clauses.append(SyncRecord.action == self.action)
        if self.since:
            clauses.append(SyncRecord.at >= self.since)
        if self.until:
            clauses.append(SyncRecord.at < self.until)
        return clauses


class CursorRepository:
    """Durable watermarks, one row each."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, name: str) -> datetime | None:
        cursor = await self.session.get(SyncCursor, name)
        return cursor.value if cursor else None

    async def set(self, name: str, value: datetime) -> None:
        cursor = await self.session.get(SyncCursor, name)
        if cursor is None:
            self.session.add(SyncCursor(name=name, value=value))
        else:
            cursor.value = value


class ContactLinkRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, *, accounting: str, email: str) -> ContactLink | None:
        stmt = select(ContactLink).where(
            ContactLink.accounting == accounting, ContactLink.email == email.casefold()
        )
        return (await self.session.scalars(stmt)).one_or_none()

    async def remember(
        self,
        *,
        accounting: str,
        email: str,
        crm_contact_id: str,
        accounting_contact_id: str,
        currency: str | None = None,
    ) -> None:
        values = {
            "accounting": accounting,
            "email": email.casefold(),
            "crm_contact_id": crm_contact_id,
            "accounting_contact_id": accounting_contact_id,
            "currency": currency,
            "created_at": utcnow(),
        }
        insert = postgresql.insert if dialect_name(self.session) == "postgresql" else sqlite.insert
        stmt = insert(ContactLink).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["accounting", "email"],
            set_={
                "accounting_contact_id": values["accounting_contact_id"],
                "currency": values["currency"],
            },
        )
        await self.session.execute(stmt)
