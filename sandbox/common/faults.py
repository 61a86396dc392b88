"""Fault injection for the sandbox upstreams, keyed by (HTTP method, path template).

A fault is armed through ``POST /sandbox/faults`` or the Python API (``FaultRegistry``) and is
consulted by ``SandboxMiddleware`` on every API request. Kinds:

* ``latency``: sleep ``delay`` seconds before handling (``count`` calls, or until cleared);
* ``fail``: answer the next ``count`` calls with ``status`` (5xx) without running the handler;
* ``refuse``: answer the next ``count`` calls with ``status`` (4xx) in the upstream's own error
  form, carrying ``code`` and ``message``, without running the handler;
* ``rate_limit``: answer the next ``count`` calls with 429 and ``Retry-After: retry_after``;
* ``disconnect``: drop the next ``count`` connections without an answer (a network error for
  the client) and without running the handler;
* ``timeout_after_commit``: run the handler (so the write is committed) and then hold the
  response for ``delay`` seconds, long enough for the client's timeout to fire.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Self

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

log = structlog.get_logger(__name__)


class FaultKind(StrEnum):
    LATENCY = "latency"
    FAIL = "fail"
    REFUSE = "refuse"
    RATE_LIMIT = "rate_limit"
    DISCONNECT = "disconnect"
    TIMEOUT_AFTER_COMMIT = "timeout_after_commit"


# The kinds that answer in place of the handler.
REJECTING = (FaultKind.FAIL, FaultKind.REFUSE, FaultKind.RATE_LIMIT, FaultKind.DISCONNECT)


class FaultSpec(BaseModel):
    """One armed fault; also the JSON body of ``POST /sandbox/faults``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = Field(description="HTTP method, or '*' for any")
    path: str = Field(description="Path template as routed, e.g. /v3.1/sales_invoices/{id}")
    kind: FaultKind
    count: int | None = Field(
        default=None, ge=1, description="Calls affected; default 1 (latency: unlimited)"
    )
    status: int = Field(default=500, ge=400, le=599, description="fail: 5xx; refuse: 4xx")
    code: str | None = Field(default=None, description="refuse: the error code, e.g. RecordInvalid")
    message: str | None = Field(default=None, description="refuse: the error message")
    retry_after: int = Field(default=1, ge=0)
    delay: float = Field(default=0.0, ge=0.0)

    @model_validator(mode="after")
    def _delay_needed(self) -> Self:
        delayed = self.kind in (FaultKind.LATENCY, FaultKind.TIMEOUT_AFTER_COMMIT)
        if delayed and self.delay <= 0:
            raise ValueError(f"kind {self.kind.value!r} needs a positive delay")
        return self

    @model_validator(mode="after")
    def _status_fits_the_kind(self) -> Self:
        if self.kind is FaultKind.FAIL and self.status < 500:
            raise ValueError("kind 'fail' needs a 5xx status (use 'refuse' for a 4xx)")
        if self.kind is FaultKind.REFUSE and self.status >= 500:
            raise ValueError("kind 'refuse' needs a 4xx status (use 'fail' for a 5xx)")
        return self

    def effective_count(self) -> int | None:
        if self.count is not None:
            return self.count
        return None if self.kind is FaultKind.LATENCY else 1


@dataclass(frozen=True)
class FaultPlan:
    """What the middleware must do for one request, decided atomically."""

    latency: float = 0.0
    reject: FaultSpec | None = None
    hold_after: float = 0.0


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^/{}]+\})", template)
    body = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{body}/?$")


@dataclass
class _Armed:
    spec: FaultSpec
    regex: re.Pattern[str]
    remaining: int | None

    def matches(self, method: str, path: str) -> bool:
        method_ok = self.spec.method == "*" or self.spec.method.upper() == method.upper()
        return method_ok and self.regex.match(path) is not None

    def consume(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1

    @property
    def spent(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


@dataclass
class FaultRegistry:
    """Thread-safe set of armed faults; each request consumes what applies to it."""

    _armed: list[_Armed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, spec: FaultSpec) -> None:
        armed = _Armed(spec, _template_regex(spec.path), spec.effective_count())
        with self._lock:
            self._armed.append(armed)
        log.info("sandbox.fault.armed", method=spec.method, path=spec.path, kind=spec.kind.value)

    def add_latency(self, method: str, path: str, seconds: float, count: int | None = None) -> None:
        kind = FaultKind.LATENCY
        self.add(FaultSpec(method=method, path=path, kind=kind, delay=seconds, count=count))

    def fail_next(self, method: str, path: str, *, count: int = 1, status: int = 500) -> None:
        kind = FaultKind.FAIL
        self.add(FaultSpec(method=method, path=path, kind=kind, count=count, status=status))

    def refuse_next(
        self, method: str, path: str, *, status: int, message: str | None = None, count: int = 1
    ) -> None:
        """The upstream's own error code for `status`; a FaultSpec can name another."""
        kind = FaultKind.REFUSE
        spec = FaultSpec(
            method=method, path=path, kind=kind, count=count, status=status, message=message
        )
        self.add(spec)

    def disconnect_next(self, method: str, path: str, *, count: int = 1) -> None:
        self.add(FaultSpec(method=method, path=path, kind=FaultKind.DISCONNECT, count=count))

    def rate_limit_next(
        self, method: str, path: str, *, count: int = 1, retry_after: int = 1
    ) -> None:
        kind = FaultKind.RATE_LIMIT
        self.add(
            FaultSpec(method=method, path=path, kind=kind, count=count, retry_after=retry_after)
        )

    def timeout_after_commit(self, method: str, path: str, *, delay: float, count: int = 1) -> None:
        kind = FaultKind.TIMEOUT_AFTER_COMMIT
        self.add(FaultSpec(method=method, path=path, kind=kind, delay=delay, count=count))

    def clear(self, method: str | None = None, path: str | None = None) -> int:
        """Disarm faults (all, or those for one method and/or path template); returns how many."""
        with self._lock:
            keep = [a for a in self._armed if not _selected(a.spec, method, path)]
            removed = len(self._armed) - len(keep)
            self._armed = keep
        return removed

    def active(self) -> list[tuple[FaultSpec, int | None]]:
        with self._lock:
            return [(a.spec, a.remaining) for a in self._armed]

    def plan(self, method: str, path: str) -> FaultPlan:
        """Decide (and consume) the faults for one request, under the lock so counts are exact."""
        with self._lock:
            matching = [a for a in self._armed if a.matches(method, path)]
            latency = self._take_latency(matching)
            reject = self._take_first(matching, REJECTING)
            hold = None if reject else self._take_first(matching, (FaultKind.TIMEOUT_AFTER_COMMIT,))
            self._armed = [a for a in self._armed if not a.spent]
        return FaultPlan(
            latency=latency,
            reject=reject.spec if reject else None,
            hold_after=hold.spec.delay if hold else 0.0,
        )

    @staticmethod
    def _take_latency(matching: list[_Armed]) -> float:
        total = 0.0
        for armed in matching:
            if armed.spec.kind is FaultKind.LATENCY:
                armed.consume()
                total += armed.spec.delay
        return total

    @staticmethod
    def _take_first(matching: list[_Armed], kinds: tuple[FaultKind, ...]) -> _Armed | None:
        for armed in matching:
            if armed.spec.kind in kinds and not armed.spent:
                armed.consume()
                return armed
        return None


def _selected(spec: FaultSpec, method: str | None, path: str | None) -> bool:
    method_ok = method is None or spec.method.upper() == method.upper()
    return method_ok and (path is None or spec.path == path)
