"""Single-flight refresh across processes, a holder dying mid-refresh, revoked grants,
long-lived tokens, and the keep-alive."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from app.connections import flow
from app.connections.errors import NotConnected, OAuthTransientError, ReauthorizationRequired
from app.connections.keepalive import keep_alive
from app.connections.models import Connection, ConnectionState, Provider
from app.connections.oauth import Connected, OAuthClient
from app.connections.runtime import Connections
from app.connections.store import ConnectionKey, TokenSet
from app.connections.tokens import RefreshPolicy, TokenProvider
from app.errors import UpstreamTransientError
from tests.connections.conftest import (
    CLIENT_ID,
    KOMMO_KEY,
    SAGE_KEY,
    FakeClock,
    OAuthProvider,
    another_process,
    connect,
)


async def _row(connections: Connections, key: ConnectionKey = SAGE_KEY) -> Connection:
    async with connections.sessionmaker() as session:
        stmt = select(Connection).where(
            Connection.provider == key.provider.value, Connection.account == key.account
        )
        return (await session.scalars(stmt)).one()


async def test_twenty_processes_across_an_expiry_refresh_once(
    connections: Connections, sage_oauth: OAuthProvider, clock: FakeClock
) -> None:
    await connect(connections, sage_oauth)
    sage_oauth.sandbox.faults.add_latency("POST", "/oauth/token", 0.05)  # widens every race
    clock.advance(250)  # 50 s left: inside the 60 s margin, so every caller wants a refresh

    processes = [another_process(connections).tokens(SAGE_KEY) for _ in range(20)]
    tokens = await asyncio.gather(*(p.access_token() for p in processes))

    assert (sage_oauth.refresh_requests, sage_oauth.invalid_grants) == (1, 0)
    assert set(tokens) == {sage_oauth.latest[0]}
    row = await _row(connections)
    assert (row.generation, row.state) == (2, "active")
    assert row.refreshed_at is not None


async def test_callers_in_one_process_share_one_refresh(
    connections: Connections, sage_oauth: OAuthProvider, clock: FakeClock
) -> None:
    await connect(connections, sage_oauth)
    clock.advance(301)
    provider = connections.tokens(SAGE_KEY)

    tokens = await asyncio.gather(*(provider.access_token() for _ in range(20)))

    assert set(tokens) == {sage_oauth.latest[0]}
    assert (sage_oauth.refresh_requests, sage_oauth.invalid_grants) == (1, 0)


async def test_a_fresh_token_is_served_without_asking_anyone(
    connections: Connections, sage_oauth: OAuthProvider, clock: FakeClock
) -> None:
    await connect(connections, sage_oauth)
    clock.advance(200)

    assert await connections.tokens(SAGE_KEY).access_token() == sage_oauth.latest[0]
    assert sage_oauth.refresh_requests == 0


class FreezesAfterTheAnswer:
    """An OAuth client whose process stops right after the token endpoint answered: the old
    refresh token is spent, the new pair exists only in this (frozen) process."""

    def __init__(self, inner: OAuthClient) -> None:
        self.provider = inner.provider
        self._inner = inner
        self.answered = asyncio.Event()
        self.thaw = asyncio.Event()

    def authorize_url(self, *, state: str) -> str:
        return self._inner.authorize_url(state=state)

    async def exchange(self, *, code: str, referer: str | None) -> Connected:
        return await self._inner.exchange(code=code, referer=referer)

    async def refresh(self, *, refresh_token: str, base_url: str | None) -> TokenSet:
        tokens = await self._inner.refresh(refresh_token=refresh_token, base_url=base_url)
        self.answered.set()
        await self.thaw.wait()
        return tokens


def _holder(connections: Connections, oauth: OAuthClient) -> TokenProvider:
    # A short lock life stands in for TOKEN_REFRESH_LOCK_SECONDS running out.
    return TokenProvider(
        SAGE_KEY,
        sessionmaker=connections.sessionmaker,
        redis=connections.redis,
        cipher=connections.cipher(),
        oauth=oauth,
        policy=RefreshPolicy(lock_timeout=0.3, lock_wait=5.0),
        clock=connections.clock,
    )


async def test_holder_dying_before_commit_leaves_the_connection_visibly_needing_reauth(
    connections: Connections, sage_oauth: OAuthProvider, clock: FakeClock
) -> None:
    """The pair the dead holder received is lost (single-use refresh tokens, no grace period):
    the next process gets invalid_grant, marks the connection, and says so. Reconnecting heals."""
    await connect(connections, sage_oauth)
    clock.advance(301)
    frozen = FreezesAfterTheAnswer(connections.oauth(Provider.SAGE))
    holder = asyncio.create_task(_holder(connections, frozen).access_token())
    await frozen.answered.wait()

    survivor = _holder(another_process(connections), connections.oauth(Provider.SAGE))
    with capture_logs() as logs, pytest.raises(ReauthorizationRequired) as raised:
        await survivor.access_token()  # waits out the dead holder's lock, then tries

    assert "invalid_grant" in raised.value.detail
    row = await _row(connections)
    assert (row.state, row.generation) == ("needs_reauth", 1)
    assert "invalid_grant" in (row.last_error or "")
    assert {"event": "connection.needs_reauth", "log_level": "error"}.items() <= logs[-1].items()
    assert (sage_oauth.refresh_requests, sage_oauth.invalid_grants) == (2, 1)

    holder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await holder
    await connect(connections, sage_oauth)
    assert await survivor.access_token() == sage_oauth.latest[0]
    assert (await _row(connections)).state == "active"


async def test_a_holder_that_was_only_slow_commits_its_pair_and_revives_the_connection(
    connections: Connections, sage_oauth: OAuthProvider, clock: FakeClock
) -> None:
    await connect(connections, sage_oauth)
    clock.advance(301)
    frozen = FreezesAfterTheAnswer(connections.oauth(Provider.SAGE))
    holder = asyncio.create_task(_holder(connections, frozen).access_token())
    await frozen.answered.wait()
    survivor = _holder(another_process(connections), connections.oauth(Provider.SAGE))
    with pytest.raises(ReauthorizationRequired):
        await survivor.access_token()

    frozen.thaw.set()
    revived = await holder

    assert revived == sage_oauth.issued[1][0]  # the pair the slow holder was given
    row = await _row(connections)
    assert (row.state, row.generation, row.last_error) == ("active", 2, None)
    assert await survivor.access_token() == revived


async def test_revoked_refresh_token_marks_the_connection_and_stops_asking(
    connections: Connections, sage_oauth: OAuthProvider, clock: FakeClock
) -> None:
    await connect(connections, sage_oauth)
    sage_oauth.revoke(sage_oauth.latest[1])
    clock.advance(301)
    provider = connections.tokens(SAGE_KEY)

    with capture_logs() as logs, pytest.raises(ReauthorizationRequired) as raised:
        await provider.access_token()

    assert (raised.value.provider, raised.value.account) == ("sage", SAGE_KEY.account)
    row = await _row(connections)
    assert (row.state, row.last_error) == ("needs_reauth", "HTTP 400: invalid_grant")
    assert [e["event"] for e in logs] == ["connection.needs_reauth"]
    # Another process sees the committed state and does not spend anything either.
    with pytest.raises(ReauthorizationRequired):
        await another_process(connections).tokens(SAGE_KEY).access_token()
    assert sage_oauth.refresh_requests == 1


async def test_revoked_kommo_refresh_token_marks_the_connection(
    connections: Connections, kommo_oauth: OAuthProvider, clock: FakeClock
) -> None:
    info = await connect(connections, kommo_oauth)
    kommo_oauth.revoke(kommo_oauth.latest[1])
    clock.advance(301)

    with pytest.raises(ReauthorizationRequired) as raised:
        await connections.tokens(KOMMO_KEY).access_token()

    assert "Token has been revoked" in raised.value.detail
    assert (await _row(connections, KOMMO_KEY)).state == ConnectionState.NEEDS_REAUTH
    assert kommo_oauth.token_hosts[-1] == "testco.kommo.com"
    assert info.base_url == "https://testco.kommo.com"


async def test_kommo_refresh_goes_to_the_account_domain_as_json(
    connections: Connections, kommo_oauth: OAuthProvider, clock: FakeClock
) -> None:
    await connect(connections, kommo_oauth)
    spent = kommo_oauth.latest
    clock.advance(301)

    assert await connections.tokens(KOMMO_KEY).access_token() == kommo_oauth.latest[0]

    assert kommo_oauth.latest != spent  # the sandbox took the stored refresh token
    assert kommo_oauth.token_hosts[-1] == "testco.kommo.com"
    assert kommo_oauth.token_bodies[-1] == {
        "client_id": CLIENT_ID,
        "client_secret": "REDACTED",
        "redirect_uri": "http://bridge.test/ops/connections/kommo/callback",
        "grant_type": "refresh_token",
        "refresh_token": "REDACTED",
    }
    assert kommo_oauth.token_requests[-1].headers["content-type"] == "application/json"
    row = await _row(connections, KOMMO_KEY)
    assert (row.generation, row.refresh_expires_at) == (2, None)


async def test_an_outage_is_transient_and_spends_nothing(
    connections: Connections, sage_oauth: OAuthProvider, clock: FakeClock
) -> None:
    await connect(connections, sage_oauth)
    clock.advance(301)
    sage_oauth.sandbox.faults.fail_next("POST", "/oauth/token", status=503, count=100)
    provider = connections.tokens(SAGE_KEY)

    with pytest.raises(OAuthTransientError) as raised:
        await provider.access_token()

    assert isinstance(raised.value, UpstreamTransientError) and raised.value.status == 503
    assert (await _row(connections)).state == "active"
    sage_oauth.sandbox.faults.clear()
    assert await provider.access_token() == sage_oauth.latest[0]


async def test_a_reconnect_during_a_refresh_wins_over_it(
    connections: Connections, sage_oauth: OAuthProvider, clock: FakeClock
) -> None:
    await connect(connections, sage_oauth)
    clock.advance(301)
    frozen = FreezesAfterTheAnswer(connections.oauth(Provider.SAGE))
    holder = asyncio.create_task(_holder(connections, frozen).access_token())
    await frozen.answered.wait()
    await connect(connections, sage_oauth)  # ops connect again meanwhile
    reconnected = sage_oauth.latest[0]

    with capture_logs() as logs:
        frozen.thaw.set()
        assert await holder == reconnected

    assert "connection.refresh_discarded" in [e["event"] for e in logs]
    assert (await _row(connections)).generation == 2


async def test_an_account_never_connected_is_not_connected(connections: Connections) -> None:
    with pytest.raises(NotConnected):
        await connections.tokens(SAGE_KEY).access_token()


async def test_long_lived_kommo_token_is_served_until_it_expires(
    connections: Connections, kommo_oauth: OAuthProvider, clock: FakeClock
) -> None:
    await flow.store_long_lived(
        connections,
        base_url="https://testco.kommo.com/",
        account_id=int(KOMMO_KEY.account),
        token="long-lived-token-abc",
        expires_at=clock() + timedelta(days=2),
    )
    provider = connections.tokens(KOMMO_KEY)
    assert await provider.access_token() == "long-lived-token-abc"

    clock.advance(2 * 86400 + 1)
    with pytest.raises(ReauthorizationRequired):
        await provider.access_token()
    assert kommo_oauth.token_requests == []


async def test_keep_alive_refreshes_idle_sage_grants_before_their_refresh_token_dies(
    connections: Connections,
    sage_oauth: OAuthProvider,
    kommo_oauth: OAuthProvider,
    clock: FakeClock,
) -> None:
    await connect(connections, sage_oauth)
    await connect(connections, kommo_oauth)  # no refresh expiry: left alone
    clock.advance(20 * 86400)

    assert await keep_alive(connections) == []  # 11 days left: nothing to do

    # 9 days left: refreshed by default (KEEP_ALIVE_DAYS=10), before the 7-day expiry alert.
    clock.advance(2 * 86400)
    assert await keep_alive(connections) == [SAGE_KEY]
    row = await _row(connections)
    assert row.refresh_expires_at == clock() + timedelta(days=31)
    assert (row.generation, sage_oauth.refresh_requests) == (2, 1)
    assert await keep_alive(connections) == []


async def test_keep_alive_skips_a_dead_connection_and_goes_on(
    connections: Connections, sage_oauth: OAuthProvider, clock: FakeClock
) -> None:
    await connect(connections, sage_oauth)
    sage_oauth.revoke(sage_oauth.latest[1])
    clock.advance(25 * 86400)

    assert await keep_alive(connections) == []
    assert (await _row(connections)).state == "needs_reauth"
    assert await keep_alive(connections) == []  # a dead connection is not tried again
    assert sage_oauth.refresh_requests == 1
