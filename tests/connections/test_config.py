"""ConnectionsConfig: read from Settings by name; redirect URIs; the lock outlives a request."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from app.connections.config import ConnectionsConfig
from app.connections.models import Provider
from app.settings import Settings

# What the connections read from Settings' other groups, at those groups' defaults.
OTHER_GROUPS = {
    "api_host": "127.0.0.1",
    "api_port": 8000,
    "http_timeout_seconds": 10.0,
    "sage_base_url": "https://api.accounting.sage.com/v3.1",
    "sage_business_id": None,
}


def config(**values: object) -> ConnectionsConfig:
    return ConnectionsConfig.model_validate({**OTHER_GROUPS, **values})


def test_from_settings_reads_attributes_by_name_and_defaults_the_rest() -> None:
    settings = SimpleNamespace(
        **OTHER_GROUPS
        | {
            "sage_oauth_client_id": "cid",
            "sage_oauth_client_secret": "cs",
            "sage_base_url": "http://127.0.0.1:8701/v3.1",
            "api_port": 9000,
        }
    )

    config = ConnectionsConfig.from_settings(settings)

    sage = config.sage()
    assert sage is not None and (sage.client_id, sage.client_secret) == ("cid", "cs")
    assert sage.redirect_uri == "http://127.0.0.1:9000/ops/connections/sage/callback"
    assert sage.token_url == "https://oauth.accounting.sage.com/token"
    assert config.kommo() is None and config.cipher() is None
    assert "cs" not in repr(sage)


def test_public_base_url_names_the_callbacks() -> None:
    built = config(public_base_url="https://bridge.example.com/")

    assert built.redirect_uri(Provider.KOMMO) == (
        "https://bridge.example.com/ops/connections/kommo/callback"
    )


def test_the_refresh_lock_must_outlive_a_token_request() -> None:
    with pytest.raises(ValidationError, match="TOKEN_REFRESH_LOCK_SECONDS"):
        config(http_timeout_seconds=20, token_refresh_lock_seconds=30)


def test_settings_declare_every_connection_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the wiring: every field the connections read is a Settings field, read from the
    environment variable of its name (the connection group is declared once, in
    app/connections/config.py, and Settings is composed of it)."""
    missing = set(ConnectionsConfig.model_fields) - set(Settings.model_fields)
    assert missing == set()
    environment = {
        "KEEP_ALIVE_DAYS": "3",
        "KOMMO_OAUTH_ALLOWED_DOMAINS": '["kommo.com"]',
        "PUBLIC_BASE_URL": "https://bridge.example.com",
        "API_PORT": "9001",
        "HTTP_TIMEOUT_SECONDS": "4",
        "SAGE_BUSINESS_ID": "b" * 32,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    config = ConnectionsConfig.from_settings(Settings(_env_file=None))

    assert (
        config.keep_alive_days,
        config.kommo_oauth_allowed_domains,
        config.public_base_url,
        config.api_port,
        config.http_timeout_seconds,
        config.sage_business_id,
    ) == (3, ["kommo.com"], "https://bridge.example.com", 9001, 4.0, "b" * 32)
