"""All SQL lives here. Callers decide when to commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.lineage import Entry
from app.models import (
    REOPENABLE_STATES,
    ContactLink,
    DealInvoice,
    EventState,
    InboxEvent,
    InvoiceRecordState,
    SyncCursor,
    SyncRecord,
    TaskState,
    utcnow,
)

ACTIVE_STATES = (EventState.PENDING, EventState.RETRYING)
# Built once: the webhook's hot path spent a quarter of its time rebuilding this (bench/).
_INSERT_EVENT = {
    name: insert(InboxEvent)
    .on_conflict_do_nothing(index_elements=["dedupe_key"])
    .returning(InboxEvent.id)
    for name, insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
}


@dataclass(frozen=True)
class NewEvent:
    source: str
    dedupe_key: str
    account_id: str
    deal_id: str
    action: str
    pipeline_id: int | None
    status_id: int | None
    responsible_user_id: int | None
    changed_at: int
    state: EventState
    payload: dict[str, Any]
    last_error: str | None = None


class InboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def record(self, events: list[NewEvent]) -> list[int]:
        """Store each event once (by dedupe key); return the ids that now need a job."""
        due: list[int] = []
        for new in events:
            event_id = await self._insert_if_new(new)
            if event_id is None and new.state == EventState.PENDING:
                event_id = await self._reopen(new)
            if event_id is not None and new.state == EventState.PENDING:
                due.append(event_id)
        return due

    async def _insert_if_new(self, new: NewEvent) -> int | None:
        values = {
            "source": new.source,
            "dedupe_key": new.dedupe_key,
            "account_id": new.account_id,
            "deal_id": new.deal_id,
            "action": new.action,
            "pipeline_id": new.pipeline_id,
            "status_id": new.status_id,
            "responsible_user_id": new.responsible_user_id,
            "changed_at": new.changed_at,
            "state": new.state.value,
            "attempts": 0,
            "next_attempt_at": utcnow() if new.state == EventState.PENDING else None,
            "last_error": new.last_error,
            "payload": new.payload,
            "received_at": utcnow(),
            "updated_at": utcnow(),
        }
        result = await self.session.execute(_INSERT_EVENT[self._dialect], values)
        event_id: int | None = result.scalar_one_or_none()
        return event_id

    async def _reopen(self, new: NewEvent) -> int | None:
        """A newer move into the trigger stage starts a finished (not invoiced) event over."""
        stmt = (
            update(InboxEvent)
            .where(
                InboxEvent.dedupe_key == new.dedupe_key,
                InboxEvent.state.in_([s.value for s in REOPENABLE_STATES]),
                InboxEvent.changed_at < new.changed_at,
                # Not under a worker's feet: it would save its stale copy over the reopening.
                # A move missed this way is found by reconciliation.
                or_(InboxEvent.lease_until.is_(None), InboxEvent.lease_until < utcnow()),
            )
            .values(
                state=EventState.PENDING.value,
                attempts=0,
                next_attempt_at=utcnow(),
                changed_at=new.changed_at,
                responsible_user_id=new.responsible_user_id,
                payload=new.payload,
                last_error=None,
                task_state=None,
                task_text=None,
                task_id=None,
                task_attempts=0,
                runs=0,
                updated_at=utcnow(),
            )
            .returning(InboxEvent.id)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def claim(self, event_id: int, *, lease: timedelta) -> InboxEvent | None:
        """Take the event for one worker until the lease ends; None if it is not ours to run."""
        now = utcnow()
        stmt = (
            update(InboxEvent)
            .where(InboxEvent.id == event_id, *_workable(now))
            .values(lease_until=now + lease, runs=InboxEvent.runs + 1, updated_at=now)
            .returning(InboxEvent.id)
        )
        claimed = (await self.session.execute(stmt)).scalar_one_or_none()
        if claimed is None:
            return None
        await self.session.commit()
        return await self.session.get(InboxEvent, event_id, populate_existing=True)

    async def due(self, *, now: datetime, limit: int = 500) -> list[InboxEvent]:
        """Events a worker should be running now and that no worker holds (for the sweeper)."""
        stmt = select(InboxEvent).where(*_workable(now)).order_by(InboxEvent.id).limit(limit)
        return list((await self.session.scalars(stmt)).all())

    async def get(self, event_id: int) -> InboxEvent | None:
        return await self.session.get(InboxEvent, event_id)

    async def get_many(self, ids: set[int]) -> dict[int, InboxEvent]:
        rows = await self.session.scalars(select(InboxEvent).where(InboxEvent.id.in_(ids)))
        return {row.id: row for row in rows.all()}

    async def list(
        self, *, states: list[str] | None, limit: int, offset: int
    ) -> tuple[list[InboxEvent], int]:
        query = select(InboxEvent)
        if states:
            query = query.where(InboxEvent.state.in_(states))
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.scalars(
            query.order_by(InboxEvent.id.desc()).limit(limit).offset(offset)
        )
        return list(rows.all()), int(total or 0)

    async def oldest_active(self) -> datetime | None:
        stmt = select(func.min(InboxEvent.received_at)).where(
            InboxEvent.state.in_([s.value for s in ACTIVE_STATES])
        )
        value = await self.session.scalar(stmt)
        return _utc(value)

    async def count_by_state(
        self, *, since: datetime | None = None, until: datetime | None = None
    ) -> dict[str, int]:
        query = select(InboxEvent.state, func.count()).group_by(InboxEvent.state)
        if since:
            query = query.where(InboxEvent.received_at >= since)
        if until:
            query = query.where(InboxEvent.received_at < until)
        rows = await self.session.execute(query)
        return {state: int(count) for state, count in rows.all()}

    @property
    def _dialect(self) -> str:
        return _dialect(self.session)


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
        return _utc(await self.session.scalar(select(func.min(DealInvoice.created_at))))

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
        insert = postgresql.insert if _dialect(self.session) == "postgresql" else sqlite.insert
        stmt = insert(ContactLink).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["accounting", "email"],
            set_={
                "accounting_contact_id": values["accounting_contact_id"],
                "currency": values["currency"],
            },
        )
        await self.session.execute(stmt)


def _workable(now: datetime) -> list[Any]:
    """Due (work or a task to open), and not held by a live lease."""
    return [
        or_(
            InboxEvent.state.in_([s.value for s in ACTIVE_STATES]),
            InboxEvent.task_state == TaskState.PENDING.value,
        ),
        or_(InboxEvent.next_attempt_at.is_(None), InboxEvent.next_attempt_at <= now),
        or_(InboxEvent.lease_until.is_(None), InboxEvent.lease_until < now),
    ]


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _utc(value: datetime | None) -> datetime | None:
    """Aggregates bypass the column type, so SQLite hands back a naive UTC datetime."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
