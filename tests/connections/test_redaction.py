"""Connect, refresh, a 401 retry and a revoked grant leave no token or secret in the logs."""

from __future__ import annotations

import io
import json
import sys

import httpx
import pytest
import structlog

from app.connections import flow
from app.connections.errors import ReauthorizationRequired
from app.connections.runtime import Connections
from app.logging import configure_logging
from tests.connections.conftest import (
    CLIENT_SECRET,
    KOMMO_KEY,
    PROTECTED,
    SAGE_KEY,
    FakeClock,
    OAuthProvider,
    connect,
)

LONG_LIVED = "long-lived-kommo-token-5d1c"


async def _everything(
    connections: Connections,
    sage_oauth: OAuthProvider,
    kommo_oauth: OAuthProvider,
    clock: FakeClock,
) -> list[str]:
    """Drive every path that touches a token; return every secret that was in play."""
    codes = [sage_oauth.issue_code("http://bridge.test/ops/connections/sage/callback")]
    await connect(connections, sage_oauth)
    await connect(connections, kommo_oauth)
    clock.advance(301)
    await connections.tokens(SAGE_KEY).access_token()
    async with httpx.AsyncClient(
        base_url="https://api.accounting.sage.com", auth=connections.bearer(SAGE_KEY)
    ) as sage:
        sage_oauth.invalidate(sage_oauth.latest[0])
        await sage.get(PROTECTED)
    sage_oauth.revoke(sage_oauth.latest[1])
    clock.advance(301)
    with pytest.raises(ReauthorizationRequired):
        await connections.tokens(SAGE_KEY).access_token()
    kommo_access, kommo_refresh = kommo_oauth.latest
    kommo_oauth.revoke(kommo_refresh)
    with pytest.raises(ReauthorizationRequired):
        await connections.tokens(KOMMO_KEY).force_refresh(stale=kommo_access)
    await flow.store_long_lived(
        connections, base_url="https://testco.kommo.com", account_id=1, token=LONG_LIVED
    )
    issued = [*sage_oauth.issued, *kommo_oauth.issued]
    return [CLIENT_SECRET, LONG_LIVED, *codes, *(t for pair in issued for t in pair)]


async def test_token_flows_log_no_token_or_secret(
    connections: Connections,
    sage_oauth: OAuthProvider,
    kommo_oauth: OAuthProvider,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    logged = io.StringIO()
    before = structlog.get_config()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", logged)
        configure_logging("DEBUG", json=True)  # the application's own processors, redaction too
    try:
        secrets = await _everything(connections, sage_oauth, kommo_oauth, clock)
    finally:
        structlog.configure(**before)

    lines = logged.getvalue().splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert {
        "connection.connected",
        "connection.refreshed",
        "connection.unauthorized",
        "connection.needs_reauth",
        "upstream.response",
    } <= set(events)
    assert len(secrets) > 8
    leaked = [secret for secret in secrets if secret in logged.getvalue()]
    assert leaked == []
