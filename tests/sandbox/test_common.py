"""The shared building blocks on their own: fault plans, the sliding window, the request log."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from sandbox.common import (
    FaultKind,
    FaultRegistry,
    FaultSpec,
    RateLimit,
    RecordedRequest,
    RequestLog,
    SlidingWindowLimiter,
)
from sandbox.common.requestlog import decode_body, select_headers


def test_fault_plan_consumes_counts_in_arming_order() -> None:
    faults = FaultRegistry()
    faults.fail_next("POST", "/v3.1/sales_invoices", count=1, status=502)
    faults.rate_limit_next("*", "/v3.1/sales_invoices", count=1, retry_after=5)
    faults.timeout_after_commit("POST", "/v3.1/sales_invoices", delay=9)

    plans = [faults.plan("POST", "/v3.1/sales_invoices") for _ in range(4)]

    assert [p.reject.kind if p.reject else None for p in plans] == [
        FaultKind.FAIL,
        FaultKind.RATE_LIMIT,
        None,
        None,
    ]
    assert [p.hold_after for p in plans] == [0.0, 0.0, 9, 0.0]
    assert faults.active() == []


def test_templates_match_one_segment_and_methods_are_case_insensitive() -> None:
    faults = FaultRegistry()
    faults.add_latency("get", "/api/v4/leads/{id}", 0.5)

    assert faults.plan("GET", "/api/v4/leads/3000001").latency == 0.5
    assert faults.plan("GET", "/api/v4/leads/3000001/notes").latency == 0.0
    assert faults.plan("PATCH", "/api/v4/leads/3000001").latency == 0.0
    assert faults.plan("GET", "/api/v4/leads/3000001").latency == 0.5  # latency persists


def test_clear_by_method_and_path() -> None:
    faults = FaultRegistry()
    faults.fail_next("GET", "/a")
    faults.fail_next("POST", "/a")
    assert faults.clear(method="GET") == 1
    assert [spec.method for spec, _ in faults.active()] == ["POST"]


def test_fault_spec_rules() -> None:
    with pytest.raises(ValidationError):
        FaultSpec(method="GET", path="/a", kind=FaultKind.TIMEOUT_AFTER_COMMIT)
    with pytest.raises(ValidationError):
        FaultSpec(method="GET", path="/a", kind=FaultKind.FAIL, status=429)


def test_sliding_window_frees_slots_as_time_passes() -> None:
    now = [100.0]
    limiter = SlidingWindowLimiter(RateLimit(limit=2, window_seconds=1.0), clock=lambda: now[0])

    assert [limiter.acquire("t"), limiter.acquire("t")] == [None, None]
    assert limiter.acquire("t") == pytest.approx(1.0)
    assert limiter.acquire("other") is None
    now[0] += 0.5
    assert limiter.acquire("t") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.acquire("t") is None


def test_disabled_or_absent_limit_allows_everything() -> None:
    off = SlidingWindowLimiter(RateLimit(limit=1, window_seconds=1, enabled=False))
    none = SlidingWindowLimiter(None)
    assert {off.acquire("k") for _ in range(5)} | {none.acquire("k") for _ in range(5)} == {None}


def test_request_log_redacts_headers_and_secret_body_keys() -> None:
    headers = select_headers(
        [(b"Authorization", b"Bearer abc"), (b"Cookie", b"x"), (b"X-Business", b"b")]
    )
    form = decode_body(
        b"grant_type=refresh_token&refresh_token=r&client_secret=s",
        "application/x-www-form-urlencoded",
    )
    nested = decode_body(b'{"a": {"access_token": "t"}, "b": [1]}', "application/json")

    assert headers == {"authorization": "REDACTED", "x-business": "b"}
    assert form == {
        "grant_type": "refresh_token",
        "refresh_token": "REDACTED",
        "client_secret": "REDACTED",
    }
    assert nested == {"a": {"access_token": "REDACTED"}, "b": [1]}
    assert decode_body(b"{broken", "application/json") == "{broken"


def test_request_log_is_bounded() -> None:
    log = RequestLog(capacity=2)
    for path in ("/1", "/2", "/3"):
        log.record(
            RecordedRequest(
                method="GET",
                path=path,
                query={},
                status=200,
                headers={},
                body=None,
                timestamp=datetime(2024, 1, 1, tzinfo=UTC),
                duration_ms=1.0,
            )
        )
    assert [e.path for e in log.entries()] == ["/2", "/3"]
