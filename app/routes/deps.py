"""FastAPI dependencies as Annotated aliases, so handlers read like a sentence."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import PayloadTooLarge, Unauthorized
from app.mapping_store import Mappings
from app.queue import Queue
from app.runtime import Database
from app.settings import Settings


# Plain `def` dependencies run in a thread pool: async ones avoid two hand-offs per request.
async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    db: Database = request.app.state.db
    async with db.sessionmaker() as session:
        yield session


async def get_queue(request: Request) -> Queue:
    queue: Queue = request.app.state.queue
    return queue


async def get_mappings(request: Request) -> Mappings:
    mappings: Mappings = request.app.state.mapping
    return mappings


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
QueueDep = Annotated[Queue, Depends(get_queue)]
MappingsDep = Annotated[Mappings, Depends(get_mappings)]

_bearer = HTTPBearer(auto_error=False)


async def require_ops_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected = settings.ops_api_token
    if expected is None:
        raise Unauthorized("ops endpoints are disabled: set OPS_API_TOKEN to use them")
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized(
            "missing or wrong ops token: send 'Authorization: Bearer <OPS_API_TOKEN>'"
        )


OpsAuth = Depends(require_ops_token)


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it grows past `limit` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLarge(f"request bodies are limited to {limit} bytes")
    return bytes(body)
