"""Footprint: start-up time (spawn → ready) and resident memory of the API and worker processes,
idle and under load, against the sandbox upstreams with their rate limits on.

"Under load" is webhooks for real deals (in Raise Invoice in the sandbox) posted straight to the
API at a fixed rate, while the worker invoices the backlog they create; the peak RSS of each
process is taken while that happens.

"Growth" is the API alone (no worker, no upstream) taking `growth_webhooks` webhooks for new
deals in chunks: its RSS after the first chunk (warm: pools, caches, allocator arenas) against
after the last. A leak of even a few hundred bytes per webhook shows as tens of MiB.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.infra import Infra
from bench.kommo import FIRST_DEAL_ID, add_deals, status_hook_bodies
from bench.loadgen import Target, run_open_loop
from bench.procs import (
    WEBHOOK_SECRET,
    Process,
    Upstreams,
    bridge_env,
    free_port,
    start_api,
    start_worker,
    stopping,
)
from sandbox.runner import RunningSandbox, run_sandbox
from sandbox.seed import STATUS_RAISE_INVOICE, demo_kommo_state

SAMPLE_EVERY_S = 0.2
NOWHERE = "http://127.0.0.1:9"  # the growth run's API calls no upstream
GROWTH_FIRST_DEAL_ID = FIRST_DEAL_ID + 10_000_000  # clear of the load's deals


@dataclass(frozen=True)
class FootprintConfig:
    startups: int = 3
    idle_s: float = 3.0
    load_rate: float = 100.0
    load_s: float = 15.0
    # Keep sampling while the worker works through the backlog the load left behind.
    after_s: float = 10.0
    growth_webhooks: int = 100_000
    growth_chunk: int = 10_000
    growth_rate: float = 500.0

    @classmethod
    def quick(cls) -> FootprintConfig:
        return cls(
            startups=1,
            idle_s=1.0,
            load_rate=50.0,
            load_s=3.0,
            after_s=2.0,
            growth_webhooks=4_000,
            growth_chunk=1_000,
        )


@dataclass(frozen=True)
class FootprintResult:
    api_startup_s: list[float]
    worker_startup_s: list[float]
    api_rss_idle_mb: float
    worker_rss_idle_mb: float
    api_rss_load_mb: float  # peak
    worker_rss_load_mb: float
    load_requests: int
    load_ok: int
    # The API's RSS after each chunk of the growth run (MiB), and webhooks answered 2xx in it.
    growth_rss_mb: list[float] = field(default_factory=list)
    growth_webhooks: int = 0
    growth_ok: int = 0

    @property
    def api_rss_growth_mb(self) -> float | None:
        """RSS after the last chunk minus after the first (warm-up) chunk."""
        if len(self.growth_rss_mb) < 2:
            return None
        return round(self.growth_rss_mb[-1] - self.growth_rss_mb[0], 1)

    @property
    def api_startup_median_s(self) -> float:
        return statistics.median(self.api_startup_s)

    @property
    def worker_startup_median_s(self) -> float:
        return statistics.median(self.worker_startup_s)


async def run_footprint(infra: Infra, workdir: Path, config: FootprintConfig) -> FootprintResult:
    await infra.reset()
    requests = round(config.load_rate * config.load_s)
    kommo_state = demo_kommo_state()
    add_deals(kommo_state, requests, new_customer_share=0.2, status_id=STATUS_RAISE_INVOICE)
    async with run_sandbox(kommo_state=kommo_state) as sandbox:
        port = free_port()
        env = bridge_env(
            database_url=infra.database_url,
            redis_url=infra.redis_url,
            api_port=port,
            upstreams=Upstreams(sandbox.kommo_url, sandbox.sage_api_url),
            data_dir=workdir / "footprint-data",
        )
        result = await _measure(env, workdir, port, sandbox, config)
    return await _growth(infra, workdir, config, result)


async def _growth(
    infra: Infra, workdir: Path, config: FootprintConfig, result: FootprintResult
) -> FootprintResult:
    port = free_port()
    env = bridge_env(
        database_url=infra.database_url,
        redis_url=infra.redis_url,
        api_port=port,
        upstreams=Upstreams(NOWHERE, f"{NOWHERE}/v3.1", check_mapping=False),
        data_dir=workdir / "growth-data",
    )
    api = await start_api(env, workdir / "growth-api.log", port)
    target = Target("127.0.0.1", port, f"/webhooks/kommo/{WEBHOOK_SECRET}")
    rss, sent, ok = [], 0, 0
    async with stopping(api):
        first = GROWTH_FIRST_DEAL_ID
        while sent < config.growth_webhooks:
            count = min(config.growth_chunk, config.growth_webhooks - sent)
            bodies = status_hook_bodies(first + sent, count, trigger_share=0.9)
            run = await run_open_loop(target, bodies, config.growth_rate)
            sent, ok = sent + run.sent, ok + run.ok
            await asyncio.sleep(0.5)  # let the last answers and any group commit finish
            rss.append(api.rss_mb())
            print(f"  footprint growth {sent:7d} webhooks  API RSS {rss[-1]:.1f} MiB", flush=True)
    return replace(result, growth_rss_mb=rss, growth_webhooks=sent, growth_ok=ok)


async def _measure(
    env: dict[str, str], workdir: Path, port: int, sandbox: RunningSandbox, config: FootprintConfig
) -> FootprintResult:
    api, worker, api_times, worker_times = await _start_repeatedly(env, workdir, port, config)
    async with stopping(api, worker):
        await asyncio.sleep(config.idle_s)
        idle = (api.rss_mb(), worker.rss_mb())
        count = round(config.load_rate * config.load_s)
        bodies = status_hook_bodies(FIRST_DEAL_ID, count, trigger_share=1.0)
        target = Target("127.0.0.1", port, f"/webhooks/kommo/{WEBHOOK_SECRET}")
        async with _peak_rss(api, worker) as peaks:
            load = await run_open_loop(target, bodies, config.load_rate)
            await asyncio.sleep(config.after_s)
    return FootprintResult(
        api_startup_s=api_times,
        worker_startup_s=worker_times,
        api_rss_idle_mb=idle[0],
        worker_rss_idle_mb=idle[1],
        api_rss_load_mb=peaks[0],
        worker_rss_load_mb=peaks[1],
        load_requests=load.sent,
        load_ok=load.ok,
    )


async def _start_repeatedly(
    env: dict[str, str], workdir: Path, port: int, config: FootprintConfig
) -> tuple[Process, Process, list[float], list[float]]:
    """Start both processes `startups` times, timing each; the last pair is left running."""
    api_times, worker_times = [], []
    for attempt in range(max(1, config.startups)):
        api = await start_api(env, workdir / "footprint-api.log", port)
        worker = await start_worker(env, workdir / "footprint-worker.log")
        api_times.append(api.startup_s)
        worker_times.append(worker.startup_s)
        if attempt < max(1, config.startups) - 1:
            await api.stop()
            await worker.stop()
    return api, worker, api_times, worker_times


@contextlib.asynccontextmanager
async def _peak_rss(*processes: Process) -> AsyncIterator[list[float]]:
    """Sample each process's RSS until the block ends; the list holds each one's peak."""
    peaks = [p.rss_mb() for p in processes]

    async def sample() -> None:
        while True:
            for index, process in enumerate(processes):
                peaks[index] = max(peaks[index], process.rss_mb())
            await asyncio.sleep(SAMPLE_EVERY_S)

    sampler = asyncio.create_task(sample())
    try:
        yield peaks
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
