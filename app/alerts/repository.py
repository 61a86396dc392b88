"""Every query of the alerts package. Callers commit, except where a claim must be seen by
other workers at once (the scanner's lease, an alert taken for sending)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.models import Alert, AlertCause, AlertEventMark, AlertScan, AlertState
from app.connections.models import Connection
from app.inbox.models import ACTIVE_STATES, InboxEvent


class SignalRepository:
    """Read-only looks at the state other parts of the bridge keep, plus the marks that say
    which event endings have been alerted."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def unmarked_endings(
        self, states: list[str], *, since: datetime, limit: int
    ) -> list[InboxEvent]:
        """Events that ended in `states`, changed since `since`, whose ending has no mark."""
        marked = exists().where(
            AlertEventMark.event_id == InboxEvent.id,
            AlertEventMark.state == InboxEvent.state,
            AlertEventMark.changed_at == InboxEvent.changed_at,
        )
        stmt = (
            select(InboxEvent)
            .where(InboxEvent.state.in_(states), InboxEvent.updated_at >= since, ~marked)
            .order_by(InboxEvent.updated_at, InboxEvent.id)
            .limit(limit)
        )
        return list((await self.session.scalars(stmt)).all())

    def mark(self, events: list[InboxEvent], *, now: datetime) -> None:
        self.session.add_all(
            AlertEventMark(event_id=e.id, state=e.state, changed_at=e.changed_at, marked_at=now)
            for e in events
        )

    async def oldest_waiting(self, *, due_before: datetime) -> tuple[InboxEvent | None, int]:
        """The event due longest before `due_before` that is still waiting, and how many are."""
        waiting = and_(
            InboxEvent.state.in_([s.value for s in ACTIVE_STATES]),
            InboxEvent.next_attempt_at < due_before,
        )
        count = await self.session.scalar(select(func.count()).where(waiting))
        oldest = await self.session.scalars(
            select(InboxEvent).where(waiting).order_by(InboxEvent.next_attempt_at).limit(1)
        )
        return oldest.one_or_none(), int(count or 0)

    async def connections(self) -> list[Connection]:
        rows = await self.session.scalars(
            select(Connection).order_by(Connection.provider, Connection.account)
        )
        return list(rows.all())


class ScanRepository:
    """The scanner's row: a lease taken with one conditional UPDATE, so one worker scans."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(self, name: str, *, now: datetime, lease: timedelta) -> AlertScan | None:
        await self._ensure(name)
        stmt = (
            update(AlertScan)
            .where(
                AlertScan.name == name,
                or_(AlertScan.lease_until.is_(None), AlertScan.lease_until < now),
            )
            .values(lease_until=now + lease)
            .returning(AlertScan.name)
        )
        claimed = (await self.session.execute(stmt)).scalar_one_or_none()
        await self.session.commit()
        if claimed is None:
            return None
        return await self.session.get(AlertScan, name, populate_existing=True)

    async def _ensure(self, name: str) -> None:
        if await self.session.get(AlertScan, name) is not None:
            return
        self.session.add(AlertScan(name=name))
        try:
            await self.session.commit()
        except IntegrityError:  # another worker created it first
            await self.session.rollback()


class CauseRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, cause: str) -> AlertCause | None:
        return await self.session.get(AlertCause, cause)

    def add(self, *, cause: str, kind: str) -> AlertCause:
        row = AlertCause(cause=cause, kind=kind, active=False, held=[], held_count=0)
        self.session.add(row)
        return row

    async def of_kind(self, kind: str) -> list[AlertCause]:
        rows = await self.session.scalars(select(AlertCause).where(AlertCause.kind == kind))
        return list(rows.all())

    async def digests_due(self, *, last_alert_before: datetime) -> list[AlertCause]:
        stmt = select(AlertCause).where(
            AlertCause.held_count > 0, AlertCause.last_alert_at <= last_alert_before
        )
        return list((await self.session.scalars(stmt)).all())


class AlertRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add_all(self, alerts: list[Alert]) -> None:
        self.session.add_all(alerts)

    async def claim_due(self, *, now: datetime, lease: timedelta) -> Alert | None:
        """The oldest alert due for sending, taken for one worker until the lease ends (an
        attempt is counted now: a worker that dies sending it still used one). Committed, so
        no transaction stays open while it is being sent."""
        alert_id = await self.session.scalar(
            select(Alert.id).where(*_due(now)).order_by(Alert.id).limit(1)
        )
        if alert_id is None:
            await self.session.rollback()
            return None
        stmt = (
            update(Alert)
            .where(Alert.id == alert_id, *_due(now))
            .values(lease_until=now + lease, attempts=Alert.attempts + 1)
            .returning(Alert)
            .execution_options(populate_existing=True)
        )
        # None: another worker took it between the two statements.
        claimed = (await self.session.scalars(stmt)).one_or_none()
        await self.session.commit()
        return claimed

    async def list(
        self, *, states: list[str] | None, kind: str | None, limit: int, offset: int
    ) -> tuple[list[Alert], int]:
        query = select(Alert)
        if states:
            query = query.where(Alert.state.in_(states))
        if kind:
            query = query.where(Alert.kind == kind)
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.scalars(
            query.order_by(Alert.created_at.desc(), Alert.id.desc()).limit(limit).offset(offset)
        )
        return list(rows.all()), int(total or 0)


def _due(now: datetime) -> list[Any]:
    return [
        Alert.state == AlertState.PENDING.value,
        Alert.next_attempt_at <= now,
        or_(Alert.lease_until.is_(None), Alert.lease_until < now),
    ]
