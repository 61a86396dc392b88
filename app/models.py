"""Database tables: the deal → invoice record and what the bridge did to invoices after raising
them (credit notes, voids), the sync log, watermarks, contact links, the mapping versions and
the reconciliation reports. The inbox of events is `app.inbox.models`, the alerts' tables
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
    Index,
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
    # 1 for the deal's first invoice; each reissue (a credit note, then a new invoice) adds one,
    # and the new invoice's reference and idempotency key name it.
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # The money fields as last written to the deal (PaymentView's fields, as text), so only
    # what changes is written again.
    shown_money: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AdjustmentKind(enum.StrEnum):
    CREDIT_NOTE = "credit_note"  # the invoice credited whole, then reissued (CHANGE_POLICY)
    VOID = "void"  # the invoice voided: the deal was lost or deleted (CANCEL_POLICY)


class AdjustmentState(enum.StrEnum):
    # Written before the accounting call: a crash here means "look it up before doing it again".
    POSTING = "posting"
    CREATED = "created"  # the credit note exists, not yet set against the invoice
    ALLOCATED = "allocated"  # the credit note is set against the invoice: a new invoice is owed
    DONE = "done"  # the new invoice is on the deal; or the invoice is voided


class InvoiceAdjustment(Base):
    """One thing the bridge did to an invoice it raised, once: unique per (kind, invoice)."""

    __tablename__ = "invoice_adjustments"
    __table_args__ = (
        UniqueConstraint("kind", "invoice_id", name="uq_invoice_adjustment"),
        Index("ix_invoice_adjustments_deal", "crm", "account_id", "deal_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    crm: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[str] = mapped_column(String(64))
    deal_id: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[int] = mapped_column(ForeignKey("inbox_events.id"))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    # The invoice adjusted, as it was on the deal.
    invoice_id: Mapped[str] = mapped_column(String(64))
    invoice_number: Mapped[str | None] = mapped_column(String(64))
    invoice_reference: Mapped[str] = mapped_column(String(64))
    contact_id: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    # Why: the differences that led to a reissue, or the void reason sent to the accounting.
    reason: Mapped[str] = mapped_column(Text)
    # The credit note raised (none for a void), and the key its POST carries.
    document_id: Mapped[str | None] = mapped_column(String(64))
    document_number: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @classmethod
    def of(
        cls, record: DealInvoice, kind: AdjustmentKind, *, event_id: int, **what: Any
    ) -> InvoiceAdjustment:
        """The adjustment of the deal's invoice as the deal shows it now; `what`: contact_id,
        amount, reason, idempotency_key."""
        assert record.invoice_id is not None
        return cls(
            crm=record.crm,
            account_id=record.account_id,
            deal_id=record.deal_id,
            event_id=event_id,
            kind=kind.value,
            invoice_id=record.invoice_id,
            invoice_number=record.invoice_number,
            invoice_reference=record.reference,
            **what,
        )


class ReconciliationReport(Base):
    """One run of the reconciliation report: what it found, row by row, and the counts."""

    __tablename__ = "reconciliation_reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime]
    counts: Mapped[dict[str, Any]]
    rows: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # What could not be checked (an upstream down, a deal that could not be read), if anything.
    problems: Mapped[list[str]] = mapped_column(JSON)


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
