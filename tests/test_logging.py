"""No token or secret reaches a log line."""

from __future__ import annotations

import json
import sys

import pytest
import structlog

from app.logging import configure_logging


def test_secrets_are_redacted_from_every_log_event(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", json=True)
    log = structlog.get_logger("test")
    log.info(
        "upstream.request",
        access_token="tok-123",
        client_secret="cs-456",
        headers={"Authorization": "Bearer abc.def", "X-Business": "b1"},
        url="http://127.0.0.1:8000/webhooks/kommo/hook-secret-789?x=1",
        note="sent Bearer zzz.yyy upstream",
        deal_id=42,
    )
    configure_logging("WARNING", stream=sys.__stderr__)

    line = capsys.readouterr().err.strip().splitlines()[-1]
    for secret in ("tok-123", "cs-456", "abc.def", "hook-secret-789", "zzz.yyy"):
        assert secret not in line
    event = json.loads(line)
    assert event["access_token"] == "[REDACTED]" and event["client_secret"] == "[REDACTED]"
    assert event["headers"] == {"Authorization": "[REDACTED]", "X-Business": "b1"}
    assert event["url"] == "http://127.0.0.1:8000/webhooks/kommo/[REDACTED]?x=1"
    assert event["deal_id"] == 42


def test_only_the_sandboxs_published_tokens_pass(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", json=True)
    structlog.get_logger("test").info(
        "sandbox.ready",
        sage="curl -H 'Authorization: Bearer sandbox-sage-token' http://127.0.0.1:8701/v3.1/x",
        kommo="Bearer sandbox-kommo-token",
        ops="Bearer sandbox-ops-token-for-127.0.0.1-only",
        longer="Bearer sandbox-sage-token2",
        shorter="Bearer sandbox-sage",
        other="Bearer a-real-token",
        access_token="sandbox-sage-token",
    )
    configure_logging("WARNING", stream=sys.__stderr__)

    event = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert {k: v for k, v in event.items() if k not in ("level", "timestamp")} == {
        "event": "sandbox.ready",
        "sage": "curl -H 'Authorization: Bearer sandbox-sage-token' http://127.0.0.1:8701/v3.1/x",
        "kommo": "Bearer sandbox-kommo-token",
        "ops": "Bearer sandbox-ops-token-for-127.0.0.1-only",
        "longer": "Bearer [REDACTED]",
        "shorter": "Bearer [REDACTED]",
        "other": "Bearer [REDACTED]",
        "access_token": "[REDACTED]",  # a secret-named value is never shown
    }
