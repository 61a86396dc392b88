"""`sagebridge connections …`: generate a key, rotate every row to it, list."""

from __future__ import annotations

from cryptography.fernet import Fernet
from typer.testing import CliRunner

from app.connections.cli import connections_cli, list_connections, rotate_keys
from app.connections.crypto import TokenCipher, generate_key
from app.connections.runtime import Connections
from tests.connections.conftest import KEY_A, SAGE_KEY, another_process, connect
from tests.connections.fakes import FakeOAuthServer


def test_generate_key_prints_a_fernet_key() -> None:
    result = CliRunner().invoke(connections_cli, ["generate-key"])

    assert result.exit_code == 0
    Fernet(result.output.strip().encode())


async def test_rotate_keys_and_list(
    connections: Connections, upstream: FakeOAuthServer, database_url: str
) -> None:
    await connect(connections, upstream)
    key_b = generate_key()

    assert await rotate_keys(database_url, TokenCipher([key_b, KEY_A])) == 1

    only_b = another_process(connections, connection_encryption_keys=key_b)
    assert await only_b.tokens(SAGE_KEY).access_token() == upstream.latest[0]
    listed = await list_connections(database_url)
    assert [(c["provider"], c["account"], c["state"]) for c in listed] == [
        ("sage", SAGE_KEY.account, "active")
    ]
    assert upstream.latest[0] not in str(listed)
