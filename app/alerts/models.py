"""The alerts' tables: the outbox, each cause's rate limit and digest, the scanner's lease and
cursor, and the marks of event endings already alerted (see `app.alerts`)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models import Base, BigId, utcnow


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
