"""Database tables: the durable inbox of events, the deal → invoice record, and contact links."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the way out, whatever the backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventState(enum.StrEnum):
    PENDING = "pending"  # due now
    RETRYING = "retrying"  # waiting for next_attempt_at after a transient failure
    # Parked: an upstream connection needs re-authorisation; resumes when it is active again.
    WAITING_CONNECTION = "waiting_connection"
    INVOICED = "invoiced"  # terminal: invoice exists and is written back to the deal
    SKIPPED = "skipped"  # terminal: nothing to do (other stage, or deal no longer in the stage)
    NEEDS_MAPPING = "needs_mapping"  # terminal: a line has no ledger mapping; manager has a task
    FAILED = "failed"  # terminal: permanent error or retries exhausted; manager has a task
    APPLIED = "applied"  # terminal: an accounting status callback was applied to the deal
    DISCARDED = "discarded"  # terminal: ops ended it by hand, with a reason


TERMINAL_STATES = frozenset(
    {
        EventState.INVOICED,
        EventState.SKIPPED,
        EventState.NEEDS_MAPPING,
        EventState.FAILED,
        EventState.APPLIED,
        EventState.DISCARDED,
    }
)
# A later move of the deal into the trigger stage starts these over.
# Not DISCARDED: ops end an event by hand when, e.g., the deal was invoiced outside the bridge.
REOPENABLE_STATES = frozenset({EventState.SKIPPED, EventState.NEEDS_MAPPING, EventState.FAILED})


class TaskState(enum.StrEnum):
    PENDING = "pending"  # a task must be opened for this event
    CREATED = "created"
    FAILED = "failed"  # the CRM refused it every time; ops see it in the retry queue


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON}


class InboxEvent(Base):
    """One thing the CRM told us, stored before we answer it. Redis only delivers these."""

    __tablename__ = "inbox_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    account_id: Mapped[str] = mapped_column(String(64))
    deal_id: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32))
    pipeline_id: Mapped[int | None] = mapped_column(BigInteger)
    status_id: Mapped[int | None] = mapped_column(BigInteger)
    responsible_user_id: Mapped[int | None] = mapped_column(BigInteger)
    # The CRM's change timestamp: a newer move into the stage reopens a finished event.
    changed_at: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(32), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    task_state: Mapped[str | None] = mapped_column(String(16))
    task_text: Mapped[str | None] = mapped_column(Text)
    task_id: Mapped[str | None] = mapped_column(String(64))
    task_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Claims of this event by a worker; a job that times out or dies still counts, so an event
    # that always kills its job ends instead of looping.
    runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class InvoiceRecordState(enum.StrEnum):
    POSTING = "posting"  # written before the accounting POST: a crash here means "look it up"
    CREATED = "created"
    WRITTEN_BACK = "written_back"


class DealInvoice(Base):
    """Exactly one invoice per deal: the unique constraint is the local guarantee."""

    __tablename__ = "deal_invoices"
    __table_args__ = (UniqueConstraint("crm", "account_id", "deal_id", name="uq_deal_invoice"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    crm: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[str] = mapped_column(String(64))
    deal_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[int] = mapped_column(ForeignKey("inbox_events.id"))
    state: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str] = mapped_column(String(64))
    # The key the next POST carries. A definitive refusal (4xx) closes it: the generation moves
    # on and a new key is derived, so a fixed deal is not answered with the old refusal.
    idempotency_key: Mapped[str] = mapped_column(String(32))
    idempotency_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    contact_id: Mapped[str | None] = mapped_column(String(64))
    invoice_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    invoice_number: Mapped[str | None] = mapped_column(String(64))
    invoice_url: Mapped[str | None] = mapped_column(Text)
    total_amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    # Payment status as last applied to the deal, and the Sage `updated_at` it came from, so an
    # older status never overwrites a newer one.
    payment_status: Mapped[str | None] = mapped_column(String(16))
    status_source_updated_at: Mapped[datetime | None]
    outstanding_amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    due_date: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SyncRecord(Base):
    """The sync log: one line of what an event led to (a request, a mapping, a result)."""

    __tablename__ = "sync_records"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("inbox_events.id"), index=True)
    deal_id: Mapped[str] = mapped_column(String(64), index=True)
    record: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]]
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class SyncCursor(Base):
    """A durable watermark (e.g. Sage's updated_or_created_since), advanced only after applying."""

    __tablename__ = "sync_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[datetime]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ContactLink(Base):
    """CRM customer email → accounting contact id, so a customer is found, not duplicated."""

    __tablename__ = "contact_links"
    __table_args__ = (UniqueConstraint("accounting", "email", name="uq_contact_link"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    accounting: Mapped[str] = mapped_column(String(32))
    email: Mapped[str] = mapped_column(String(320))
    crm_contact_id: Mapped[str] = mapped_column(String(64))
    accounting_contact_id: Mapped[str] = mapped_column(String(64))
    # ISO 4217 code the accounting contact trades in; NULL on links made before it was kept.
    currency: Mapped[str | None] = mapped_column(String(3))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MappingVersion(Base):
    """One ledger mapping that was in force; the newest row is the one every process uses."""

    __tablename__ = "mapping_versions"
    __table_args__ = (UniqueConstraint("replaces_id", name="uq_mapping_version_replaces"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The version this one replaced (0 for the first). Unique, so two processes storing the same
    # edit at once cannot both succeed: the loser re-reads and finds the edit already in force.
    replaces_id: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(Text)
    rule_count: Mapped[int] = mapped_column(Integer)
    how: Mapped[str] = mapped_column(String(16))
    loaded_by: Mapped[str] = mapped_column(String(255))
    loaded_at: Mapped[datetime] = mapped_column(default=utcnow)


class MappingRefusal(Base):
    """An edit of the mapping file that was refused; shown until a later load succeeds."""

    __tablename__ = "mapping_refusals"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(Text)
    problems: Mapped[list[str]] = mapped_column(JSON)
    how: Mapped[str] = mapped_column(String(16))
    refused_by: Mapped[str] = mapped_column(String(255))
    refused_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(index=True)


class AlertState(enum.StrEnum):
    PENDING = "pending"  # waiting to be sent (first try, or a retry at next_attempt_at)
    SENT = "sent"  # every channel took it
    FAILED = "failed"  # a channel still refused it after the last retry
    RECORDED = "recorded"  # no channel is configured: recorded and logged only


class Alert(Base):
    """The alert outbox (app/alerts/): written in the scan that found the cause, sent by the
    worker's alerts job; `delivered` lists the channels that took it, so a retry skips them."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The Standard Webhooks `webhook-id`: the same on every retry, so receivers can deduplicate.
    message_id: Mapped[str] = mapped_column(String(40), unique=True)
    cause: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    digest: Mapped[bool]
    count: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(255))
    text: Mapped[str] = mapped_column(Text)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    channels: Mapped[list[str]] = mapped_column(JSON)
    delivered: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    sent_at: Mapped[datetime | None]


class AlertCause(Base):
    """One cause (kind + subject): whether its condition holds, when it last alerted, and what
    happened since, held for the digest."""

    __tablename__ = "alert_causes"

    cause: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    active: Mapped[bool] = mapped_column(default=False)
    last_alert_at: Mapped[datetime | None]
    held: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    held_count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AlertScan(Base):
    """The alert scanner's row: the lease that lets one worker scan at a time, and the cursor
    over finished events (their updated_at, up to which every one has been looked at)."""

    __tablename__ = "alert_scans"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    lease_until: Mapped[datetime | None]
    events_seen_until: Mapped[datetime | None]
    last_run_at: Mapped[datetime | None]


class AlertEventMark(Base):
    """An event's ending that has been alerted (once per ending: a move of the deal into the
    stage again is a new ending)."""

    __tablename__ = "alert_event_marks"

    event_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    state: Mapped[str] = mapped_column(String(32), primary_key=True)
    changed_at: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    marked_at: Mapped[datetime] = mapped_column(default=utcnow)
