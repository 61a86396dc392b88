"""`sagebridge connections …`: encryption keys, the list of connections, and a headless
import of a Sage refresh token. Connecting with a browser goes through the API (see
app/routes/connections.py), where the browser comes back to."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
import structlog
import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clients.http import build_http_client
from app.connections.config import ConnectionsConfig
from app.connections.crypto import TokenCipher, generate_key
from app.connections.errors import NotConfigured
from app.connections.models import GrantKind, Provider
from app.connections.oauth import SageOAuth, pick_business
from app.connections.store import (
    ConnectionInfo,
    ConnectionKey,
    ConnectionStore,
    NewConnection,
    rotate,
)
from app.db import create_engine, create_sessionmaker
from app.errors import UpstreamError
from app.models import utcnow
from app.settings import get_settings

log = structlog.get_logger(__name__)
connections_cli = typer.Typer(help="Upstream connections: encryption keys, list, import.")


@connections_cli.command("generate-key")
def generate_key_command() -> None:
    """Print a new key for CONNECTION_ENCRYPTION_KEYS (put it first to start using it)."""
    typer.echo(generate_key())


@connections_cli.command("rotate-keys")
def rotate_keys_command() -> None:
    """Re-encrypt every stored token with the first key; older keys can then be removed."""
    settings = get_settings()
    cipher = ConnectionsConfig.from_settings(settings).cipher()
    if cipher is None:
        raise typer.BadParameter("CONNECTION_ENCRYPTION_KEYS is not set")
    count = asyncio.run(rotate_keys(settings.resolved_database_url, cipher))
    typer.echo(f"re-encrypted {count} connection(s) with the first key")


@connections_cli.command("list")
def list_command() -> None:
    """Every connection with its state and expiries (never a token), as JSON."""
    infos = asyncio.run(list_connections(get_settings().resolved_database_url))
    typer.echo(json.dumps(infos, indent=2))


@connections_cli.command("import")
def import_command(
    provider: str = typer.Argument(help="Only 'sage': its refresh tokens can be imported."),
    refresh_token: str = typer.Option(
        ..., "--refresh-token", help="A Sage refresh token; it is spent once, here."
    ),
    business_id: str | None = typer.Option(
        None, "--business-id", help="The business to connect (default: SAGE_BUSINESS_ID)."
    ),
) -> None:
    """Connect Sage on a server without a browser: exchange a refresh token once at Sage's token
    URL and store the new pair, encrypted, as the connect flow would."""
    if provider != Provider.SAGE.value:
        raise typer.BadParameter("only 'sage' can be imported; connect Kommo with OAuth")
    settings = get_settings()
    config = ConnectionsConfig.from_settings(settings)
    try:
        info = asyncio.run(
            _import_sage(settings.resolved_database_url, config, refresh_token, business_id)
        )
    except (NotConfigured, UpstreamError) as exc:
        typer.echo(f"not imported: {getattr(exc, 'detail', exc)}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(info.model_dump(mode="json"), indent=2))


async def _import_sage(
    database_url: str, config: ConnectionsConfig, refresh_token: str, business_id: str | None
) -> ConnectionInfo:
    engine = create_engine(database_url)
    http = build_http_client("", headers={}, timeout=config.http_timeout_seconds)
    try:
        return await import_sage(
            config,
            create_sessionmaker(engine),
            http,
            refresh_token=refresh_token,
            business_id=business_id,
        )
    finally:
        await http.aclose()
        await engine.dispose()


async def import_sage(
    config: ConnectionsConfig,
    sessionmaker: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    *,
    refresh_token: str,
    business_id: str | None = None,
) -> ConnectionInfo:
    """Spend `refresh_token` once for a new pair, find the business, store the grant."""
    cipher = config.cipher()
    if cipher is None:
        raise NotConfigured(
            "CONNECTION_ENCRYPTION_KEYS is not set; make one with "
            "`sagebridge connections generate-key`"
        )
    sage = config.sage()
    if sage is None:
        raise NotConfigured(
            "SAGE_OAUTH_CLIENT_ID and SAGE_OAUTH_CLIENT_SECRET are not set: a refresh token can "
            "only be exchanged by the OAuth app it was issued to"
        )
    if business_id:
        sage = replace(sage, business_id=business_id)
    oauth = SageOAuth(sage, http, clock=utcnow)
    tokens = await oauth.refresh(refresh_token=refresh_token, base_url=None)
    business = pick_business(await oauth.businesses(tokens.access_token), sage)
    new = NewConnection(
        key=ConnectionKey(Provider.SAGE, business.id),
        kind=GrantKind.OAUTH,
        tokens=tokens,
        display_name=business.label,
        base_url=None,
    )
    async with sessionmaker() as session:
        info = await ConnectionStore(session, cipher).save_connected(new)
        await session.commit()
    log.info("connection.imported", provider="sage", account=info.account, name=info.name)
    return info


async def rotate_keys(database_url: str, cipher: TokenCipher) -> int:
    engine = create_engine(database_url)
    try:
        return await rotate(create_sessionmaker(engine), cipher)
    finally:
        await engine.dispose()


async def list_connections(database_url: str) -> list[dict[str, object]]:
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            infos = await ConnectionStore(session, None).list_all()
    finally:
        await engine.dispose()
    return [info.model_dump(mode="json") for info in infos]
