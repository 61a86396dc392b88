"""Tokens are encrypted at rest; keys rotate without losing a connection."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.connections.crypto import TokenCipher, generate_key
from app.connections.errors import TokenDecryptionError
from app.connections.models import Connection
from app.connections.runtime import Connections
from app.connections.store import ConnectionStore, rotate
from tests.connections.conftest import KEY_A, SAGE_KEY, OAuthProvider, another_process, connect


def test_round_trip_with_a_fresh_ciphertext_each_time() -> None:
    cipher = TokenCipher([generate_key()])

    first, second = cipher.encrypt("at-secret"), cipher.encrypt("at-secret")

    assert first != second and "at-secret" not in first
    assert cipher.decrypt(first) == cipher.decrypt(second) == "at-secret"


def test_a_bad_key_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match=r"key #2 is not a Fernet key") as raised:
        TokenCipher.from_setting(f"{generate_key()}, not-a-key-123")
    assert "not-a-key-123" not in str(raised.value)


async def test_rows_hold_only_ciphertext(
    connections: Connections, sage_oauth: OAuthProvider
) -> None:
    await connect(connections, sage_oauth)
    access, refresh = sage_oauth.latest

    async with connections.sessionmaker() as session:
        row = (await session.scalars(select(Connection))).one()
    assert access not in row.encrypted_access_token
    assert refresh not in (row.encrypted_refresh_token or "")
    cipher = TokenCipher([KEY_A])
    assert cipher.decrypt(row.encrypted_access_token) == access
    assert cipher.decrypt(row.encrypted_refresh_token or "") == refresh


async def test_key_rotation_old_key_decrypts_rotate_moves_rows_then_old_key_can_go(
    connections: Connections, sage_oauth: OAuthProvider
) -> None:
    await connect(connections, sage_oauth)
    access = sage_oauth.latest[0]
    key_b = generate_key()

    both = another_process(connections, connection_encryption_keys=f"{key_b},{KEY_A}")
    assert await both.tokens(SAGE_KEY).access_token() == access  # old key still decrypts

    assert await rotate(connections.sessionmaker, both.cipher()) == 1

    only_b = another_process(connections, connection_encryption_keys=key_b)
    assert await only_b.tokens(SAGE_KEY).access_token() == access
    async with connections.sessionmaker() as session:
        with pytest.raises(TokenDecryptionError):
            await ConnectionStore(session, TokenCipher([KEY_A])).load(SAGE_KEY)
