"""Keep idle Sage connections alive: a refresh token unused for 31 days dies, and with it the
connection. A bridge that raises no invoice for weeks must still refresh before that."""

from __future__ import annotations

from datetime import timedelta

import structlog

from app.connections.errors import ReauthorizationRequired
from app.connections.models import Provider
from app.connections.runtime import Connections
from app.connections.store import ConnectionKey, ConnectionStore
from app.errors import UpstreamError

log = structlog.get_logger(__name__)


async def keep_alive(
    connections: Connections,
    *,
    within: timedelta | None = None,
    providers: tuple[Provider, ...] = (Provider.SAGE,),
) -> list[ConnectionKey]:
    """Refresh every active connection whose refresh token expires within `within` (default
    KEEP_ALIVE_DAYS); returns those refreshed. A failure is logged; the next run tries again."""
    before = connections.clock() + (within or timedelta(days=connections.config.keep_alive_days))
    async with connections.sessionmaker() as session:
        keys = await ConnectionStore(session, None).refresh_expiring(providers, before=before)
    refreshed: list[ConnectionKey] = []
    for key in keys:
        try:
            if await connections.tokens(key).keep_alive(before=before):
                refreshed.append(key)
        except ReauthorizationRequired:
            continue  # logged as connection.needs_reauth where it was found
        except UpstreamError as exc:
            log.warning(
                "connection.keep_alive_failed",
                provider=key.provider.value,
                account=key.account,
                error=exc.detail,
            )
    if refreshed:
        log.info("connection.kept_alive", connections=[str(key) for key in refreshed])
    return refreshed
