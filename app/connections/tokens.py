"""Valid access tokens for one connection, refreshed single-flight across every process.

A refresh token is single-use, so two processes refreshing at once would kill the connection.
Refreshes are therefore serialised per connection by a Redis lock (and, in-process, by an
asyncio.Lock so waiters queue locally instead of polling Redis). Under the lock the row is read
again: if its `generation` moved, another process already refreshed and its pair is used. The
new pair is committed before its access token is handed to anyone.

A holder that dies between the token endpoint's answer and the commit loses the new pair: the
provider has spent the old refresh token and no store has seen the new one. That cannot be
designed away without a grace period for used refresh tokens, which neither provider documents.
The next refresh then gets `invalid_grant` and the connection turns `needs_reauth`, visibly.
The window is a single local commit; the lock's timeout is kept well above the HTTP timeout so a
live holder is never overtaken, and a holder that was only slow can still commit over a
`needs_reauth` mark (that write does not move the generation), reviving the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from http import HTTPStatus

import httpx
import structlog
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, LockNotOwnedError, RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.connections.crypto import TokenCipher
from app.connections.errors import (
    InvalidGrant,
    NotConnected,
    OAuthRequestError,
    OAuthTransientError,
    ReauthorizationRequired,
)
from app.connections.metrics import REFRESHES
from app.connections.models import ConnectionState
from app.connections.oauth import OAuthClient
from app.connections.store import ConnectionKey, ConnectionStore, Snapshot, TokenSet
from app.models import utcnow

log = structlog.get_logger(__name__)
LOCK_PREFIX = "sagebridge:connections:refresh-lock:"
# A commit that fails after the provider has spent the old refresh token is retried briefly:
# the pair exists nowhere else.
COMMIT_RETRY_DELAYS = (0.2, 1.0, 3.0)


@dataclass(frozen=True)
class RefreshPolicy:
    # Refresh when fewer than this many seconds of the access token remain.
    margin: timedelta = timedelta(seconds=60)
    # The Redis lock's life: a dead holder frees it after this. Must exceed the token request's
    # worst case, or a live holder could be overtaken and the refresh token spent twice.
    lock_timeout: float = 30.0
    # How long a process queues for the lock before giving up with a transient error.
    lock_wait: float = 45.0


NeedsRefresh = Callable[[Snapshot], bool]


class TokenProvider:
    """One per connection per process (see `Connections.tokens`), shared by all its callers."""

    def __init__(
        self,
        key: ConnectionKey,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: Redis,
        cipher: TokenCipher,
        oauth: OAuthClient | None,
        policy: RefreshPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.key = key
        self._sessionmaker = sessionmaker
        self._redis = redis
        self._cipher = cipher
        self._oauth = oauth
        self._policy = policy or RefreshPolicy()
        self._clock = clock
        self._local = asyncio.Lock()
        self._current: Snapshot | None = None

    async def access_token(self) -> str:
        """A token with more than `margin` left, refreshing it first if need be."""
        current = self._current
        if current is not None and self._fresh(current):
            return current.tokens.access_token
        async with self._local:
            snapshot = await self._reload()
            if self._fresh(snapshot):
                return snapshot.tokens.access_token
            return await self._refresh(lambda s: not self._fresh(s), reason="expiring")

    async def force_refresh(self, *, stale: str) -> str:
        """After a 401 for `stale`: refresh, unless someone has already replaced that token."""
        async with self._local:
            snapshot = await self._reload()
            if snapshot.tokens.access_token != stale:
                return snapshot.tokens.access_token
            return await self._refresh(lambda s: s.tokens.access_token == stale, reason="401")

    async def keep_alive(self, *, before: datetime) -> bool:
        """Refresh if the refresh token dies before `before`; True if the pair changed."""

        def dying(snapshot: Snapshot) -> bool:
            expires = snapshot.tokens.refresh_expires_at
            return expires is not None and expires < before

        async with self._local:
            generation = (await self._reload()).generation
            await self._refresh(dying, reason="keep_alive")
            return self._current is not None and self._current.generation != generation

    def _fresh(self, snapshot: Snapshot) -> bool:
        expires = snapshot.tokens.access_expires_at
        return expires is None or expires - self._clock() > self._policy.margin

    async def _refresh(self, needed: NeedsRefresh, *, reason: str) -> str:
        async with self._distributed_lock():
            snapshot = await self._reload()
            if not needed(snapshot):
                return snapshot.tokens.access_token  # another process got here first
            return await self._refresh_locked(snapshot, reason)

    async def _refresh_locked(self, snapshot: Snapshot, reason: str) -> str:
        refresh_token = snapshot.tokens.refresh_token
        if refresh_token is None:
            return await self._long_lived(snapshot, reason)
        if self._oauth is None:
            name = self.key.provider.value
            raise OAuthRequestError(
                name, f"{name.upper()}_OAUTH_CLIENT_ID is not configured: cannot refresh"
            )
        try:
            tokens = await self._oauth.refresh(
                refresh_token=refresh_token, base_url=snapshot.base_url
            )
        except InvalidGrant as exc:
            REFRESHES.labels(self.key.provider.value, "invalid_grant").inc()
            return await self._lost_grant(snapshot, exc.detail)
        except OAuthTransientError:
            REFRESHES.labels(self.key.provider.value, "transient").inc()
            raise
        REFRESHES.labels(self.key.provider.value, "ok").inc()
        return await self._commit(snapshot, _keep_unrotated(tokens, snapshot.tokens), reason)

    async def _long_lived(self, snapshot: Snapshot, reason: str) -> str:
        """Nothing to refresh with: serve it until it expires or the upstream refuses it."""
        expires = snapshot.tokens.access_expires_at
        if reason != "401" and (expires is None or expires > self._clock()):
            return snapshot.tokens.access_token
        return await self._lost_grant(snapshot, "the long-lived token was refused or has expired")

    async def _commit(self, snapshot: Snapshot, tokens: TokenSet, reason: str) -> str:
        saved = await self._save_refreshed(snapshot, tokens)
        if not saved:
            # Only a reconnect writes without the lock; its fresh grant wins over ours.
            log.warning("connection.refresh_discarded", **self._ids(), reason=reason)
            return (await self._reload()).tokens.access_token
        self._current = replace(
            snapshot,
            tokens=tokens,
            generation=snapshot.generation + 1,
            state=ConnectionState.ACTIVE,
            last_error=None,
        )
        log.info(
            "connection.refreshed",
            **self._ids(),
            reason=reason,
            generation=snapshot.generation + 1,
            access_expires_at=_iso(tokens.access_expires_at),
            refresh_expires_at=_iso(tokens.refresh_expires_at),
        )
        return tokens.access_token

    async def _save_refreshed(self, snapshot: Snapshot, tokens: TokenSet) -> bool:
        for delay in COMMIT_RETRY_DELAYS:
            try:
                return await self._store_pair(snapshot, tokens)
            except (SQLAlchemyError, OSError) as exc:
                log.error(
                    "connection.refresh_unsaved",
                    **self._ids(),
                    retry_in=delay,
                    error=type(exc).__name__,
                )
                await asyncio.sleep(delay)
        try:
            return await self._store_pair(snapshot, tokens)
        except (SQLAlchemyError, OSError) as exc:
            log.error("connection.refresh_lost", **self._ids(), error=type(exc).__name__)
            raise OAuthTransientError(
                self.key.provider.value, "the refreshed tokens could not be stored"
            ) from exc

    async def _store_pair(self, snapshot: Snapshot, tokens: TokenSet) -> bool:
        async with self._sessionmaker() as session:
            store = ConnectionStore(session, self._cipher)
            saved = await store.save_refreshed(
                self.key, tokens, seen_generation=snapshot.generation
            )
            await session.commit()
        return saved

    async def _lost_grant(self, snapshot: Snapshot, detail: str) -> str:
        """Mark the connection dead, unless the row moved on (then its newer pair is used)."""
        async with self._sessionmaker() as session:
            store = ConnectionStore(session, self._cipher)
            marked = await store.mark_needs_reauth(
                self.key, detail, seen_generation=snapshot.generation
            )
            await session.commit()
        if not marked:
            return (await self._reload()).tokens.access_token
        self._current = None
        log.error("connection.needs_reauth", **self._ids(), detail=detail)
        raise ReauthorizationRequired(self.key.provider.value, self.key.account, detail)

    async def _reload(self) -> Snapshot:
        async with self._sessionmaker() as session:
            snapshot = await ConnectionStore(session, self._cipher).load(self.key)
        if snapshot is None:
            self._current = None
            raise NotConnected(self.key.provider.value, self.key.account, "not connected yet")
        if snapshot.state == ConnectionState.NEEDS_REAUTH:
            self._current = None
            detail = snapshot.last_error or "the grant was refused"
            raise ReauthorizationRequired(self.key.provider.value, self.key.account, detail)
        self._current = snapshot
        return snapshot

    @asynccontextmanager
    async def _distributed_lock(self) -> AsyncIterator[None]:
        lock = Lock(
            self._redis,
            f"{LOCK_PREFIX}{self.key}",
            timeout=self._policy.lock_timeout,
            blocking_timeout=self._policy.lock_wait,
            sleep=0.05,
            thread_local=False,
        )
        try:
            acquired = await lock.acquire()
        except (RedisError, OSError) as exc:
            raise OAuthTransientError("redis", f"refresh lock: {type(exc).__name__}") from exc
        if not acquired:
            raise OAuthTransientError(self.key.provider.value, "waited too long to refresh")
        try:
            yield
        finally:
            await self._release(lock)

    async def _release(self, lock: Lock) -> None:
        try:
            await lock.release()
        except LockNotOwnedError:
            # We outlived the lock's timeout; the CAS on generation kept the write safe.
            log.warning("connection.refresh_lock_expired", **self._ids())
        except (LockError, RedisError, OSError) as exc:
            log.warning("connection.refresh_lock_release_failed", error=type(exc).__name__)

    def _ids(self) -> dict[str, str]:
        return {"provider": self.key.provider.value, "account": self.key.account}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _keep_unrotated(new: TokenSet, old: TokenSet) -> TokenSet:
    """A provider that does not rotate answers without a refresh token: keep the old one."""
    if new.refresh_token is not None:
        return new
    return replace(new, refresh_token=old.refresh_token, refresh_expires_at=old.refresh_expires_at)


class OAuthBearer(httpx.Auth):
    """`Authorization: Bearer` from a TokenProvider; a 401 forces one refresh and one retry.

    `fallback` (a static token from the settings) is sent only while no grant is stored for
    the connection at all, so a leftover static token never wins over a working grant."""

    def __init__(self, tokens: TokenProvider, *, fallback: str | None = None) -> None:
        self._tokens = tokens
        self._fallback = fallback

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        try:
            token = await self._tokens.access_token()
        except NotConnected:
            if self._fallback is None:
                raise
            request.headers["Authorization"] = f"Bearer {self._fallback}"
            yield request
            return
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != HTTPStatus.UNAUTHORIZED:
            return
        key = self._tokens.key
        log.info("connection.unauthorized", provider=key.provider.value, account=key.account)
        fresh = await self._tokens.force_refresh(stale=token)
        request.headers["Authorization"] = f"Bearer {fresh}"
        yield request

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("OAuthBearer needs an httpx.AsyncClient")
