"""OAuth 2.0 authorization-code store shared by both simulators.

Authorization codes are single use and short lived; refresh tokens rotate on every use and a
used one is dead (both Sage and Kommo behave so). Each simulator maps ``OAuthError`` onto its
own wire format. Statically configured tokens never expire: the demo and tests use them.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

import structlog

from sandbox.common.ids import Clock

log = structlog.get_logger(__name__)


class OAuthError(Exception):
    """``error`` is the RFC 6749 code (invalid_grant, invalid_client…); ``reason`` says why."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(f"{error}: {reason}")
        self.error = error
        self.reason = reason


class TokenCheck(Enum):
    VALID = "valid"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_token_expires_in: int


@dataclass
class _Code:
    client_id: str | None
    redirect_uri: str | None
    expires_at: datetime


@dataclass
class _Refresh:
    client_id: str
    expires_at: datetime
    used: bool = False


@dataclass(frozen=True)
class OAuthPolicy:
    clients: Mapping[str, str]
    access_ttl: timedelta
    refresh_ttl: timedelta
    code_ttl: timedelta


class OAuthStore:
    def __init__(self, policy: OAuthPolicy, *, static_tokens: Iterable[str], clock: Clock) -> None:
        self._policy = policy
        self._clock = clock
        self._static = frozenset(static_tokens)
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._access: dict[str, datetime] = {}
        self._issued: list[IssuedTokens] = []
        self._lock = threading.Lock()

    @property
    def code_ttl_seconds(self) -> int:
        return int(self._policy.code_ttl.total_seconds())

    def issue_code(self, *, client_id: str | None = None, redirect_uri: str | None = None) -> str:
        """What the user's consent screen would hand back to the redirect URI."""
        code = secrets.token_urlsafe(24)
        expires = self._clock() + self._policy.code_ttl
        with self._lock:
            self._codes[code] = _Code(client_id, redirect_uri, expires)
        return code

    def exchange_code(
        self, *, client_id: str, client_secret: str, code: str, redirect_uri: str | None
    ) -> IssuedTokens:
        self._authenticate_client(client_id, client_secret)
        with self._lock:
            grant = self._codes.pop(code, None)
            self._check_code(grant, client_id, redirect_uri)
            tokens = self._issue(client_id)
        log.info("sandbox.oauth.code_exchanged", client_id=client_id)
        return tokens

    def refresh(self, *, client_id: str, client_secret: str, refresh_token: str) -> IssuedTokens:
        self._authenticate_client(client_id, client_secret)
        with self._lock:
            self._spend_refresh(refresh_token, client_id)
            tokens = self._issue(client_id)
        log.info("sandbox.oauth.refreshed", client_id=client_id)
        return tokens

    def revoke_refresh_token(self, refresh_token: str) -> bool:
        with self._lock:
            grant = self._refresh.get(refresh_token)
            if grant is None or grant.used:
                return False
            grant.used = True
        return True

    def issued(self) -> list[IssuedTokens]:
        """Every pair handed out, oldest first (the Python API only: never served over HTTP)."""
        with self._lock:
            return list(self._issued)

    def expire_access_token(self, token: str) -> bool:
        """Make one issued access token expire now, as a provider revoking it early would."""
        with self._lock:
            if token not in self._access:
                return False
            self._access[token] = min(self._access[token], self._clock())
        return True

    def expire_access_tokens(self) -> int:
        """Make every issued (non-static) access token expire now; returns how many were live."""
        now = self._clock()
        with self._lock:
            live = [t for t, exp in self._access.items() if exp > now]
            for token in live:
                self._access[token] = now
        return len(live)

    def check_access(self, token: str) -> TokenCheck:
        if token in self._static:
            return TokenCheck.VALID
        with self._lock:
            expires = self._access.get(token)
        if expires is None:
            return TokenCheck.UNKNOWN
        return TokenCheck.VALID if self._clock() < expires else TokenCheck.EXPIRED

    def _authenticate_client(self, client_id: str, client_secret: str) -> None:
        expected = self._policy.clients.get(client_id)
        if expected is None or not secrets.compare_digest(expected, client_secret):
            raise OAuthError("invalid_client", "Client authentication failed")

    def _check_code(self, grant: _Code | None, client_id: str, redirect_uri: str | None) -> None:
        if grant is None:
            raise OAuthError("invalid_grant", "Authorization code is unknown or used")
        if self._clock() >= grant.expires_at:
            raise OAuthError("invalid_grant", "Authorization code has expired")
        if grant.client_id is not None and grant.client_id != client_id:
            raise OAuthError("invalid_grant", "Authorization code was issued to another client")
        if grant.redirect_uri is not None and grant.redirect_uri != redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match")

    def _spend_refresh(self, refresh_token: str, client_id: str) -> None:
        grant = self._refresh.get(refresh_token)
        if grant is None or grant.client_id != client_id:
            raise OAuthError("invalid_grant", "Refresh token is unknown")
        if grant.used:
            raise OAuthError("invalid_grant", "Token has been revoked")
        if self._clock() >= grant.expires_at:
            raise OAuthError("invalid_grant", "Refresh token has expired")
        grant.used = True

    def _issue(self, client_id: str) -> IssuedTokens:
        now = self._clock()
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._access[access] = now + self._policy.access_ttl
        self._refresh[refresh] = _Refresh(client_id, now + self._policy.refresh_ttl)
        tokens = IssuedTokens(
            access_token=access,
            refresh_token=refresh,
            expires_in=int(self._policy.access_ttl.total_seconds()),
            refresh_token_expires_in=int(self._policy.refresh_ttl.total_seconds()),
        )
        self._issued.append(tokens)
        return tokens
