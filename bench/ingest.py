"""Ingest: `POST /webhooks/kommo/{secret}` (parse, authenticate, commit the inbox row, enqueue,
answer) at fixed rates and at the highest rate it sustains, beside a bare FastAPI app that only
answers 200, both served by uvicorn as real processes and driven open loop from this one.

No worker runs: what is measured is the edge Kommo talks to, whose answer must come well within
Kommo's 2 s. The jobs it enqueues simply wait in Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import text

from app.db import create_engine
from bench.infra import Infra
from bench.kommo import FIRST_DEAL_ID, status_hook_bodies
from bench.loadgen import RunResult, Target, run_open_loop
from bench.procs import (
    WEBHOOK_SECRET,
    Process,
    Upstreams,
    bridge_env,
    free_port,
    start_api,
    start_bare,
    stopping,
)
from bench.sysinfo import ProcessMatch, cpu_used_since, matching_cpu_s, tree_cpu_s

# "Sustained": every request answered 2xx, ≥ 95 % of the offered rate achieved, and p99 under
# half a second, i.e. no queue building up inside the server (far inside Kommo's 2 s).
SUSTAINED_ACHIEVED_SHARE = 0.95
SUSTAINED_P99_MS = 500.0
# Nothing listens on the discard port; ingest never calls an upstream.
NOWHERE = "http://127.0.0.1:9"
SETTLE_TIMEOUT_S = 30.0
SETTLED_ANSWER_S = 0.05


@dataclass(frozen=True)
class IngestConfig:
    rates: tuple[float, ...] = (100, 250, 500, 1000)
    step_s: float = 10.0
    search_step_s: float = 6.0
    search_steps: int = 6
    max_rate: float = 6000.0
    # Most hooks are new deals entering Raise Invoice; the rest other stage moves (skipped).
    trigger_share: float = 0.9
    keep_alive: bool = True
    # Then both again with this many processes behind the port (API_WORKERS; 1 = skip), each
    # searched for its maximum from the one-process maximum.
    api_workers: int = 2

    @classmethod
    def quick(cls) -> IngestConfig:
        return cls(step_s=2.0, search_step_s=2.0, search_steps=2)


@dataclass(frozen=True)
class Step:
    target: str  # "bridge" or "bare"
    phase: str  # "fixed" (the ladder) or "search" (looking for the maximum)
    duration_s: float
    result: RunResult
    sustained: bool
    # CPU per request sent: the server process, and the PostgreSQL and Redis processes it
    # drives (the generator is not counted), so its cost can be told from 2-core contention.
    server_cpu_ms: float
    backends_cpu_ms: float


@dataclass
class IngestResult:
    config: IngestConfig
    steps: list[Step] = field(default_factory=list)
    max_sustained_rate: dict[str, float] = field(default_factory=dict)
    events_stored: int = 0
    events_answered_2xx: int = 0

    def fixed(self, target: str, rate: float) -> Step | None:
        return next(
            (
                s
                for s in self.steps
                if (s.target, s.phase, s.result.offered_rate) == (target, "fixed", rate)
            ),
            None,
        )

    @property
    def max_rate_ratio(self) -> float | None:
        return self.ratio("bridge", "bare")

    @property
    def max_rate_ratio_workers(self) -> float | None:
        n = self.config.api_workers
        return self.ratio(f"bridge×{n}", f"bare×{n}")

    def ratio(self, bridge_name: str, bare_name: str) -> float | None:
        bare = self.max_sustained_rate.get(bare_name)
        bridge = self.max_sustained_rate.get(bridge_name)
        return round(bridge / bare, 3) if bare and bridge is not None else None

    def cpu_ms_at(self, rate: float) -> float | None:
        """The bridge's API CPU per webhook at a fixed ladder rate."""
        step = self.fixed("bridge", rate)
        return step.server_cpu_ms if step else None


def sustained(result: RunResult) -> bool:
    return (
        result.error_count == 0
        and result.achieved_rate >= SUSTAINED_ACHIEVED_SHARE * result.offered_rate
        and result.latency.p99_ms <= SUSTAINED_P99_MS
    )


class _Bodies:
    """Unique deal ids across the whole run, so every trigger is a new inbox row."""

    def __init__(self, trigger_share: float) -> None:
        self._next = FIRST_DEAL_ID
        self._share = trigger_share

    def take(self, count: int) -> list[bytes]:
        bodies = status_hook_bodies(self._next, count, trigger_share=self._share)
        self._next += count
        return bodies


RunAt = Callable[[str, float, float, str], Awaitable[Step]]


@dataclass(frozen=True)
class _Server:
    target: Target
    process: Process


async def run_ingest(infra: Infra, workdir: Path, config: IngestConfig) -> IngestResult:
    await infra.reset()
    result = IngestResult(config)
    bodies = _Bodies(config.trigger_share)
    servers = await _start_pair(infra, workdir, workers=1)
    async with stopping(*(s.process for s in servers.values())):
        await _drive(servers, config, result, infra.server_processes, bodies)
    if config.api_workers > 1:
        n = config.api_workers
        servers = await _start_pair(infra, workdir, workers=n)
        async with stopping(*(s.process for s in servers.values())):
            await _drive_workers(servers, config, result, infra.server_processes, bodies)
    result.events_stored = await _stored_events(infra.database_url)
    return result


async def _start_pair(infra: Infra, workdir: Path, *, workers: int) -> dict[str, _Server]:
    """The bridge's API and the bare app, each with `workers` processes behind its port."""
    api_port, bare_port = free_port(), free_port()
    env = bridge_env(
        database_url=infra.database_url,
        redis_url=infra.redis_url,
        api_port=api_port,
        upstreams=Upstreams(NOWHERE, f"{NOWHERE}/v3.1", check_mapping=False),
        data_dir=workdir / "ingest-data",
    )
    env["API_WORKERS"] = str(workers)
    suffix = "" if workers == 1 else f"-x{workers}"
    api = await start_api(env, workdir / f"ingest-api{suffix}.log", api_port)
    bare = await start_bare(workdir / f"ingest-bare{suffix}.log", bare_port, workers=workers)
    path = f"/webhooks/kommo/{WEBHOOK_SECRET}"
    name = "" if workers == 1 else f"×{workers}"
    return {
        f"bridge{name}": _Server(Target("127.0.0.1", api_port, path), api),
        f"bare{name}": _Server(Target("127.0.0.1", bare_port, path), bare),
    }


def _runner(
    servers: dict[str, _Server],
    config: IngestConfig,
    result: IngestResult,
    backend_procs: tuple[ProcessMatch, ...],
    bodies: _Bodies,
) -> RunAt:
    async def run_at(name: str, rate: float, seconds: float, phase: str) -> Step:
        server = servers[name]
        batch = bodies.take(max(1, round(rate * seconds)))
        await _settle(server.target)
        cpu, backends = tree_cpu_s(server.process.pid), matching_cpu_s(backend_procs)
        run = await run_open_loop(server.target, batch, rate, keep_alive=config.keep_alive)
        server_ms = _per_request_ms(tree_cpu_s(server.process.pid) - cpu, run.sent)
        backends_ms = _per_request_ms(cpu_used_since(backends, backend_procs), run.sent)
        step = Step(name, phase, seconds, run, sustained(run), server_ms, backends_ms)
        result.steps.append(step)
        result.events_answered_2xx += run.ok if name.startswith("bridge") else 0
        _print_step(step)
        return step

    return run_at


async def _warm_up(servers: dict[str, _Server], result: IngestResult, bodies: _Bodies) -> None:
    """Connections, database pools, caches: warm before anything is measured."""
    for name, server in servers.items():
        warm = await run_open_loop(server.target, bodies.take(100), 100.0)
        result.events_answered_2xx += warm.ok if name.startswith("bridge") else 0


async def _drive(
    servers: dict[str, _Server],
    config: IngestConfig,
    result: IngestResult,
    backend_procs: tuple[ProcessMatch, ...],
    bodies: _Bodies,
) -> None:
    run_at = _runner(servers, config, result, backend_procs, bodies)
    await _warm_up(servers, result, bodies)
    for rate in config.rates:
        for name in ("bare", "bridge"):
            await run_at(name, rate, config.step_s, "fixed")
    for name in ("bare", "bridge"):
        result.max_sustained_rate[name] = await _search(name, run_at, result, config)


async def _drive_workers(
    servers: dict[str, _Server],
    config: IngestConfig,
    result: IngestResult,
    backend_procs: tuple[ProcessMatch, ...],
    bodies: _Bodies,
) -> None:
    """Only the maximum, from a first step at the one-process maximum of the same target."""
    run_at = _runner(servers, config, result, backend_procs, bodies)
    await _warm_up(servers, result, bodies)
    for name in servers:
        start = result.max_sustained_rate.get(name.split("×")[0]) or config.rates[0]
        await run_at(name, start, config.search_step_s, "search")
        result.max_sustained_rate[name] = await _search(name, run_at, result, config)


async def _search(name: str, run_at: RunAt, result: IngestResult, config: IngestConfig) -> float:
    """Double past the last sustained ladder rate until a rate fails, then bisect."""
    ladder = [s for s in result.steps if s.target == name]  # the ladder, or a first step
    low = max((s.result.offered_rate for s in ladder if s.sustained), default=0.0)
    high = min(
        (s.result.offered_rate for s in ladder if not s.sustained and s.result.offered_rate > low),
        default=None,
    )
    for _ in range(config.search_steps):
        rate = min(config.max_rate, low * 2) if high is None else (low + high) / 2
        if rate <= low or (high is not None and high - low <= 0.1 * high):
            break
        rate = float(round(rate))
        step = await run_at(name, rate, config.search_step_s, "search")
        low, high = (rate, high) if step.sustained else (low, rate)
    return low


async def _settle(target: Target) -> None:
    """Wait until a server that was overloaded has worked through its backlog. /readyz takes a
    database connection from the pool, so it waits behind requests still queued for one
    (a client that gave up does not cancel its request inside the server)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    url = f"http://{target.host}:{target.port}/readyz"
    async with httpx.AsyncClient(timeout=SETTLE_TIMEOUT_S) as http:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await http.get(url)
            if time.perf_counter() - started < SETTLED_ANSWER_S:
                return
            await asyncio.sleep(0.2)


async def _stored_events(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM inbox_events"))
    finally:
        await engine.dispose()
    return int(count or 0)


def _per_request_ms(cpu_s: float, requests: int) -> float:
    return round(cpu_s * 1000 / requests, 3) if requests else 0.0


def _print_step(step: Step) -> None:
    r = step.result
    print(
        f"  ingest {step.target:8} {step.phase:6} {r.offered_rate:5.0f}/s"
        f" → {r.achieved_rate:6.1f}/s"
        f"  p50 {r.latency.p50_ms:7.2f}  p99 {r.latency.p99_ms:7.2f} ms  errors {r.error_count}"
        f"  cpu/req {step.server_cpu_ms:.2f} ms + db/redis {step.backends_cpu_ms:.2f}"
        f"  {'sustained' if step.sustained else 'NOT sustained'}",
        flush=True,
    )
