"""`sagebridge connections …`: generate a key, rotate every row to it, list, import a Sage
refresh token; and a static token that never wins over a stored grant."""

from __future__ import annotations

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs
from typer.testing import CliRunner

from app.connections.cli import connections_cli, import_sage, list_connections, rotate_keys
from app.connections.crypto import TokenCipher, generate_key
from app.connections.errors import NotConfigured, OAuthRequestError
from app.connections.models import Connection
from app.connections.runtime import Connections
from app.runtime import Upstreams
from app.settings import Settings
from tests.connections.conftest import (
    KEY_A,
    PROTECTED,
    SAGE_KEY,
    OAuthProvider,
    another_process,
    connect,
    make_config,
)
from tests.upstreams import BUSINESS_ID


def test_generate_key_prints_a_fernet_key() -> None:
    result = CliRunner().invoke(connections_cli, ["generate-key"])

    assert result.exit_code == 0
    Fernet(result.output.strip().encode())


async def test_rotate_keys_and_list(
    connections: Connections, sage_oauth: OAuthProvider, database_url: str
) -> None:
    await connect(connections, sage_oauth)
    key_b = generate_key()

    assert await rotate_keys(database_url, TokenCipher([key_b, KEY_A])) == 1

    only_b = another_process(connections, connection_encryption_keys=key_b)
    assert await only_b.tokens(SAGE_KEY).access_token() == sage_oauth.latest[0]
    listed = await list_connections(database_url)
    assert [(c["provider"], c["account"], c["state"]) for c in listed] == [
        ("sage", SAGE_KEY.account, "active")
    ]
    assert sage_oauth.latest[0] not in str(listed)


async def test_import_spends_the_refresh_token_once_and_stores_the_new_pair(
    connections: Connections, sage_oauth: OAuthProvider, http: httpx.AsyncClient
) -> None:
    await connect(connections, sage_oauth)  # stands for the grant made elsewhere, e.g. a laptop
    handed_over = sage_oauth.latest[1]
    async with connections.sessionmaker() as session:
        await session.execute(delete(Connection))
        await session.commit()

    info = await import_sage(
        connections.config, connections.sessionmaker, http, refresh_token=handed_over
    )

    assert (info.provider, info.account, info.kind, info.state) == (
        "sage",
        BUSINESS_ID,
        "oauth",
        "active",
    )
    assert sage_oauth.refresh_requests == 1
    # The stored pair is the new one, and it is what the bridge now sends.
    assert await connections.tokens(SAGE_KEY).access_token() == sage_oauth.latest[0]
    assert sage_oauth.latest[1] != handed_over


async def test_import_needs_the_oauth_app_and_says_so(
    db: async_sessionmaker[AsyncSession], http: httpx.AsyncClient, sage_oauth: OAuthProvider
) -> None:
    config = make_config(sage_oauth_client_id=None)

    with pytest.raises(NotConfigured, match="SAGE_OAUTH_CLIENT_ID and SAGE_OAUTH_CLIENT_SECRET"):
        await import_sage(config, db, http, refresh_token="anything")

    assert sage_oauth.refresh_requests == 0


async def test_import_of_a_business_the_user_did_not_grant_is_refused(
    connections: Connections, sage_oauth: OAuthProvider, http: httpx.AsyncClient
) -> None:
    await connect(connections, sage_oauth)

    with pytest.raises(OAuthRequestError, match="is not among those this user granted"):
        await import_sage(
            connections.config,
            connections.sessionmaker,
            http,
            refresh_token=sage_oauth.latest[1],
            business_id="f" * 32,
        )


def test_import_command_refuses_kommo() -> None:
    result = CliRunner().invoke(connections_cli, ["import", "kommo", "--refresh-token", "x"])

    assert result.exit_code != 0 and "only 'sage' can be imported" in result.output


async def test_a_stored_grant_wins_over_a_leftover_static_token(
    connections: Connections, sage_oauth: OAuthProvider
) -> None:
    auth = connections.bearer(SAGE_KEY, fallback="static-token-from-env")
    async with httpx.AsyncClient(base_url="https://api.accounting.sage.com", auth=auth) as client:
        before = await client.get(PROTECTED)
        await connect(connections, sage_oauth)
        after = await client.get(PROTECTED)

    assert before.status_code == 401  # nothing stored yet: the static token was sent
    assert after.status_code == 200  # the stored grant's, the only token Sage issued
    assert (len(sage_oauth.issued), sage_oauth.calls()) == (1, [401, 200])


async def test_a_static_sage_token_outside_the_sandbox_warns_that_it_dies_in_minutes(
    settings: Settings, connections: Connections
) -> None:
    with capture_logs() as logs:
        upstreams = Upstreams.open(settings, connections)
    await upstreams.close()

    (warning,) = [e for e in logs if e["event"] == "sage.static_token"]
    assert warning["log_level"] == "warning"
    assert "expires minutes after Sage issued it" in warning["detail"]
    assert "sage-token-abc" not in str(warning)
