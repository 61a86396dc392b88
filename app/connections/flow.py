"""The connect flow: start (a link with a single-use `state`), the browser that opens the link
(bound to the state by a cookie, then sent on to the provider), the callback (exchange the code,
store the connection), a Kommo long-lived token, and the list ops see.

A state belongs to one provider (its Redis key names it, so another provider's callback cannot
spend it) and to the one browser that opened the link: the callback must carry that browser's
cookie, checked before the state is spent. Neither Sage Accounting (authorization code flow only)
nor Kommo documents PKCE, so the cookie is what binds the flow to the browser.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import urlencode

import structlog
from redis.exceptions import RedisError

from app.connections.errors import InvalidCallback, OAuthTransientError
from app.connections.models import GrantKind, Provider
from app.connections.runtime import Connections
from app.connections.store import (
    ConnectionInfo,
    ConnectionKey,
    ConnectionStore,
    NewConnection,
    TokenSet,
)

log = structlog.get_logger(__name__)
STATE_PREFIX = "sagebridge:connections:oauth-state:"
BROWSER_COOKIE = "sagebridge_oauth_browser"
_STATE = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
T = TypeVar("T")


@dataclass(frozen=True)
class Authorization:
    authorize_url: str  # the bridge's own link, to open in the browser that will consent
    state: str


@dataclass(frozen=True)
class BrowserBinding:
    provider_url: str  # the provider's authorize URL, where the browser goes next
    cookie: str  # the value that browser must bring back to the callback


def state_key(provider: Provider, state: str) -> str:
    return f"{STATE_PREFIX}{provider.value}:{state}"


def _browser_key(provider: Provider, state: str) -> str:
    return f"{state_key(provider, state)}:browser"


async def start(connections: Connections, provider: Provider) -> Authorization:
    """A link for a person to open in a browser; its `state` is good once, for a few minutes."""
    connections.oauth(provider)  # NotConfigured before anything is stored
    state = secrets.token_urlsafe(32)
    ttl = connections.config.oauth_state_ttl_seconds
    await _redis(connections.redis.set(state_key(provider, state), "1", ex=ttl), "store the state")
    callback = connections.config.redirect_uri(provider)
    link = f"{callback.removesuffix('/callback')}/authorize?{urlencode({'state': state})}"
    log.info("connection.authorization_started", provider=provider.value)
    return Authorization(authorize_url=link, state=state)


async def bind_browser(connections: Connections, provider: Provider, state: str) -> BrowserBinding:
    """The first browser to open the link owns the flow: a cookie value for it, and the
    provider's authorize URL to send it on to."""
    oauth = connections.oauth(provider)
    _check_format(state)
    redis = connections.redis
    ttl_ms = await _redis(redis.pttl(state_key(provider, state)), "read the state")
    if ttl_ms <= 0:
        raise InvalidCallback("the connect link is unknown or expired; start again")
    cookie = secrets.token_urlsafe(32)
    bound = await _redis(
        redis.set(_browser_key(provider, state), _digest(cookie), px=ttl_ms, nx=True),
        "bind the state",
    )
    if not bound:
        raise InvalidCallback(
            "this connect link was already opened in another browser; start again to get a new one"
        )
    log.info("connection.browser_bound", provider=provider.value)
    return BrowserBinding(provider_url=oauth.authorize_url(state=state), cookie=cookie)


async def complete(
    connections: Connections,
    provider: Provider,
    *,
    state: str,
    code: str,
    browser: str | None,
    referer: str | None = None,
) -> ConnectionInfo:
    """The callback: check the state is this provider's and this browser's, spend it, exchange
    the code, store the new grant."""
    oauth = connections.oauth(provider)
    await _consume_state(connections, provider, state, browser)
    connected = await oauth.exchange(code=code, referer=referer)
    new = NewConnection(
        key=connected.key,
        kind=GrantKind.OAUTH,
        tokens=connected.tokens,
        display_name=connected.display_name,
        base_url=connected.base_url,
    )
    return await _save(connections, new)


async def store_long_lived(
    connections: Connections,
    *,
    base_url: str,
    account_id: int,
    token: str,
    expires_at: datetime | None = None,
) -> ConnectionInfo:
    """A Kommo private integration's long-lived token: no refresh token, an expiry chosen when
    it was generated (taken from the JWT's `exp` when not given)."""
    tokens = TokenSet(
        access_token=token,
        refresh_token=None,
        access_expires_at=expires_at or jwt_expiry(token),
        refresh_expires_at=None,
    )
    new = NewConnection(
        key=ConnectionKey(Provider.KOMMO, str(account_id)),
        kind=GrantKind.LONG_LIVED,
        tokens=tokens,
        display_name=base_url.split("://", 1)[-1].rstrip("/"),
        base_url=base_url.rstrip("/"),
    )
    return await _save(connections, new)


async def list_connections(connections: Connections) -> list[ConnectionInfo]:
    async with connections.sessionmaker() as session:
        return await ConnectionStore(session, None).list_all()


async def _consume_state(
    connections: Connections, provider: Provider, state: str, browser: str | None
) -> None:
    """Every check before the state is spent, so a wrong callback cannot burn it."""
    _check_format(state)
    redis = connections.redis
    if not await _redis(redis.exists(state_key(provider, state)), "read the state"):
        await _refuse_unknown(connections, provider, state)
    bound = await _redis(redis.get(_browser_key(provider, state)), "read the state")
    if bound is None or browser is None or not hmac.compare_digest(bound, _digest(browser)):
        raise InvalidCallback(
            "this browser did not open the connect link of this state: finish in the browser "
            "that opened the authorize_url from start, or start again"
        )
    if await _redis(redis.getdel(state_key(provider, state)), "spend the state") is None:
        raise InvalidCallback("the state is unknown, expired or already used; start again")
    await _redis(redis.delete(_browser_key(provider, state)), "spend the state")


async def _refuse_unknown(connections: Connections, provider: Provider, state: str) -> None:
    for other in Provider:
        if other != provider and await _redis(
            connections.redis.exists(state_key(other, state)), "read the state"
        ):
            raise InvalidCallback(f"the state was issued for {other.value}, not {provider.value}")
    raise InvalidCallback("the state is unknown, expired or already used; start again")


def _check_format(state: str) -> None:
    if not _STATE.match(state):
        raise InvalidCallback("the state is malformed")


def _digest(cookie: str) -> bytes:
    """Only a hash of the browser's cookie is kept in Redis."""
    return hashlib.sha256(cookie.encode()).hexdigest().encode()


async def _redis(call: Awaitable[T], what: str) -> T:
    try:
        return await call
    except (RedisError, OSError) as exc:
        raise OAuthTransientError("redis", f"cannot {what}: {type(exc).__name__}") from exc


async def _save(connections: Connections, new: NewConnection) -> ConnectionInfo:
    async with connections.sessionmaker() as session:
        info = await ConnectionStore(session, connections.cipher()).save_connected(new)
        await session.commit()
    log.info(
        "connection.connected",
        provider=info.provider.value,
        account=info.account,
        kind=info.kind.value,
        name=info.name,
        generation=info.generation,
    )
    return info


def jwt_expiry(token: str) -> datetime | None:
    """The `exp` claim of a JWT, read without verifying it (only to know when it runs out)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return datetime.fromtimestamp(int(payload["exp"]), UTC)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
