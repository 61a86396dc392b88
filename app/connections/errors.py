"""What can go wrong with a connection, named for what the caller does about it.

`ReauthorizationRequired` is deliberately not an `UpstreamError`: retrying cannot help and no
deal's manager can fix it, so jobs park their events on it until ops connect again.
"""

from __future__ import annotations

from app.errors import UpstreamPermanentError, UpstreamTransientError


class ReauthorizationRequired(Exception):
    """The upstream no longer honours this connection's grant: a person must connect again."""

    def __init__(self, provider: str, account: str, detail: str) -> None:
        super().__init__(f"{provider} connection {account} needs re-authorisation: {detail}")
        self.provider = provider
        self.account = account
        self.detail = detail


class NotConnected(ReauthorizationRequired):
    """No connection was ever made for this account: ops must run the connect flow."""


class OAuthTransientError(UpstreamTransientError):
    """The token endpoint (or the refresh lock) is unreachable, slow, 429 or 5xx: try later."""


class OAuthRequestError(UpstreamPermanentError):
    """The provider refused a token or connect request; `detail` quotes its message."""


class InvalidGrant(OAuthRequestError):
    """The code or refresh token is spent, expired or revoked (`invalid_grant`, Kommo's 401)."""


class TokenDecryptionError(RuntimeError):
    """No configured key decrypts a stored token: a key was dropped before `rotate` ran."""


class NotConfigured(Exception):
    """A provider's OAuth client, or the encryption keys, are not configured."""


class InvalidCallback(Exception):
    """The connect callback carries a `state` that is unknown, expired, used or for another
    provider, or a Kommo `referer` outside the allowed domains."""
