"""The bridge's API and worker (and the bare baseline app) as real processes, started exactly as
production starts them (`python -m app.cli api|worker`), with their start-up time and memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from sandbox.seed import (
    FIELD_INVOICE_LINK,
    FIELD_INVOICE_NUMBER,
    KOMMO_ACCOUNT_ID,
    KOMMO_SUBDOMAIN,
    KOMMO_TOKEN,
    PIPELINE_SALES,
    SAGE_BUSINESS_ID,
    SAGE_TOKEN,
    STATUS_RAISE_INVOICE,
)

ROOT = Path(__file__).resolve().parents[1]
WEBHOOK_SECRET = "bench-webhook-secret"  # noqa: S105 - a throwaway value for local runs
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.01


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Upstreams:
    kommo_url: str
    sage_api_url: str
    # Off for ingest, where nothing listens there: the API then makes no upstream call at all.
    check_mapping: bool = True


def bridge_env(
    *, database_url: str, redis_url: str, api_port: int, upstreams: Upstreams, data_dir: Path
) -> dict[str, str]:
    """The sandbox-matching configuration of tests/e2e, with production's timings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMMO_", "SAGE_"))}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        API_PORT=str(api_port),
        DATA_DIR=str(data_dir),
        LEDGER_MAPPINGS_PATH=str(ROOT / "config" / "ledger_mappings.yaml"),
        MAPPING_CHECK_ON_START=str(upstreams.check_mapping).lower(),
        KOMMO_BASE_URL=upstreams.kommo_url,
        KOMMO_ACCESS_TOKEN=KOMMO_TOKEN,
        KOMMO_ACCOUNT_ID=str(KOMMO_ACCOUNT_ID),
        KOMMO_SUBDOMAIN=KOMMO_SUBDOMAIN,
        KOMMO_WEBHOOK_SECRET=WEBHOOK_SECRET,
        KOMMO_TRIGGER_PIPELINE_ID=str(PIPELINE_SALES),
        KOMMO_TRIGGER_STATUS_ID=str(STATUS_RAISE_INVOICE),
        KOMMO_INVOICE_NUMBER_FIELD_ID=str(FIELD_INVOICE_NUMBER),
        KOMMO_INVOICE_LINK_FIELD_ID=str(FIELD_INVOICE_LINK),
        SAGE_BASE_URL=upstreams.sage_api_url,
        SAGE_ACCESS_TOKEN=SAGE_TOKEN,
        SAGE_BUSINESS_ID=SAGE_BUSINESS_ID,
        LOG_LEVEL="INFO",
    )
    return env


@dataclass
class Process:
    """A started child process; `startup_s` is from spawn to ready (healthz 200 / log line)."""

    name: str
    proc: asyncio.subprocess.Process
    log: Path
    startup_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self) -> float:
        """Resident memory now, from /proc (Linux), in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
        return 0.0

    def exited(self) -> bool:
        return self.proc.returncode is not None

    async def stop(self) -> None:
        if self.exited():
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def spawn(name: str, argv: Sequence[str], env: dict[str, str], log: Path) -> Process:
    with log.open("ab") as out:
        # The child keeps its own copy of the log descriptor; ours can close at once.
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=ROOT, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    return Process(name, proc, log)


async def start_http(
    name: str, argv: Sequence[str], env: dict[str, str], log: Path, port: int
) -> Process:
    """Spawn an HTTP server process and wait for GET /healthz to answer 200."""
    started = time.perf_counter()
    process = await spawn(name, argv, env, log)
    url = f"http://127.0.0.1:{port}/healthz"
    async with httpx.AsyncClient(timeout=1.0) as http:
        while not await _answers(http, url):
            _check_alive(process, started)
            await asyncio.sleep(POLL_S)
    process.startup_s = round(time.perf_counter() - started, 3)
    return process


async def start_worker(env: dict[str, str], log: Path) -> Process:
    """Spawn the worker and wait for its `worker.started` log line (it serves no HTTP)."""
    started = time.perf_counter()
    offset = await asyncio.to_thread(_size, log)
    process = await spawn("worker", [sys.executable, "-m", "app.cli", "worker"], env, log)
    while not await asyncio.to_thread(_logged_since, log, offset, b"worker.started"):
        _check_alive(process, started)
        await asyncio.sleep(POLL_S)
    process.startup_s = round(time.perf_counter() - started, 3)
    return process


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _logged_since(log: Path, offset: int, marker: bytes) -> bool:
    with log.open("rb") as f:
        f.seek(offset)
        return marker in f.read()


async def start_api(env: dict[str, str], log: Path, port: int) -> Process:
    return await start_http("api", [sys.executable, "-m", "app.cli", "api"], env, log, port)


async def start_bare(log: Path, port: int, *, workers: int = 1) -> Process:
    argv = [sys.executable, "-m", "bench.bare", "--port", str(port), "--workers", str(workers)]
    return await start_http("bare", argv, dict(os.environ), log, port)


async def _answers(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(url)).status_code == 200
    except httpx.TransportError:
        return False


def _check_alive(process: Process, started: float) -> None:
    if process.exited():
        tail = process.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{process.name} exited during start-up:\n{tail}")
    if time.perf_counter() - started > START_TIMEOUT_S:
        raise TimeoutError(f"{process.name} did not start within {START_TIMEOUT_S}s")


@contextlib.asynccontextmanager
async def stopping(*processes: Process) -> AsyncIterator[None]:
    """Stop every process on the way out, whatever happened."""
    try:
        yield
    finally:
        for process in processes:
            await process.stop()
