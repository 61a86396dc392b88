"""A running system under test: the sandbox upstreams (a process), the bridge's API and worker
processes, and the harness's own view of the database — all on 127.0.0.1.

The bridge is started exactly as in production (`python -m app.cli api|worker`) with its
configuration in environment variables; `Bridge` restarts, signals and supervises those
processes by pid and keeps each one's log for the scans.
"""

# ruff: noqa: S105, S603, S608, ASYNC109, ASYNC220, ASYNC240 - a harness: known test secrets, its own processes and tables

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from reliability.infra import free_port, stop_process
from sandbox.seed import (
    FIELD_INVOICE_LINK,
    FIELD_INVOICE_NUMBER,
    KOMMO_ACCOUNT_ID,
    KOMMO_SUBDOMAIN,
    PIPELINE_SALES,
    SAGE_BUSINESS_ID,
    STATUS_RAISE_INVOICE,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Secrets:
    """Every credential the bridge is given; scenario 8 greps for each of them."""

    kommo_token: str = "rk-kommo-3f9a1c7e5b2d4f60a8c1e2b3d4f5a6b7"
    sage_token: str = "rk-sage-9b8a7c6d5e4f30211f2e3d4c5b6a7988"
    webhook_secret: str = "rk-hook-c0ffee1234567890abcdef0f1e2d3c4b"
    ops_token: str = "rk-ops-5a5a5a5a1b1b1b1b2c2c2c2c3d3d3d3d"
    # Standard Webhooks secret: "whsec_" + base64 of the key.
    callback_secret: str = "whsec_cmVsaWFiaWxpdHktY2FsbGJhY2stc2VjcmV0LTAwMDE="

    def named(self) -> dict[str, str]:
        return {
            "KOMMO_ACCESS_TOKEN": self.kommo_token,
            "SAGE_ACCESS_TOKEN": self.sage_token,
            "KOMMO_WEBHOOK_SECRET": self.webhook_secret,
            "OPS_API_TOKEN": self.ops_token,
            "SAGE_CALLBACK_SECRETS": self.callback_secret,
        }


class Sandbox:
    """`python -m reliability.sandbox_server`: Kommo + Sage simulators and the harness app."""

    def __init__(self, workdir: Path, secrets: Secrets) -> None:
        self.workdir = workdir
        self.secrets = secrets
        self.proc: subprocess.Popen[bytes] | None = None
        self.sage_url = self.kommo_url = self.harness_url = ""
        # uvicorn closes a connection idle for 5 s; reusing one at that moment is a ReadError
        # (seen in CI after the bridge's restart for scenario 6), so never keep one that long.
        self.http = httpx.AsyncClient(timeout=60, limits=httpx.Limits(keepalive_expiry=1.0))

    async def start(self) -> None:
        args = [sys.executable, "-m", "reliability.sandbox_server"]
        args += ["--kommo-token", self.secrets.kommo_token, "--sage-token", self.secrets.sage_token]
        stderr = (self.workdir / "sandbox.log").open("ab")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr)
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout=60)
        if not line:
            raise RuntimeError(f"sandbox did not start; see {self.workdir / 'sandbox.log'}")
        urls = json.loads(line)
        self.sage_url, self.kommo_url = urls["sage_url"], urls["kommo_url"]
        self.harness_url = urls["harness_url"]

    async def stop(self) -> None:
        await asyncio.to_thread(stop_process, self.proc)
        await self.http.aclose()

    @property
    def sage_api_url(self) -> str:
        return f"{self.sage_url}/v3.1"

    async def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, url, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    async def add_leads(self, first_id: int, count: int, **options: Any) -> None:
        await self._call(
            "POST",
            f"{self.harness_url}/leads",
            json={"first_id": first_id, "count": count, **options},
        )

    async def stage(
        self, lead_ids: list[int], status_id: int = STATUS_RAISE_INVOICE, *, webhook: bool = False
    ) -> str | None:
        """Move deals; returns the form body Kommo would send (or None if Kommo sent it)."""
        body = {"lead_ids": lead_ids, "status_id": status_id, "webhook": webhook}
        answer = await self._call("POST", f"{self.harness_url}/stage", json=body)
        return answer["body"]  # type: ignore[no-any-return]

    async def subscribe(self, destination: str) -> None:
        await self._call("POST", f"{self.harness_url}/webhook", json={"destination": destination})

    async def summary(self, first_id: int, count: int) -> dict[str, Any]:
        params = {"first_id": first_id, "count": count}
        return await self._call("GET", f"{self.harness_url}/summary", params=params)  # type: ignore[no-any-return]

    async def dump(self) -> dict[str, Any]:
        return await self._call("GET", f"{self.harness_url}/dump")  # type: ignore[no-any-return]

    async def arm_sage_fault(self, **spec: Any) -> None:
        """The simulator's own documented control route: POST /sandbox/faults."""
        await self._call("POST", f"{self.sage_url}/sandbox/faults", json=spec)

    async def clear_faults(self) -> None:
        for base in (self.sage_url, self.kommo_url):
            await self._call("DELETE", f"{base}/sandbox/faults")

    async def revoke_sage_grants(self) -> int:
        answer = await self._call("POST", f"{self.harness_url}/sage/revoke_refresh_tokens")
        return int(answer["revoked"])

    async def sage_control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return await self._call("POST", f"{self.sage_url}/sandbox/{path}", json=body or {})

    async def sage_requests(self, method: str, path_prefix: str) -> list[dict[str, Any]]:
        params = {"method": method, "path_prefix": path_prefix}
        answer = await self._call("GET", f"{self.sage_url}/sandbox/requests", params=params)
        return answer["requests"]  # type: ignore[no-any-return]


@dataclass
class BridgeProcess:
    role: str
    proc: subprocess.Popen[bytes]
    started_at: float
    log: Path


@dataclass
class Bridge:
    """The bridge's API and workers as real processes, configured through the environment."""

    workdir: Path
    sandbox: Sandbox
    secrets: Secrets
    database_url: str
    redis_url: str
    overrides: dict[str, str | None] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    processes: dict[str, BridgeProcess] = field(default_factory=dict)
    # Exits nobody asked for (a crash), by role: reported, and the role is restarted as a
    # supervisor (systemd, Kubernetes) would.
    unexpected_exits: list[tuple[str, int | None, float]] = field(default_factory=list)
    starts: dict[str, int] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.api_url}/webhooks/kommo/{self.secrets.webhook_secret}"

    def env(self) -> dict[str, str]:
        keep = ("KOMMO_", "SAGE_", "DATABASE_URL", "REDIS_URL", "OPS_", "RETRY_", "JOB_", "LOG_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(keep)}
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            API_HOST="127.0.0.1",
            API_PORT=str(self.api_port),
            DATA_DIR=str(self.workdir / "data"),
            KOMMO_BASE_URL=self.sandbox.kommo_url,
            KOMMO_ACCESS_TOKEN=self.secrets.kommo_token,
            KOMMO_ACCOUNT_ID=str(KOMMO_ACCOUNT_ID),
            KOMMO_SUBDOMAIN=KOMMO_SUBDOMAIN,
            KOMMO_WEBHOOK_SECRET=self.secrets.webhook_secret,
            KOMMO_TRIGGER_PIPELINE_ID=str(PIPELINE_SALES),
            KOMMO_TRIGGER_STATUS_ID=str(STATUS_RAISE_INVOICE),
            KOMMO_INVOICE_NUMBER_FIELD_ID=str(FIELD_INVOICE_NUMBER),
            KOMMO_INVOICE_LINK_FIELD_ID=str(FIELD_INVOICE_LINK),
            SAGE_BASE_URL=self.sandbox.sage_api_url,
            SAGE_ACCESS_TOKEN=self.secrets.sage_token,
            SAGE_BUSINESS_ID=SAGE_BUSINESS_ID,
            SAGE_CALLBACK_SECRETS=json.dumps([self.secrets.callback_secret]),
            OPS_API_TOKEN=self.secrets.ops_token,
            LEDGER_MAPPINGS_PATH=str(ROOT / "config" / "ledger_mappings.yaml"),
            # The sandbox limiters are off and so are ours: the scenarios prove delivery, not
            # pacing (tests/clients/test_ratelimit.py proves the shared limits).
            KOMMO_RATE_LIMIT="10000/second",
            SAGE_RATE_LIMIT="1000000/minute",
            LOG_JSON="true",
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        urls = {"sage_url": self.sandbox.sage_url, "kommo_url": self.sandbox.kommo_url}
        for key, value in self.overrides.items():
            if value is None:
                env.pop(key, None)  # e.g. no static token: the bridge uses its OAuth grant
            else:
                env[key] = value.format(**urls) if "{" in value and "[" not in value else value
        return env

    def _spawn(self, role: str, name: str) -> BridgeProcess:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.starts[name] = self.starts.get(name, 0) + 1
        log = logs / f"{name}.log"
        out = log.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", role],
            cwd=ROOT,
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        handle = BridgeProcess(role, proc, time.monotonic(), log)
        self.processes[name] = handle
        return handle

    async def start(self, *, workers: int = 1) -> None:
        self._spawn("api", "api")
        for n in range(workers):
            self._spawn("worker", f"worker-{n}")
        await self.wait_healthy()

    async def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                self._check_alive()
                try:
                    if (await http.get(f"{self.api_url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError(f"the bridge API did not come up; see {self.workdir / 'logs'}")

    def _check_alive(self) -> None:
        for name, handle in self.processes.items():
            code = handle.proc.poll()
            if code is not None:
                tail = handle.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"bridge {name} exited with {code} during start-up:\n{tail}")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        handle = self.processes[name]
        if handle.proc.poll() is None:
            handle.proc.send_signal(sig)
            handle.proc.wait(timeout=30)

    def kill_and_restart(self, name: str) -> BridgeProcess:
        """SIGKILL (no clean-up at all), then start the same role again at once."""
        self.kill(name, signal.SIGKILL)
        return self._spawn(self.processes[name].role, name)

    def restart(self, name: str) -> BridgeProcess:
        role = self.processes[name].role
        self.kill(name, signal.SIGTERM)
        return self._spawn(role, name)

    def supervise(self) -> list[str]:
        """Restart any process that exited on its own; returns their names."""
        restarted = []
        for name, handle in list(self.processes.items()):
            code = handle.proc.poll()
            if code is not None:
                self.unexpected_exits.append((name, code, time.monotonic()))
                self._spawn(handle.role, name)
                restarted.append(name)
        return restarted

    async def reconfigure(self, overrides: dict[str, str | None], *, workers: int = 1) -> None:
        """Restart every process with new settings (a deploy with a changed environment)."""
        await self.stop()
        self.overrides = dict(overrides)
        self.processes.clear()
        await self.start(workers=workers)

    async def stop(self) -> None:
        for handle in self.processes.values():
            await asyncio.to_thread(stop_process, handle.proc, timeout=15)

    def log_files(self) -> list[Path]:
        return sorted((self.workdir / "logs").glob("*.log"))

    def log_events(self, name_prefix: str, event: str) -> list[dict[str, Any]]:
        """Parsed JSON log lines with this event name, from the processes named `name_prefix*`."""
        found = []
        for path in self.log_files():
            if not path.name.startswith(name_prefix):
                continue
            for line in path.read_text(errors="replace").splitlines():
                if f'"{event}"' not in line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("event") == event:
                    found.append(record)
        return found


class Database:
    """The harness's direct view of the bridge's tables (never through the cut-able proxy)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(
            url, pool_size=2, max_overflow=2, pool_pre_ping=True
        )

    async def close(self) -> None:
        await self.engine.dispose()

    async def reset(self) -> None:
        async with self.engine.begin() as conn:
            tables = (
                await conn.execute(
                    text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                        "AND tablename <> 'alembic_version'"
                    )
                )
            ).scalars()
            names = ", ".join(f'"{t}"' for t in tables)
            if names:
                await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))

    async def events(self, deal_ids: list[int]) -> dict[str, dict[str, Any]]:
        """The trigger event of each deal (at most one per deal by design)."""
        query = text(
            "SELECT id, deal_id, state, attempts, lease_until, next_attempt_at, updated_at, "
            "received_at, task_state, task_id, last_error FROM inbox_events "
            "WHERE source = 'kommo' AND action = 'leads.status' AND status_id = :status "
            "AND deal_id = ANY(:deals)"
        )
        params = {"status": str(STATUS_RAISE_INVOICE), "deals": [str(d) for d in deal_ids]}
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query, params)).mappings().all()
        out: dict[str, dict[str, Any]] = {}
        for row in rows:
            if row["deal_id"] in out:
                out[row["deal_id"]]["duplicates"] = out[row["deal_id"]].get("duplicates", 1) + 1
            else:
                out[row["deal_id"]] = dict(row)
        return out

    async def count(self, sql: str, **params: Any) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(text(sql), params)).scalar_one())

    async def dump_text(self) -> str:
        """Every row of every table as JSON text (for the secrets scan)."""
        chunks: list[str] = []
        async with self.engine.connect() as conn:
            tables = (
                await conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
            ).scalars()
            for table in list(tables):
                rows = await conn.execute(text(f'SELECT row_to_json(t)::text FROM "{table}" t'))
                chunks.extend(f"{table}: {r}" for r in rows.scalars())
        return "\n".join(chunks)


def migrate(database_url: str, workdir: Path) -> None:
    """`sagebridge migrate`, as a deploy runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMMO_", "SAGE_"))}
    env["DATABASE_URL"] = database_url
    env["DATA_DIR"] = str(workdir / "data")
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=180,
    )
    if out.returncode != 0:
        raise RuntimeError(f"migrate failed: {out.stdout.decode()[-2000:]}{out.stderr.decode()}")


@dataclass
class Stack:
    workdir: Path
    secrets: Secrets
    sandbox: Sandbox
    bridge: Bridge
    db: Database
    redis: Any  # reliability.infra.PrivateRedis
    database_control: Any = None  # PrivatePostgres or TcpProxy: what "database down" stops
    info: dict[str, Any] = field(default_factory=dict)


@asynccontextmanager
async def open_stack(
    workdir: Path,
    *,
    bridge_database_url: str,
    harness_database_url: str,
    redis: Any,
    database_control: Any = None,
    secrets: Secrets | None = None,
    overrides: dict[str, str | None] | None = None,
    workers: int = 1,
) -> AsyncIterator[Stack]:
    secrets = secrets or Secrets()
    workdir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(migrate, harness_database_url, workdir)
    db = Database(harness_database_url)
    await db.reset()
    sandbox = Sandbox(workdir, secrets)
    await sandbox.start()
    bridge = Bridge(
        workdir, sandbox, secrets, bridge_database_url, redis.url(0), dict(overrides or {})
    )
    try:
        await bridge.start(workers=workers)
        yield Stack(workdir, secrets, sandbox, bridge, db, redis, database_control)
    finally:
        await bridge.stop()
        await sandbox.stop()
        await db.close()
