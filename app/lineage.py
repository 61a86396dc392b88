"""The sync log's lineage: what one event led to, collected while it runs, stored when it ends.

Business code calls `note(...)` ("contact reused", "line mapped to ledger 4000 at 20 %"); every
upstream request made through `app.clients.http.send` is noted too, with its bodies truncated
and secrets removed. `process_event` starts a collection and stores it with the event.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from app.logging import _redact_value
from app.models import utcnow

MAX_BODY = 2000

_current: ContextVar[list[Entry] | None] = ContextVar("lineage", default=None)


@dataclass(frozen=True)
class Entry:
    record: str  # deal, contact, invoice, line, request, event
    action: str  # created, updated, reused, mapped, skipped, failed, request, ...
    detail: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)


def begin() -> None:
    _current.set([])


def drain() -> list[Entry]:
    entries = _current.get() or []
    _current.set(None)
    return entries


def note(record: str, action: str, **detail: Any) -> None:
    entries = _current.get()
    if entries is not None:
        entries.append(Entry(record, action, detail))


def note_request(
    *, api: str, method: str, path: str, status: str, ms: float, request: Any, response: Any
) -> None:
    note(
        "request",
        "request",
        api=api,
        method=method,
        path=path,
        status=status,
        ms=round(ms, 1),
        request_body=clip(request),
        response_body=clip(response),
    )


def clip(body: Any) -> str | None:
    """A body as text: secrets removed, at most MAX_BODY characters."""
    if body is None or body == b"":
        return None
    if isinstance(body, bytes):
        body = _structured(body.decode("utf-8", "replace"))
    text = json.dumps(_redact_value(body), default=str) if not isinstance(body, str) else body
    return text if len(text) <= MAX_BODY else text[:MAX_BODY] + "…"


def _structured(text: str) -> Any:
    """JSON or a form body as data, so secret-looking keys are found; else redacted text."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        return _redact_value(text)
