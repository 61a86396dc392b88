"""Identifiers and time shared by the simulators."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def new_hex_id() -> str:
    """A 32-character lowercase hex id, the shape Sage uses for every record."""
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)
