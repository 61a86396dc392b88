"""Prometheus gauges for connections, read from the database when /metrics is scraped, so any
API process reports every connection, and refresh counters kept by each process.

/metrics needs no token, so its labels name no Kommo account or Sage business: a connection is
its provider and an ordinal ("1" for the provider's first connection by account)."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession

from app.connections.models import ConnectionState
from app.connections.store import ConnectionStore
from app.models import utcnow

NEEDS_REAUTH = Gauge(
    "sagebridge_connection_needs_reauth",
    "1 when a connection's grant is dead and ops must connect again",
    ["provider", "connection"],
)
REFRESH_EXPIRES_IN = Gauge(
    "sagebridge_connection_refresh_expires_seconds",
    "Seconds until a connection's refresh token (or long-lived token) expires",
    ["provider", "connection"],
)
REFRESHES = Counter(
    "sagebridge_connection_refreshes_total", "Token refreshes, by result", ["provider", "result"]
)


async def observe_connections(session: AsyncSession, *, now: datetime | None = None) -> None:
    """Set the gauges from the `connections` table (call it from the /metrics handler)."""
    now = now or utcnow()
    infos = await ConnectionStore(session, None).list_all()
    NEEDS_REAUTH.clear()  # a removed connection must not linger under its old ordinal
    REFRESH_EXPIRES_IN.clear()
    ordinals: dict[str, int] = {}
    for info in infos:
        ordinals[info.provider.value] = ordinals.get(info.provider.value, 0) + 1
        labels = (info.provider.value, str(ordinals[info.provider.value]))
        NEEDS_REAUTH.labels(*labels).set(info.state == ConnectionState.NEEDS_REAUTH)
        expires = info.refresh_expires_at or info.access_expires_at
        if expires is not None:
            REFRESH_EXPIRES_IN.labels(*labels).set((expires - now).total_seconds())
