"""The connect flow: start (an authorize URL with a single-use `state`), the callback (exchange
the code, store the connection), a Kommo long-lived token, and the list ops see."""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

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
_STATE = re.compile(r"^[A-Za-z0-9_-]{32,128}$")


@dataclass(frozen=True)
class Authorization:
    authorize_url: str
    state: str


async def start(connections: Connections, provider: Provider) -> Authorization:
    """An authorize URL for a person to open; its `state` is good once, for a few minutes."""
    oauth = connections.oauth(provider)
    state = secrets.token_urlsafe(32)
    try:
        await connections.redis.set(
            STATE_PREFIX + state, provider.value, ex=connections.config.oauth_state_ttl_seconds
        )
    except (RedisError, OSError) as exc:
        raise OAuthTransientError("redis", f"cannot store the state: {type(exc).__name__}") from exc
    log.info("connection.authorization_started", provider=provider.value)
    return Authorization(authorize_url=oauth.authorize_url(state=state), state=state)


async def complete(
    connections: Connections,
    provider: Provider,
    *,
    state: str,
    code: str,
    referer: str | None = None,
) -> ConnectionInfo:
    """The callback: spend the state, exchange the code, store the new grant."""
    oauth = connections.oauth(provider)
    await _consume_state(connections, provider, state)
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


async def _consume_state(connections: Connections, provider: Provider, state: str) -> None:
    if not _STATE.match(state):
        raise InvalidCallback("the state is malformed")
    try:
        value = await connections.redis.getdel(STATE_PREFIX + state)
    except (RedisError, OSError) as exc:
        raise OAuthTransientError("redis", f"cannot read the state: {type(exc).__name__}") from exc
    if value is None:
        raise InvalidCallback("the state is unknown, expired or already used; start again")
    if value.decode() != provider.value:
        raise InvalidCallback(f"the state was issued for {value.decode()}, not {provider.value}")


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
