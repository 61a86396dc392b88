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
from bench.scale import TARGET_QUERY_MS, ScaleResult
from bench.stats import Latency
from bench.sysinfo import Environment

# Issue 15's targets (issue 8's before them: the Sage calls and the trigger→invoice p99).
TARGET_INGEST_RATE = 500.0
TARGET_INGEST_P99_MS = 25.0
TARGET_INGEST_CPU_MS = 1.0
TARGET_BARE_RATIO = 0.5
TARGET_RSS_IDLE_MB = 120.0
# "No growth": what allocator noise allows over 100,000 webhooks (a leak of 100 bytes each
# would be 10 MiB).
TARGET_RSS_GROWTH_MB = 5.0
TARGET_CEILING_SHARE = 0.95
TARGET_KOMMO_CALLS = 1.5
TARGET_INVOICES_PER_MIN = 170.0
TARGET_SAGE_CALLS = 2.0
TARGET_TRIGGER_P99_MS = 1000.0


@dataclass
class Results:
    mode: str
    environment: Environment
    duration_s: float = 0.0
    # The database's one-row commit on the idle machine: the floor under the ingest p99.
    commit: Latency | None = None
    ingest: IngestResult | None = None
    e2e: list[ScenarioResult] | None = None
    footprint: FootprintResult | None = None
    scale: ScaleResult | None = None


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
    if results.commit:
        parts.append(f"database commit, idle machine: {_commit_latency(results.commit)}")
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
    if results.scale and not results.scale.skipped:
        parts += [
            "",
            f"Scale ({results.scale.rows:,} inbox rows in PostgreSQL)",
            _scale_table(results.scale),
        ]
    checks = targets(results)
    if checks:
        rows = [[c.target, c.measured, "met" if c.met else "NOT met"] for c in checks]
        parts += ["", "Targets", table(["target", "measured", ""], rows)]
    return "\n".join(parts)


def _commit_latency(commit: Latency) -> str:
    return (
        f"p50 {_num(commit.p50_ms)} / p99 {_num(commit.p99_ms)} / max {_num(commit.max_ms)} ms"
        f" ({commit.count:,} one-row transactions; the answer to a webhook waits for one)"
    )


def _ingest_table(result: IngestResult) -> str:
    rows = []
    for rate in result.config.rates:
        bridge, bare = result.fixed("bridge", rate), result.fixed("bare", rate)
        if bridge and bare:
            rows.append(
                _ingest_row(f"{rate:.0f}/s", bridge.result, bare.result, bridge.server_cpu_ms)
            )
    for name, rate in result.max_sustained_rate.items():
        rows.append([f"max sustained ({name})", f"{rate:.0f}/s", *[""] * 6])
    for label, ratio in (
        ("bridge/bare max rate", result.max_rate_ratio),
        (f"bridge/bare, API_WORKERS={result.config.api_workers}", result.max_rate_ratio_workers),
    ):
        if ratio is not None:
            rows.append([label, f"{ratio:.3f}", *[""] * 6])
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


def _scale_table(result: ScaleResult) -> str:
    rows = [
        [
            q.name,
            f"{q.median_ms:.1f} ms",
            f"{q.max_ms:.1f} ms",
            "yes: " + q.seq_scans[0][:60] if q.seq_scans else "no",
        ]
        for q in result.queries
    ]
    return table(["query", "median", "max", "reads the whole table"], rows)


def targets(results: Results) -> list[TargetCheck]:
    checks: list[TargetCheck] = []
    if results.ingest:
        checks += _ingest_checks(results.ingest)
    if results.footprint:
        checks += _footprint_checks(results.footprint)
    if results.e2e:
        checks += _upstream_429_checks(results.e2e)
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
    if results.scale and not results.scale.skipped:
        checks += _scale_checks(results.scale)
    return checks


def _ingest_checks(ingest: IngestResult) -> list[TargetCheck]:
    checks = []
    rate = TARGET_INGEST_RATE
    if (step := ingest.fixed("bridge", rate)) is not None:
        p99, errors = step.result.latency.p99_ms, step.result.error_count
        checks += [
            TargetCheck(
                f"ingest API CPU per webhook ≤ {TARGET_INGEST_CPU_MS:.1f} ms (at {rate:.0f}/s)",
                f"{step.server_cpu_ms:.2f} ms",
                step.server_cpu_ms <= TARGET_INGEST_CPU_MS,
            ),
            TargetCheck(
                f"ingest p99 ≤ {TARGET_INGEST_P99_MS:.0f} ms at {rate:.0f} req/s",
                f"{_num(p99)} ms, {errors} errors",
                p99 <= TARGET_INGEST_P99_MS and errors == 0,
            ),
        ]
    for label, ratio, rates in (
        ("one API process each", ingest.max_rate_ratio, ("bridge", "bare")),
        (
            f"API_WORKERS={ingest.config.api_workers} each",
            ingest.max_rate_ratio_workers,
            (f"bridge×{ingest.config.api_workers}", f"bare×{ingest.config.api_workers}"),
        ),
    ):
        if ratio is None:
            continue
        bridge, bare = (ingest.max_sustained_rate[name] for name in rates)
        checks.append(
            TargetCheck(
                f"ingest bridge/bare max sustained ≥ {TARGET_BARE_RATIO} ({label})",
                f"{ratio:.2f} ({bridge:.0f}/s of {bare:.0f}/s)",
                ratio >= TARGET_BARE_RATIO,
            )
        )
    return checks


def _footprint_checks(f: FootprintResult) -> list[TargetCheck]:
    checks = [
        TargetCheck(
            f"API RSS idle ≤ {TARGET_RSS_IDLE_MB:.0f} MiB",
            f"{f.api_rss_idle_mb:.0f} MiB",
            f.api_rss_idle_mb <= TARGET_RSS_IDLE_MB,
        )
    ]
    growth = f.api_rss_growth_mb
    if growth is not None:
        first = f.growth_webhooks // max(1, len(f.growth_rss_mb))
        checks.append(
            TargetCheck(
                f"API RSS growth ≤ {TARGET_RSS_GROWTH_MB:.0f} MiB over {f.growth_webhooks:,}"
                " webhooks",
                f"{growth:+.1f} MiB (after {first:,}: {f.growth_rss_mb[0]:.0f} MiB,"
                f" {f.growth_ok:,} answered 2xx)",
                growth <= TARGET_RSS_GROWTH_MB and f.growth_ok == f.growth_webhooks,
            )
        )
    return checks


def _upstream_429_checks(results: Sequence[ScenarioResult]) -> list[TargetCheck]:
    checks = []
    for upstream in ("kommo", "sage"):
        counts = {r.scenario.name: getattr(r, upstream).rate_limited for r in results}
        measured = ", ".join(f"{name} {count}" for name, count in counts.items())
        checks.append(
            TargetCheck(
                f"0 × 429 from {upstream.capitalize()} (every e2e scenario)",
                measured,
                not any(counts.values()),
            )
        )
    return checks


def _scale_checks(scale: ScaleResult) -> list[TargetCheck]:
    return [
        TargetCheck(
            f"{q.name} ({scale.rows:,} rows): ≤ {TARGET_QUERY_MS:.0f} ms, no full scan",
            f"{q.median_ms:.1f} ms" + (", full scan" if q.seq_scans else ""),
            q.met,
        )
        for q in scale.queries
    ]


def _burst_checks(r: ScenarioResult) -> list[TargetCheck]:
    limited = r.kommo.rate_limited + r.sage.rate_limited
    return [
        TargetCheck(
            f"≥ {TARGET_CEILING_SHARE:.0%} of the rate-limit ceiling with 0 × 429 (burst)",
            f"{r.share_of_ceiling:.0%} of {r.ceiling_per_min:.1f}/min, {limited} × 429",
            r.share_of_ceiling >= TARGET_CEILING_SHARE and limited == 0,
        ),
        TargetCheck(
            f"≥ {TARGET_INVOICES_PER_MIN:.0f} invoices/min (burst of {r.scenario.deals})",
            f"{r.invoices_per_min:.1f}",
            r.invoices_per_min >= TARGET_INVOICES_PER_MIN,
        ),
        TargetCheck(
            f"≤ {TARGET_KOMMO_CALLS} Kommo calls per invoice (burst)",
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
