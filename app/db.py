"""Engine and session factory. SQLite (embedded default) and PostgreSQL (production) alike."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry


def create_engine(url: str, *, pool_size: int = 10, pool_timeout: float = 1.0) -> AsyncEngine:
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # A short connect timeout: a webhook must hear "503, try again" well inside Kommo's 2 s.
    # No pre-ping: it costs a round trip per checkout on the webhook's hot path (bench/); a
    # connection that died meanwhile fails that one request with 503 and is discarded.
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        connect_args=_pg_args(url),
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _pg_args(url: str) -> dict[str, Any]:
    return {"timeout": 1.5} if "asyncpg" in url else {}


def _ensure_sqlite_dir(url: str) -> None:
    """The data dir 0700 and the database file 0600 (SQLite gives its -wal and -shm files the
    database file's mode): they hold customer data and encrypted tokens."""
    path = url.split("///", 1)[-1].split("?", 1)[0]
    if not path or path == ":memory:":
        return
    Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # WAL lets the API read while the worker writes; the busy timeout queues writers instead of
    # failing them, which is what two processes sharing one file need.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def dialect_name(session: AsyncSession) -> str:
    """'postgresql' or 'sqlite': the upsert statements differ between them."""
    return session.get_bind().dialect.name


def as_utc(value: datetime | None) -> datetime | None:
    """Aggregates bypass the column type, so SQLite hands back a naive UTC datetime."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
