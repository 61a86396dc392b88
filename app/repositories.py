"""SQL for invoices, the sync log, watermarks and contact links (the inbox's own is in
`app.inbox.repository`). Callers decide when to commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import as_utc, dialect_name
from app.lineage import Entry
from app.models import ContactLink, DealInvoice, InvoiceRecordState, SyncCursor, SyncRecord, utcnow


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
        try:
            # A savepoint: losing the race must not roll back (and detach) the claimed event.
            async with self.session.begin_nested():
                self.session.add(record)
        except IntegrityError:
            return None
        return record


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
