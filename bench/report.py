"""The results table printed at the end of a run, where each target stands, and the JSON file."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.e2e import ScenarioResult
from bench.footprint import FootprintResult
from bench.ingest import IngestResult
from bench.sysinfo import Environment

TARGET_INGEST_RATE = 500.0
TARGET_INGEST_P99_MS = 25.0
TARGET_CEILING_SHARE = 0.95
TARGET_KOMMO_CALLS = 4.0
TARGET_SAGE_CALLS = 2.0
TARGET_TRIGGER_P99_MS = 1000.0


@dataclass
class Results:
    mode: str
    environment: Environment
    duration_s: float = 0.0
    ingest: IngestResult | None = None
    e2e: list[ScenarioResult] | None = None
    footprint: FootprintResult | None = None


@dataclass(frozen=True)
class TargetCheck:
    target: str
    measured: str
    met: bool


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=False)) for line in lines
    )


def render(results: Results) -> str:
    env = results.environment
    parts = [
        f"sagebridge benchmarks ({results.mode}), {env.date}, commit {env.commit}",
        f"{env.cores} × {env.cpu_model}, {env.memory_gib} GiB, Python {env.python}, "
        f"{env.database}, {env.redis}, load average at start {env.load_average_at_start}",
    ]
    if results.ingest:
        parts += [
            "",
            "Ingest (open loop, latency from each request's due time)",
            _ingest_table(results.ingest),
        ]
    if results.e2e:
        parts += ["", "End to end (sandbox upstreams, rate limits on)", _e2e_table(results.e2e)]
    if results.footprint:
        parts += ["", "Footprint", _footprint_table(results.footprint)]
    checks = targets(results)
    if checks:
        rows = [[c.target, c.measured, "met" if c.met else "NOT met"] for c in checks]
        parts += ["", "Targets", table(["target", "measured", ""], rows)]
    return "\n".join(parts)


def _ingest_table(result: IngestResult) -> str:
    rows = []
    for rate in result.config.rates:
        bridge, bare = result.fixed("bridge", rate), result.fixed("bare", rate)
        if bridge and bare:
            rows.append(
                _ingest_row(f"{rate:.0f}/s", bridge.result, bare.result, bridge.server_cpu_ms)
            )
    for name in ("bridge", "bare"):
        rows.append(
            [
                f"max sustained ({name})",
                f"{result.max_sustained_rate.get(name, 0):.0f}/s",
                *[""] * 6,
            ]
        )
    ratio = result.max_rate_ratio
    rows.append(["bridge/bare max rate", f"{ratio:.3f}" if ratio is not None else "-", *[""] * 6])
    header = [
        "offered",
        "achieved",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "bare p50/p99 ms",
        "API CPU/req",
    ]
    return table(header, rows)


def _ingest_row(label: str, r: Any, bare: Any, cpu_ms: float) -> list[str]:
    return [
        label,
        f"{r.achieved_rate:.0f}/s",
        _num(r.latency.p50_ms),
        _num(r.latency.p95_ms),
        _num(r.latency.p99_ms),
        str(r.error_count),
        f"{_num(bare.latency.p50_ms)} / {_num(bare.latency.p99_ms)}",
        f"{cpu_ms:.2f} ms",
    ]


def _e2e_table(results: Sequence[ScenarioResult]) -> str:
    header = [
        "scenario",
        "invoiced",
        "invoices/min",
        "ceiling/min",
        "share",
        "429s K+S",
        "calls/inv K",
        "calls/inv S",
        "p50 ms",
        "p99 ms",
    ]
    rows = [
        [
            f"{r.scenario.name} ({r.scenario.deals}"
            + (f" at {r.scenario.rate_per_s}/s" if r.scenario.rate_per_s else " at once")
            + (
                f", +{r.scenario.upstream_latency_s * 1000:.0f} ms"
                if r.scenario.upstream_latency_s
                else ""
            )
            + ")",
            f"{r.invoiced}/{r.scenario.deals}",
            f"{r.invoices_per_min:.1f}",
            f"{r.ceiling_per_min:.1f} ({r.binding_limit})",
            f"{r.share_of_ceiling:.0%}",
            f"{r.kommo.rate_limited}+{r.sage.rate_limited}",
            f"{r.kommo_calls_per_invoice:.2f}",
            f"{r.sage_calls_per_invoice:.2f}",
            _num(r.latency.p50_ms, 0),
            _num(r.latency.p99_ms, 0),
        ]
        for r in results
    ]
    return table(header, rows)


def _footprint_table(f: FootprintResult) -> str:
    rows = [
        [
            "api",
            f"{f.api_startup_median_s:.2f} s",
            f"{f.api_rss_idle_mb:.0f} MiB",
            f"{f.api_rss_load_mb:.0f} MiB",
        ],
        [
            "worker",
            f"{f.worker_startup_median_s:.2f} s",
            f"{f.worker_rss_idle_mb:.0f} MiB",
            f"{f.worker_rss_load_mb:.0f} MiB",
        ],
    ]
    return table(["process", "start-up (median)", "RSS idle", "RSS under load (peak)"], rows)


def targets(results: Results) -> list[TargetCheck]:
    checks: list[TargetCheck] = []
    if results.ingest and (step := results.ingest.fixed("bridge", TARGET_INGEST_RATE)):
        p99, errors = step.result.latency.p99_ms, step.result.error_count
        checks.append(
            TargetCheck(
                f"ingest p99 ≤ {TARGET_INGEST_P99_MS:.0f} ms at {TARGET_INGEST_RATE:.0f} req/s",
                f"{_num(p99)} ms, {errors} errors",
                p99 <= TARGET_INGEST_P99_MS and errors == 0,
            )
        )
    burst = _scenario(results, "burst")
    if burst:
        checks += _burst_checks(burst)
    steady = _scenario(results, "steady")
    if steady:
        p99 = steady.latency.p99_ms
        checks.append(
            TargetCheck(
                f"trigger→invoice p99 ≤ {TARGET_TRIGGER_P99_MS:.0f} ms (steady, no added latency)",
                f"{_num(p99, 0)} ms",
                p99 <= TARGET_TRIGGER_P99_MS,
            )
        )
    return checks


def _burst_checks(r: ScenarioResult) -> list[TargetCheck]:
    limited = r.kommo.rate_limited + r.sage.rate_limited
    return [
        TargetCheck(
            f"≥ {TARGET_CEILING_SHARE:.0%} of the rate-limit ceiling with 0 × 429 (burst)",
            f"{r.share_of_ceiling:.0%} of {r.ceiling_per_min:.1f}/min, {limited} × 429",
            r.share_of_ceiling >= TARGET_CEILING_SHARE and limited == 0,
        ),
        TargetCheck(
            f"≤ {TARGET_KOMMO_CALLS:.0f} Kommo calls per invoice (burst)",
            f"{r.kommo_calls_per_invoice:.2f}",
            r.kommo_calls_per_invoice <= TARGET_KOMMO_CALLS,
        ),
        TargetCheck(
            f"≤ {TARGET_SAGE_CALLS:.0f} Sage calls per invoice (burst)",
            f"{r.sage_calls_per_invoice:.2f}",
            r.sage_calls_per_invoice <= TARGET_SAGE_CALLS,
        ),
    ]


def _scenario(results: Results, name: str) -> ScenarioResult | None:
    return next((r for r in results.e2e or [] if r.scenario.name == name), None)


def _num(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def write_json(results: Results, path: Path) -> None:
    data = {
        **dataclasses.asdict(results),
        "targets": [dataclasses.asdict(c) for c in targets(results)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(data), indent=2, default=str) + "\n")


def _finite(value: Any) -> Any:
    """NaN (a percentile of nothing) is not JSON: write null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
