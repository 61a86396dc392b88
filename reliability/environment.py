"""Where a run's PostgreSQL and Redis come from, and what the machine and versions are."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from reliability.infra import (
    PrivatePostgres,
    PrivateRedis,
    TcpProxy,
    drop_database,
    ensure_database,
    port_open,
)
from reliability.scenarios.db_down import CutProxy, Outage, StopPostgres

ROOT = Path(__file__).resolve().parents[1]
# A database of the run's own (per process), so runs side by side never share one.
SHARED_PG = f"postgresql+asyncpg://postgres@127.0.0.1:5432/sagebridge_reliability_run_{os.getpid()}"


@dataclass
class Servers:
    """The database the bridge uses (maybe through a proxy), the harness's direct URL to the
    same database, the private Redis, and how to take the database down."""

    bridge_database_url: str
    harness_database_url: str
    redis: PrivateRedis
    outage: Outage
    database_kind: str
    secrets: dict[str, str]


@asynccontextmanager
async def servers(
    workdir: Path,
    *,
    private_pg: bool,
    pg_port: int | None = None,
    redis_port: int | None = None,
    shared_pg_url: str = SHARED_PG,
) -> AsyncIterator[Servers]:
    """Private redis-server always; a private PostgreSQL cluster when asked and possible
    (stopped for real in scenario 4), else a database of our own on a shared server with a
    TCP proxy in front of it (cut in scenario 4)."""
    redis_password = "redis-pw-7d1e0c93b8a4"  # noqa: S105 - a throwaway server's password
    port = redis_port if redis_port and not port_open(redis_port) else None
    redis = PrivateRedis(workdir, port=port, password=redis_password)
    redis.start()
    pg: PrivatePostgres | None = None
    proxy: TcpProxy | None = None
    try:
        if private_pg and PrivatePostgres.available():
            port = pg_port if pg_port and not port_open(pg_port) else None
            pg = PrivatePostgres(port=port, password="pg-pw-4b9c2e7a1f30")  # noqa: S106
            pg.init()
            pg.start()
            url = pg.url("sagebridge")
            await ensure_database(url)
            yield Servers(
                url,
                url,
                redis,
                StopPostgres(pg),
                "private PostgreSQL cluster",
                {"DATABASE_PASSWORD": pg.password, "REDIS_PASSWORD": redis_password},
            )
        else:
            await ensure_database(shared_pg_url, fresh=True)
            target = make_url(shared_pg_url)
            proxy = TcpProxy(target.port or 5432)
            await proxy.start()
            bridge_url = target.set(port=proxy.port).render_as_string(hide_password=False)
            yield Servers(
                bridge_url,
                shared_pg_url,
                redis,
                CutProxy(proxy),
                "shared PostgreSQL through a TCP proxy",
                {"REDIS_PASSWORD": redis_password},
            )
    finally:
        if proxy is not None:
            await proxy.close()
            await drop_database(shared_pg_url)
        if pg is not None:
            pg.destroy()
        redis.stop()


async def versions(s: Servers) -> dict[str, Any]:
    parsed = make_url(s.harness_database_url)
    conn = await asyncpg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        database=parsed.database,
        timeout=5,
    )
    try:
        pg_version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    async with aioredis.Redis.from_url(s.redis.url(0)) as r:
        redis_version = (await r.info("server"))["redis_version"]
    packages: dict[str, str | None] = {}
    for name in (
        "fastapi",
        "starlette",
        "uvicorn",
        "arq",
        "redis",
        "sqlalchemy",
        "asyncpg",
        "httpx",
        "pydantic",
        "hypothesis",
        "schemathesis",
    ):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": platform.python_version(),
        "postgresql": pg_version,
        "redis": redis_version,
        "database": s.database_kind,
        "packages": packages,
        "commit": _git_commit(),
    }


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb: float | None = None
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages * size / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "os": f"{platform.system()} {platform.release()}",
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": memory_gb,
        "load_avg_at_start": os.getloadavg(),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip() or None
    return f"{commit}+local-changes" if commit and dirty.stdout.strip() else commit
