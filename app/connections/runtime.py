"""The connection pieces one process keeps for its life: the cipher, a Redis client for locks
and connect states, the OAuth clients, and one TokenProvider per connection."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clients.http import build_http_client
from app.connections.config import ConnectionsConfig
from app.connections.crypto import TokenCipher
from app.connections.errors import NotConfigured
from app.connections.models import ConnectionState, Provider
from app.connections.oauth import KommoOAuth, OAuthClient, SageOAuth
from app.connections.store import ConnectionKey, ConnectionStore
from app.connections.tokens import OAuthBearer, TokenProvider
from app.models import utcnow


class Connections:
    def __init__(
        self,
        config: ConnectionsConfig,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis: Redis,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.sessionmaker = sessionmaker
        self.redis = redis
        self.clock = clock
        self._http = http
        self._cipher = config.cipher()
        self._oauth = _oauth_clients(config, http, clock)
        self._providers: dict[ConnectionKey, TokenProvider] = {}

    @classmethod
    def open(
        cls,
        config: ConnectionsConfig,
        sessionmaker: async_sessionmaker[AsyncSession],
        redis_url: str | None,
    ) -> Connections:
        """Redis holds the refresh locks and the connect flow's states: it is required."""
        if not redis_url:
            raise RuntimeError("REDIS_URL is not set: connections need Redis for refresh locks")
        http = build_http_client("", headers={}, timeout=config.http_timeout_seconds)
        return cls(config, sessionmaker, Redis.from_url(redis_url), http)

    async def is_active(self, provider: str, account: str) -> bool:
        """Whether the stored connection for this account is usable (for resuming events)."""
        async with self.sessionmaker() as session:
            snapshot = await ConnectionStore(session, self._cipher).load(
                ConnectionKey(Provider(provider), account)
            )
        return snapshot is not None and snapshot.state == ConnectionState.ACTIVE

    async def close(self) -> None:
        await self._http.aclose()
        await self.redis.aclose()

    def cipher(self) -> TokenCipher:
        if self._cipher is None:
            raise NotConfigured(
                "CONNECTION_ENCRYPTION_KEYS is not set; generate a key with "
                "`sagebridge connections generate-key`"
            )
        return self._cipher

    def oauth(self, provider: Provider) -> OAuthClient:
        """The provider's OAuth client; refused unless tokens could also be stored."""
        self.cipher()
        client = self._oauth.get(provider)
        if client is None:
            name = provider.value.upper()
            raise NotConfigured(
                f"{provider.value} OAuth is not configured: set {name}_OAUTH_CLIENT_ID and "
                f"{name}_OAUTH_CLIENT_SECRET"
            )
        return client

    def tokens(self, key: ConnectionKey) -> TokenProvider:
        """The one TokenProvider of this process for `key`, so its callers share a lock."""
        provider = self._providers.get(key)
        if provider is None:
            provider = self._providers[key] = TokenProvider(
                key,
                sessionmaker=self.sessionmaker,
                redis=self.redis,
                cipher=self.cipher(),
                oauth=self._oauth.get(key.provider),
                policy=self.config.refresh_policy(),
                clock=self.clock,
            )
        return provider

    def bearer(self, key: ConnectionKey, *, fallback: str | None = None) -> OAuthBearer:
        """`auth=` for the upstream's httpx client; `fallback` only while nothing is stored."""
        return OAuthBearer(self.tokens(key), fallback=fallback)


def _oauth_clients(
    config: ConnectionsConfig, http: httpx.AsyncClient, clock: Callable[[], datetime]
) -> dict[Provider, OAuthClient]:
    clients: dict[Provider, OAuthClient] = {}
    if sage := config.sage():
        clients[Provider.SAGE] = SageOAuth(sage, http, clock=clock)
    if kommo := config.kommo():
        clients[Provider.KOMMO] = KommoOAuth(kommo, http, clock=clock)
    return clients
