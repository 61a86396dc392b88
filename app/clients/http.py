"""What every upstream client shares: one httpx call that turns transport failures into
transient errors, and the parsing of Retry-After."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt

from app import lineage
from app.errors import UpstreamTransientError
from app.metrics import UPSTREAM_LATENCY, UPSTREAM_REQUESTS, route_of

log = structlog.get_logger(__name__)

THROTTLE_ATTEMPTS = 3
SHORT_THROTTLE_SECONDS = 5.0
DEFAULT_THROTTLE_WAIT = 1.0  # Kommo's 429 carries no Retry-After; its window is one second
# A request extension: the rate limit's callback for a request that got no answer.
UNANSWERED = "sagebridge.unanswered"


async def send(
    http: httpx.AsyncClient,
    upstream: str,
    method: str,
    path: str,
    *,
    transient: type[UpstreamTransientError] = UpstreamTransientError,
    **kwargs: Any,
) -> httpx.Response:
    """Send one request; a network error or timeout becomes `transient` (retry later).

    A 429 that asks for a short pause (Retry-After ≤ 5 s, or none) is retried here, twice at
    most: the upstream only wants us to slow down for a moment, which is no reason to put the
    whole event on the minutes-long retry ladder. Nothing was processed, so any method is safe.
    """
    retrying = AsyncRetrying(
        retry=retry_if_result(_briefly_throttled),
        wait=_throttle_wait,
        stop=stop_after_attempt(THROTTLE_ATTEMPTS),
        retry_error_callback=_last_response,
    )
    response: httpx.Response = await retrying(
        _send_once, http, upstream, method, path, transient, kwargs
    )
    return response


def _briefly_throttled(response: httpx.Response) -> bool:
    if response.status_code != httpx.codes.TOO_MANY_REQUESTS:
        return False
    wait = retry_after_seconds(response)
    return wait is None or wait <= SHORT_THROTTLE_SECONDS


def _throttle_wait(state: RetryCallState) -> float:
    assert state.outcome is not None
    wait = retry_after_seconds(state.outcome.result())
    return DEFAULT_THROTTLE_WAIT if wait is None else wait


def _last_response(state: RetryCallState) -> httpx.Response:
    assert state.outcome is not None
    response: httpx.Response = state.outcome.result()
    return response


async def _send_request(
    http: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any]
) -> httpx.Response:
    request = http.build_request(method, path, **kwargs)
    try:
        response = await http.send(request)
    except (httpx.TransportError, asyncio.CancelledError):  # cancelled: the job timed out
        await _unanswered(request)
        raise
    return response


async def _unanswered(request: httpx.Request) -> None:
    """Tell the rate limit a request got no answer (its response hook never runs)."""
    settle = request.extensions.get(UNANSWERED)
    if callable(settle):
        await settle()


async def _send_once(
    http: httpx.AsyncClient,
    upstream: str,
    method: str,
    path: str,
    transient: type[UpstreamTransientError],
    kwargs: dict[str, Any],
) -> httpx.Response:
    route = route_of(path)
    started = time.perf_counter()
    try:
        response = await _send_request(http, method, path, kwargs)
    except httpx.TimeoutException as exc:
        _count(upstream, method, route, "timeout")
        _note_failure(upstream, method, path, "timeout", started, kwargs)
        raise transient(upstream, f"{method} {path} timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        _count(upstream, method, route, "network_error")
        _note_failure(upstream, method, path, "network_error", started, kwargs)
        raise transient(upstream, f"{method} {path} failed: {type(exc).__name__}") from exc
    elapsed = time.perf_counter() - started
    _count(upstream, method, route, str(response.status_code))
    UPSTREAM_LATENCY.labels(upstream, route).observe(elapsed)
    lineage.note_request(
        api=upstream,
        method=method,
        path=path,
        status=str(response.status_code),
        ms=elapsed * 1000,
        request=kwargs.get("json") if "json" in kwargs else kwargs.get("params"),
        response=response.content,
    )
    log.debug(
        "upstream.response",
        upstream=upstream,
        method=method,
        path=path,
        status=response.status_code,
        elapsed_ms=round(response.elapsed.total_seconds() * 1000, 1),
    )
    return response


def _note_failure(
    api: str, method: str, path: str, status: str, started: float, kwargs: dict[str, Any]
) -> None:
    lineage.note_request(
        api=api,
        method=method,
        path=path,
        status=status,
        ms=(time.perf_counter() - started) * 1000,
        request=kwargs.get("json") if "json" in kwargs else kwargs.get("params"),
        response=None,
    )


def _count(api: str, method: str, route: str, status: str) -> None:
    UPSTREAM_REQUESTS.labels(api, method, route, status).inc()


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class RequestLimit(Protocol):
    """The shared rate limit (app.clients.ratelimit) as httpx event hooks."""

    async def on_request(self, request: httpx.Request) -> None: ...

    async def on_response(self, response: httpx.Response) -> None: ...


def build_http_client(
    base_url: str,
    *,
    headers: dict[str, str],
    timeout: float,
    limit: RequestLimit | None = None,
    auth: httpx.Auth | None = None,
) -> httpx.AsyncClient:
    """One AsyncClient per API for the process's life: pooled connections, explicit timeouts,
    and `limit` (the shared rate limit) asked before every call and told of every answer."""
    hooks: dict[str, list[Callable[..., Any]]] = {}
    if limit is not None:
        hooks = {"request": [limit.on_request], "response": [limit.on_response]}
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"User-Agent": "sagebridge/0.1", "Accept": "application/json", **headers},
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        event_hooks=hooks,
        auth=auth,
    )
