"""ConnectionsConfig: read from Settings by name; redirect URIs; the lock outlives a request."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from app.connections.config import ConnectionsConfig
from app.connections.models import Provider
from app.settings import Settings


def test_from_settings_reads_attributes_by_name_and_defaults_the_rest() -> None:
    settings = SimpleNamespace(
        sage_oauth_client_id="cid",
        sage_oauth_client_secret="cs",
        sage_base_url="http://127.0.0.1:8701/v3.1",
        api_port=9000,
    )

    config = ConnectionsConfig.from_settings(settings)

    sage = config.sage()
    assert sage is not None and (sage.client_id, sage.client_secret) == ("cid", "cs")
    assert sage.redirect_uri == "http://127.0.0.1:9000/ops/connections/sage/callback"
    assert sage.token_url == "https://oauth.accounting.sage.com/token"
    assert config.kommo() is None and config.cipher() is None
    assert "cs" not in repr(sage)


def test_public_base_url_names_the_callbacks() -> None:
    config = ConnectionsConfig(public_base_url="https://bridge.example.com/")

    assert config.redirect_uri(Provider.KOMMO) == (
        "https://bridge.example.com/ops/connections/kommo/callback"
    )


def test_the_refresh_lock_must_outlive_a_token_request() -> None:
    with pytest.raises(ValidationError, match="TOKEN_REFRESH_LOCK_SECONDS"):
        ConnectionsConfig(http_timeout_seconds=20, token_refresh_lock_seconds=30)


def test_settings_declare_every_connection_field() -> None:
    """Guards the wiring: a Settings field with a typo would silently fall back to a default."""
    missing = set(ConnectionsConfig.model_fields) - set(Settings.model_fields)
    assert missing == set()
    for name, field in ConnectionsConfig.model_fields.items():
        wired = Settings.model_fields[name].get_default(call_default_factory=True)
        assert wired == field.get_default(call_default_factory=True), name
