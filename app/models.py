"""Database tables: the deal → invoice record, the sync log, watermarks, contact links and the
mapping versions. The inbox of events is `app.inbox.models`, the alerts' tables
`app.alerts.models`."""

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


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON}


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
