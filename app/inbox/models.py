"""The inbox's tables (its events, and their counts by state) and its vocabulary: the states an
event moves through (see `app.inbox` for the diagram) and the sets of states the rest of the
bridge asks about."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models import Base, BigId, utcnow


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
    # An invoiced deal moved into the trigger stage again (CHANGE_POLICY):
    UNCHANGED = "unchanged"  # terminal: its lines are what was invoiced; nothing done
    CHANGED = "changed"  # terminal: its lines differ; the manager has a task listing how
    REISSUED = "reissued"  # terminal: the old invoice credited in full, a new one on the deal
    # An invoiced deal lost or deleted (CANCEL_POLICY):
    VOIDED = "voided"  # terminal: its unpaid invoice is voided and the deal shows "void"
    KEPT = "kept"  # terminal: its invoice stands (policy, or money on it); a task says so


TERMINAL_STATES = frozenset(
    {
        EventState.INVOICED,
        EventState.SKIPPED,
        EventState.NEEDS_MAPPING,
        EventState.FAILED,
        EventState.APPLIED,
        EventState.DISCARDED,
        EventState.UNCHANGED,
        EventState.CHANGED,
        EventState.REISSUED,
        EventState.VOIDED,
        EventState.KEPT,
    }
)
# A later move of the deal into the trigger stage starts these over: an invoiced deal's lines
# are compared with its invoice again. Not DISCARDED: ops end an event by hand when, e.g., the
# deal was invoiced outside the bridge.
REOPENABLE_STATES = frozenset(
    {
        EventState.SKIPPED,
        EventState.NEEDS_MAPPING,
        EventState.FAILED,
        EventState.INVOICED,
        EventState.UNCHANGED,
        EventState.CHANGED,
        EventState.REISSUED,
    }
)
# Ends after which the deal needs nothing more from its manager: the bridge's open tasks for it
# are completed.
RESOLVED_STATES = frozenset(
    {EventState.INVOICED, EventState.UNCHANGED, EventState.REISSUED, EventState.VOIDED}
)
# Waiting for a worker: the sweeper re-delivers these, and their age is the queue's lag.
ACTIVE_STATES = (EventState.PENDING, EventState.RETRYING)
# What ops look at unless they ask for other states: `/ops/retries` and `sagebridge events list`.
NEEDS_ATTENTION = (
    EventState.PENDING,
    EventState.RETRYING,
    EventState.WAITING_CONNECTION,
    EventState.FAILED,
    EventState.NEEDS_MAPPING,
    EventState.CHANGED,
    EventState.KEPT,
)


class TaskState(enum.StrEnum):
    """The event's work with CRM tasks: open (or reuse) the manager's task when it ends without
    an invoice; complete the bridge's open tasks for the deal when it ends invoiced."""

    PENDING = "pending"  # task work is due (the sweeper offers it again after a failure)
    CREATED = "created"  # the manager's task is open (opened now, or the deal's open one reused)
    CLOSED = "closed"  # resolved: the bridge's open tasks for the deal are completed
    FAILED = "failed"  # the CRM refused it every time; ops see it in the retry queue


class TaskReason(enum.StrEnum):
    """Why the bridge asks a manager for something: one open task per deal and reason. Every
    reason is resolved once the deal ends in a resolved state (`RESOLVED_STATES`)."""

    NOT_RAISED = "not_raised"  # no invoice: a refusal, retries exhausted, the deal's own data
    NEEDS_MAPPING = "needs_mapping"  # no invoice: a product has no ledger mapping
    WRITE_BACK_REFUSED = "write_back_refused"  # the invoice exists; the CRM would not show it
    DEAL_CHANGED = "deal_changed"  # the deal's lines differ from its invoice; nothing was posted
    INVOICE_KEPT = "invoice_kept"  # the deal was lost or deleted; its invoice stands


# Rows the sweeper looks for (`repository._workable`): work due, or a task to open.
WORKABLE = "state IN ('pending', 'retrying') OR task_state = 'pending'"


class InboxEvent(Base):
    """One thing the CRM told us, stored before we answer it. Redis only delivers these."""

    __tablename__ = "inbox_events"
    # The sweeper (state or task_state due) and the sync log's counts over a time range
    # (migration 0013; measured by `python -m bench --only scale`).
    __table_args__ = (
        Index(
            "ix_inbox_events_workable",
            "id",
            postgresql_where=text(WORKABLE),
            sqlite_where=text(WORKABLE),
        ),
        Index("ix_inbox_events_received_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    account_id: Mapped[str] = mapped_column(String(64))
    deal_id: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32))
    # The CRM's own identifiers, as text (see `app.domain.Deal`).
    pipeline_id: Mapped[str | None] = mapped_column(String(64))
    status_id: Mapped[str | None] = mapped_column(String(64))
    responsible_user_id: Mapped[str | None] = mapped_column(String(64))
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
    task_reason: Mapped[str | None] = mapped_column(String(32))
    task_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Claims of this event by a worker; a job that times out or dies still counts, so an event
    # that always kills its job ends instead of looping.
    runs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DealTask(Base):
    """A task the bridge opened in the CRM: which deal, why, its id and text, and when it was
    completed (by the bridge once the deal is invoiced, or noticed done or gone in the CRM)."""

    __tablename__ = "deal_tasks"
    __table_args__ = (Index("ix_deal_tasks_deal", "crm", "account_id", "deal_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    crm: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[str] = mapped_column(String(64))
    deal_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    task_id: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    # The event that opened it (a reopened or replayed event keeps its id).
    event_id: Mapped[int] = mapped_column(ForeignKey("inbox_events.id"))
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None]


class InboxStateCount(Base):
    """A change in how many inbox events are in one state: the count of a state is the sum of
    its rows. The database writes them itself (triggers on inbox_events, migration 0014), so
    every statement that moves an event counts, whichever code sent it. Append-only, so
    concurrent writers never wait on a shared counter row; the sweeper folds them into one row
    per state (`InboxRepository.compact_state_counts`)."""

    __tablename__ = "inbox_state_counts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    state: Mapped[str] = mapped_column(String(32))
    n: Mapped[int] = mapped_column(BigInteger)
