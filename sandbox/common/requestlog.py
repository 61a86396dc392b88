"""In-memory log of the requests a sandbox upstream received, for tests and benchmarks."""

from __future__ import annotations

import json
import threading
from collections import deque
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl

from pydantic import BaseModel, ConfigDict

REDACTED = "REDACTED"
RECORDED_HEADERS = frozenset(
    {
        "accept",
        "authorization",
        "content-type",
        "host",
        "if-modified-since",
        "user-agent",
        "x-business",
        "x-request-id",
    }
)
# OAuth bodies carry credentials; the log is readable over HTTP, so they never enter it.
SECRET_BODY_KEYS = frozenset(
    {"client_secret", "code", "refresh_token", "access_token", "password", "secret"}
)
MAX_TEXT_BODY = 10_000


class RecordedRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    headers: dict[str, str]
    body: Any
    timestamp: datetime
    duration_ms: float


class RequestLog:
    """Bounded, thread-safe list of ``RecordedRequest`` (oldest dropped first)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._entries: deque[RecordedRequest] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    def entries(
        self, method: str | None = None, path_prefix: str | None = None
    ) -> list[RecordedRequest]:
        with self._lock:
            snapshot = list(self._entries)
        return [e for e in snapshot if _wanted(e, method, path_prefix)]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _wanted(entry: RecordedRequest, method: str | None, path_prefix: str | None) -> bool:
    method_ok = method is None or entry.method == method.upper()
    return method_ok and (path_prefix is None or entry.path.startswith(path_prefix))


def select_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name_b, value_b in raw:
        name = name_b.decode("latin-1").lower()
        if name in RECORDED_HEADERS:
            headers[name] = REDACTED if name == "authorization" else value_b.decode("latin-1")
    return headers


def parse_query(raw: bytes) -> dict[str, list[str]]:
    return parse_qs(raw.decode("latin-1"), keep_blank_values=True)


def decode_body(body: bytes, content_type: str) -> Any:
    """JSON or form bodies become data (secrets redacted); anything else is kept as text."""
    if not body:
        return None
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type:
        try:
            return _redact(json.loads(text))
        except ValueError:
            return text[:MAX_TEXT_BODY]
    if "x-www-form-urlencoded" in content_type:
        return _redact(dict(parse_qsl(text, keep_blank_values=True)))
    return text[:MAX_TEXT_BODY]


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if k in SECRET_BODY_KEYS else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value
