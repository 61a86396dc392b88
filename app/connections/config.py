"""Connection settings: the group Settings is composed of, and the connections' view of Settings
(`ConnectionsConfig.from_settings` reads it by attribute name)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from app.connections.crypto import TokenCipher
from app.connections.models import Provider
from app.connections.oauth import KommoOAuthConfig, SageOAuthConfig
from app.connections.tokens import RefreshPolicy

CALLBACK_PATH = "/ops/connections/{provider}/callback"


class ConnectionSettings(BaseModel):
    """The connection settings, declared once: `Settings` is composed of this group, so each
    field is the environment variable of the same name (see docs/CONFIGURATION.md)."""

    # Comma-separated Fernet keys, newest first: the first encrypts, all decrypt.
    connection_encryption_keys: SecretStr | None = None
    # Where a browser reaches the bridge; redirect URIs: {this}/ops/connections/{provider}/callback
    public_base_url: str | None = None
    oauth_state_ttl_seconds: int = 600
    token_refresh_margin_seconds: int = 60
    token_refresh_lock_seconds: float = 30.0
    # Above ALERT_TOKEN_EXPIRY_DAYS (7): the twice-daily keep-alive refreshes an idle grant
    # days before its expiry alert could fire.
    keep_alive_days: int = 10
    sage_oauth_client_id: str | None = None
    sage_oauth_client_secret: SecretStr | None = None
    sage_oauth_authorize_url: str = "https://www.sageone.com/oauth2/auth/central?filter=apiv3.1"
    sage_oauth_token_url: str = "https://oauth.accounting.sage.com/token"  # noqa: S105 - a URL
    sage_oauth_scope: str = "full_access"
    kommo_oauth_client_id: str | None = None
    kommo_oauth_client_secret: SecretStr | None = None
    kommo_oauth_authorize_url: str = "https://www.kommo.com/oauth"
    kommo_oauth_mode: str = "post_message"
    kommo_oauth_token_path: str = "/oauth2/access_token"  # noqa: S105 - a path
    kommo_oauth_scheme: str = "https"
    kommo_oauth_allowed_domains: list[str] = Field(
        default_factory=lambda: ["kommo.com", "amocrm.ru", "amocrm.com"]
    )


class ConnectionsConfig(ConnectionSettings):
    """What the connections run with: their own group, and what they read from Settings' other
    groups (where callbacks go, how long a token request may take, which Sage API and business),
    whose defaults live there alone."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    api_host: str
    api_port: int
    http_timeout_seconds: float
    sage_base_url: str
    sage_business_id: str | None

    @model_validator(mode="after")
    def _lock_outlives_a_token_request(self) -> ConnectionsConfig:
        # A holder overtaken by an expired lock would let a second process spend the same
        # single-use refresh token.
        if self.token_refresh_lock_seconds < 2 * self.http_timeout_seconds:
            raise ValueError("TOKEN_REFRESH_LOCK_SECONDS must be at least 2 × HTTP_TIMEOUT_SECONDS")
        return self

    @classmethod
    def from_settings(cls, settings: object) -> ConnectionsConfig:
        return cls.model_validate(settings, from_attributes=True)

    def redirect_uri(self, provider: Provider) -> str:
        base = self.public_base_url or f"http://{self.api_host}:{self.api_port}"
        return base.rstrip("/") + CALLBACK_PATH.format(provider=provider.value)

    def cipher(self) -> TokenCipher | None:
        keys = self.connection_encryption_keys
        return TokenCipher.from_setting(keys.get_secret_value()) if keys else None

    def refresh_policy(self) -> RefreshPolicy:
        return RefreshPolicy(
            margin=timedelta(seconds=self.token_refresh_margin_seconds),
            lock_timeout=self.token_refresh_lock_seconds,
            lock_wait=self.token_refresh_lock_seconds * 1.5,
        )

    def sage(self) -> SageOAuthConfig | None:
        if not (self.sage_oauth_client_id and self.sage_oauth_client_secret):
            return None
        return SageOAuthConfig(
            client_id=self.sage_oauth_client_id,
            client_secret=self.sage_oauth_client_secret.get_secret_value(),
            redirect_uri=self.redirect_uri(Provider.SAGE),
            api_base_url=self.sage_base_url,
            authorize_url=self.sage_oauth_authorize_url,
            token_url=self.sage_oauth_token_url,
            scope=self.sage_oauth_scope,
            business_id=self.sage_business_id,
        )

    def kommo(self) -> KommoOAuthConfig | None:
        if not (self.kommo_oauth_client_id and self.kommo_oauth_client_secret):
            return None
        return KommoOAuthConfig(
            client_id=self.kommo_oauth_client_id,
            client_secret=self.kommo_oauth_client_secret.get_secret_value(),
            redirect_uri=self.redirect_uri(Provider.KOMMO),
            authorize_url=self.kommo_oauth_authorize_url,
            mode=self.kommo_oauth_mode,
            token_path=self.kommo_oauth_token_path,
            allowed_domains=tuple(self.kommo_oauth_allowed_domains),
            scheme=self.kommo_oauth_scheme,
        )
