"""Ops see a dead connection in /metrics, not only in the logs."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from app.connections.errors import ReauthorizationRequired
from app.connections.metrics import observe_connections
from app.connections.runtime import Connections
from tests.connections.conftest import SAGE_KEY, FakeClock, OAuthProvider, connect


def _sample(name: str) -> float | None:
    labels = {"provider": "sage", "connection": "1"}
    return REGISTRY.get_sample_value(name, labels)


async def test_needs_reauth_and_refresh_expiry_are_gauges(
    connections: Connections, sage_oauth: OAuthProvider, clock: FakeClock
) -> None:
    await connect(connections, sage_oauth)
    async with connections.sessionmaker() as session:
        await observe_connections(session, now=clock())
    assert _sample("sagebridge_connection_needs_reauth") == 0
    expires_in = _sample("sagebridge_connection_refresh_expires_seconds")
    assert expires_in is not None and expires_in > 0

    sage_oauth.revoke(sage_oauth.latest[1])
    with pytest.raises(ReauthorizationRequired):
        await connections.tokens(SAGE_KEY).force_refresh(stale=sage_oauth.latest[0])
    async with connections.sessionmaker() as session:
        await observe_connections(session, now=clock())
    assert _sample("sagebridge_connection_needs_reauth") == 1
