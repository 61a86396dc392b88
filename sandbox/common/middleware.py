"""ASGI middleware that gives every sandbox API request its log entry, rate limit and faults.

Order per request: record the body → rate limit (as a gateway would, before anything else) →
faults (latency, injected 5xx/4xx/429, a dropped connection, or hold the response after the
handler committed) → handler. Control routes (``/sandbox/...``) and docs are not instrumented.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.common.faults import FaultKind, FaultRegistry, FaultSpec
from sandbox.common.ratelimit import SlidingWindowLimiter, retry_after_header
from sandbox.common.requestlog import (
    RecordedRequest,
    RequestLog,
    decode_body,
    parse_query,
    select_headers,
)

log = structlog.get_logger(__name__)


class ErrorRenderer(Protocol):
    """How one upstream spells the errors the middleware produces on its behalf."""

    def server_error(self, status: int) -> Response: ...

    def rate_limited(self, retry_after: str | None) -> Response: ...

    def client_error(self, status: int, code: str | None, message: str | None) -> Response: ...


class ConnectionDropped(Exception):
    """A ``disconnect`` fault: raised after a response start that never gets its body, so a
    server (uvicorn) closes the connection and the in-process transport raises the network
    error a client would see (sandbox/transport.py)."""


@dataclass
class Instruments:
    """Everything the middleware consults; shared with the control routes and the Python API."""

    requests: RequestLog
    faults: FaultRegistry
    limiter: SlidingWindowLimiter
    renderer: ErrorRenderer
    rate_limit_key: Callable[[Headers], str | None]
    instrumented_prefixes: tuple[str, ...]
    # Sage answers its own 429s with Retry-After; Kommo documents none.
    limiter_sends_retry_after: bool = True


class Instrumented:
    """The shortcuts both simulators offer their tests and the harness: `sandbox.requests`,
    `sandbox.faults`, `sandbox.limiter` (a subclass dataclass declares `instruments`)."""

    instruments: Instruments

    @property
    def requests(self) -> RequestLog:
        return self.instruments.requests

    @property
    def faults(self) -> FaultRegistry:
        return self.instruments.faults

    @property
    def limiter(self) -> SlidingWindowLimiter:
        return self.instruments.limiter


class SandboxMiddleware:
    def __init__(self, app: ASGIApp, *, instruments: Instruments) -> None:
        self.app = app
        self.instruments = instruments

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(
            self.instruments.instrumented_prefixes
        ):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        status = _StatusCapture(send)
        started, at = time.perf_counter(), datetime.now(UTC)
        try:
            await self._dispatch(scope, _replaying(body, receive), status)
        except ConnectionDropped:
            status.code = 0  # nobody got an answer
            raise
        except Exception:
            # An unhandled error becomes Starlette's 500 further out; log it as such.
            status.code = status.code or 500
            raise
        finally:
            self._record(scope, body, status.code, at, time.perf_counter() - started)

    async def _dispatch(self, scope: Scope, receive: Receive, status: _StatusCapture) -> None:
        send = status.send
        wait = self._rate_limit_wait(scope)
        if wait is not None:
            retry = retry_after_header(wait) if self.instruments.limiter_sends_retry_after else None
            log.info("sandbox.rate_limited", path=scope["path"], wait_s=round(wait, 3))
            await self.instruments.renderer.rate_limited(retry)(scope, receive, send)
            return
        plan = self.instruments.faults.plan(scope["method"], scope["path"])
        if plan.latency:
            await asyncio.sleep(plan.latency)
        if plan.reject is not None and plan.reject.kind is FaultKind.DISCONNECT:
            await _drop(scope, send)
        elif plan.reject is not None:
            await self._reject(plan.reject)(scope, receive, send)
        elif plan.hold_after:
            await _run_then_hold(self.app, scope, receive, status, plan.hold_after)
        else:
            await self.app(scope, receive, send)

    def _rate_limit_wait(self, scope: Scope) -> float | None:
        key = self.instruments.rate_limit_key(Headers(scope=scope))
        return None if key is None else self.instruments.limiter.acquire(key)

    def _reject(self, spec: FaultSpec) -> Response:
        log.info("sandbox.fault.injected", kind=spec.kind.value, path=spec.path, status=spec.status)
        renderer = self.instruments.renderer
        if spec.kind is FaultKind.RATE_LIMIT:
            return renderer.rate_limited(str(spec.retry_after))
        if spec.kind is FaultKind.REFUSE:
            return renderer.client_error(spec.status, spec.code, spec.message)
        return renderer.server_error(spec.status)

    def _record(self, scope: Scope, body: bytes, code: int, at: datetime, elapsed: float) -> None:
        headers = Headers(scope=scope)
        entry = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            query=parse_query(scope.get("query_string", b"")),
            status=code,
            headers=select_headers(list(scope["headers"])),
            body=decode_body(body, headers.get("content-type", "")),
            timestamp=at,
            duration_ms=round(elapsed * 1000, 3),
        )
        self.instruments.requests.record(entry)


class _StatusCapture:
    """Wraps ``send`` to remember the response status (0 if none was ever sent)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.code = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.code = int(message["status"])
        await self._send(message)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """Hands the buffered body to the app once, then defers to the server (disconnects)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _drop(scope: Scope, send: Send) -> None:
    log.info("sandbox.fault.injected", kind=FaultKind.DISCONNECT.value, path=scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise ConnectionDropped(scope["path"])


async def _run_then_hold(
    app: ASGIApp, scope: Scope, receive: Receive, status: _StatusCapture, hold: float
) -> None:
    """Let the handler commit, then sit on its answer until the client gives up (or ``hold``).

    The handler's status is what the log records, even if nobody received it (a client that
    gave up, or an in-process caller cancelled by its timeout).
    """
    buffered: list[Message] = []

    async def buffer(message: Message) -> None:
        buffered.append(message)

    await app(scope, receive, buffer)
    status.code = next(
        (int(m["status"]) for m in buffered if m["type"] == "http.response.start"), 0
    )
    log.info("sandbox.fault.response_held", path=scope["path"], status=status.code, hold_s=hold)
    if await _client_left_within(receive, hold):
        log.info("sandbox.fault.client_gave_up", path=scope["path"])
        return
    for message in buffered:
        await status.send(message)


async def _client_left_within(receive: Receive, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while (await receive())["type"] != "http.disconnect":
                pass
            return True
    return False
