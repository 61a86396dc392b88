"""`sagebridge connections …`: encryption keys and the list of connections. Connecting itself
goes through the API (see app/routes/connections.py), where the browser comes back to."""

from __future__ import annotations

import asyncio
import json

import typer

from app.connections.config import ConnectionsConfig
from app.connections.crypto import TokenCipher, generate_key
from app.connections.store import ConnectionStore, rotate
from app.db import create_engine, create_sessionmaker
from app.settings import get_settings

connections_cli = typer.Typer(help="Upstream connections: encryption keys, list.")


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
