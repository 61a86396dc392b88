"""`make reliability`: every scenario of issue 7 against real processes on 127.0.0.1, a table of
results on stdout, and the whole record as JSON.

    .venv/bin/python -m reliability.run                    # the issue's counts (~15 min, 2 cores)
    .venv/bin/python -m reliability.run --profile fast     # the small versions (~2 min)
    .venv/bin/python -m reliability.run --only 1,5 --deals 200 --json out.json

Each scenario gets a fresh stack: database truncated, Redis flushed, a new sandbox process, and
the bridge's API and worker restarted with that scenario's settings. The servers are private:
a redis-server and (when pg_ctl is usable) a PostgreSQL cluster of this run's own, on their
own ports; they are stopped at the end. Exit status: 0 when every scenario that ran passed.
"""

# ruff: noqa: ASYNC240 - writes its own results file

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reliability.common import Result
from reliability.environment import Servers, machine, servers, versions
from reliability.profiles import FAST, FULL, Profile
from reliability.scenarios import (
    db_down,
    hostile,
    redelivery,
    redis_lost,
    sage_faults,
    secrets,
    tokens,
    worker_kill,
)
from reliability.stack import ROOT, Stack, open_stack

ALL = ("1", "2", "3", "4", "5", "6", "7", "8")


async def run_scenario(key: str, stack: Stack, s: Servers, p: Profile) -> Result:
    first = 10_000_000 + int(key) * 1_000_000
    if key == "1":
        return await redelivery.run(
            stack, deals=p.redelivery_deals, first_id=first, settle_timeout=p.settle_timeout_s
        )
    if key == "2":
        return await worker_kill.run(
            stack,
            deals=p.kill_deals,
            first_id=first,
            kill_every=p.kill_every_s,
            spread_s=p.kill_spread_s,
            settle_timeout=p.settle_timeout_s,
        )
    if key == "3":
        return await redis_lost.run(
            stack,
            deals=p.redis_deals,
            first_id=first,
            down_for=p.redis_down_s,
            settle_timeout=p.settle_timeout_s,
        )
    if key == "4":
        return await db_down.run(
            stack,
            outage=s.outage,
            deals=p.db_deals,
            first_id=first,
            down_for=p.db_down_s,
            settle_timeout=p.settle_timeout_s,
        )
    if key == "5":
        return await sage_faults.run(
            stack,
            deals=p.fault_deals,
            first_id=first,
            ladder=list(p.ladder),
            retry_after=p.retry_after,
            http_timeout=p.sage_http_timeout,
            tolerance=p.ladder_tolerance_s,
            check_timing=p.check_timing,
            settle_timeout=p.settle_timeout_s,
            phases=p.fault_phases,
        )
    if key == "6":
        return await tokens.run(stack, first_id=first, settle_timeout=p.settle_timeout_s)
    if key == "7":
        live = await hostile.run(stack, body_mb=p.hostile_body_mb, bodies=p.hostile_bodies)
        return _with_property_tests(live, p, s)
    if key == "8":
        return await secrets.run(stack, deals=p.secrets_deals, first_id=first, extra=s.secrets)
    raise ValueError(key)


def _with_property_tests(result: Result, p: Profile, s: Servers) -> Result:
    """Hypothesis and schemathesis (tests/reliability/test_hostile_*.py) at the profile's
    example counts, against this run's database and Redis."""
    env = {
        **os.environ,
        "RELIABILITY_EXAMPLES": str(p.hypothesis_examples),
        "RELIABILITY_API_EXAMPLES": str(p.schemathesis_examples),
        "TEST_DATABASE_URL": s.harness_database_url,
        "TEST_REDIS_URL": s.redis.url(1),
    }
    started = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/reliability/test_hostile_parsers.py",
            "tests/reliability/test_hostile_api.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    summary = next(
        (ln for ln in reversed(out.stdout.splitlines()) if " passed" in ln or " failed" in ln),
        out.stdout[-300:],
    )
    result.counts["property_tests"] = {
        "hypothesis_examples_per_property": p.hypothesis_examples,
        "schemathesis_examples_per_operation": p.schemathesis_examples,
        "pytest": summary.strip("= "),
        "seconds": round(time.monotonic() - started, 1),
    }
    failed = re.search(r"\b\d+ (failed|errors?)\b", summary)  # "1 xfailed" is expected
    result.check("hypothesis + schemathesis properties hold", not failed and out.returncode == 0)
    if out.returncode != 0:
        result.notes.append(out.stdout[-1500:])
    result.seconds = round(result.seconds + time.monotonic() - started, 1)
    result.passed = all(result.checks.values())
    return result


async def main_async(args: argparse.Namespace) -> int:
    profile = (FAST if args.profile == "fast" else FULL).with_counts(
        redelivery_deals=args.deals,
        kill_deals=args.kill_deals,
        redis_deals=args.redis_deals,
        db_deals=args.db_deals,
        db_down_s=args.db_down,
    )
    keys = [k.strip() for k in args.only.split(",")] if args.only else list(ALL)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sagebridge-reliability-"))
    workdir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "profile": profile.name,
        "machine": machine(),
        "workdir": str(workdir),
    }
    results: list[Result] = []
    wall = time.monotonic()
    async with servers(
        workdir, private_pg=not args.shared_pg, pg_port=args.pg_port, redis_port=args.redis_port
    ) as s:
        record["versions"] = await versions(s)
        print(f"sagebridge reliability ({profile.name}) — {s.database_kind}; logs in {workdir}")
        for key in keys:
            print(f"… scenario {key}", flush=True)
            await _flush_redis(s)
            overrides: dict[str, str | None] = dict(profile.settings_for(key))
            if key == "6":
                overrides.update(tokens.settings())
            try:
                async with open_stack(
                    workdir / f"scenario-{key}",
                    bridge_database_url=s.bridge_database_url,
                    harness_database_url=s.harness_database_url,
                    redis=s.redis,
                    overrides=overrides,
                ) as stack:
                    result = await run_scenario(key, stack, s, profile)
            except Exception as exc:  # a harness or start-up failure is a failed scenario
                result = Result(f"{key}", f"scenario {key}", passed=False)
                result.notes.append(f"{type(exc).__name__}: {exc}"[:2000])
            result.counts["bridge_settings"] = {
                k: "***" if v and any(w in k for w in ("SECRET", "KEYS")) else v
                for k, v in overrides.items()
            }
            results.append(result)
            print(_row(result), flush=True)
    record["seconds"] = round(time.monotonic() - wall, 1)
    record["results"] = [r.as_dict() for r in results]
    print()
    print(table(results))
    print(f"\ntotal {record['seconds']:.0f}s")
    out = Path(args.json) if args.json else workdir / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str))
    print(f"results: {out}")
    return 0 if all(r.passed is not False for r in results) else 1


async def _flush_redis(s: Servers) -> None:
    import redis.asyncio as aioredis

    async with aioredis.Redis.from_url(s.redis.url(0)) as r:
        await r.flushall()  # our private server only


def _row(r: Result) -> str:
    verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[r.passed]
    return f"  {r.scenario:<20} {verdict:<5} {r.seconds:>7.1f}s  {_headline(r)}"


def _headline(r: Result) -> str:
    c = r.counts
    if r.passed is None and r.notes:
        return r.notes[0][:90]
    if r.scenario.startswith("1"):
        parts = [
            f"{m}: {v['deals']} deals, {v['webhooks_sent']} hooks, {v['invoiced']} invoiced, "
            f"{v['duplicate_invoices']} dup"
            for m, v in c.items()
            if isinstance(v, dict) and "webhooks_sent" in v
        ]
        return "; ".join(parts)
    if r.scenario.startswith("2"):
        return (
            f"{c.get('deals')} deals, {c.get('kills')} kills, {c.get('orphaned_events')} orphans "
            f"(max pickup {c.get('orphan_pickup_max_s')}s), lost {c.get('lost')}, "
            f"dup {c.get('duplicate_invoices')}"
        )
    if r.scenario.startswith("3"):
        return (
            f"{c.get('deals')} deals, {c.get('keys_flushed')} keys flushed, lost {c.get('lost')}, "
            f"dup {c.get('duplicate_invoices')}, self-exits {c.get('unexpected_exits')}"
        )
    if r.scenario.startswith("4"):
        return (
            f"{c.get('deals')} deals, {c.get('during_outage')} hooks in outage "
            f"({c.get('during_outage_2xx')} 2xx), acked lost {c.get('acknowledged_lost')}, "
            f"dup {c.get('duplicate_invoices')}"
        )
    if r.scenario.startswith("5"):
        return "; ".join(
            f"{name.split()[0]}: {v.get('sage_posts')} POSTs, {v.get('duplicate_invoices')} dup, "
            f"{v.get('tasks')} tasks"
            for name, v in c.items()
            if isinstance(v, dict) and "sage_posts" in v
        )
    if r.scenario.startswith("6") and "A expiry under load" in c:
        a, b = c["A expiry under load"], c["B revoked refresh token"]
        return (
            f"{a['deals']} deals/{a['concurrent_jobs']} jobs, invalid_grant {a['invalid_grant']}; "
            f"revoked → {b['connection_state_after_revoke']}, "
            f"{b['events_waiting_before_reconnect']} waited, "
            f"{b['invoiced']}/{b['deals']} invoiced after reconnect"
        )
    if r.scenario.startswith("7"):
        props = c.get("property_tests", {}).get("pytest", "")
        stored = c.get("rows_stored_by_rejected_requests")
        return f"{c.get('requests')} hostile requests, stored {stored}; {props}"
    if r.scenario.startswith("8"):
        named = len(c.get("secrets_checked", []))
        return f"{named} secrets, {c.get('log_lines')} log lines, hits {c.get('occurrences')}"
    return ""


def table(results: list[Result]) -> str:
    lines = [f"{'scenario':<20} {'result':<6} {'time':>8}  counts", "-" * 100]
    for r in results:
        lines.append(_row(r).strip("\n")[2:])
        lines.extend(f"{'':<20}   ✗ {name}" for name, ok in r.checks.items() if not ok)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=("full", "fast"), default="full")
    parser.add_argument("--only", help="comma-separated scenario numbers (default: all)")
    parser.add_argument("--deals", type=int, help="scenario 1: deals per mode (default 1000)")
    parser.add_argument("--kill-deals", type=int, help="scenario 2 (default 500)")
    parser.add_argument("--redis-deals", type=int, help="scenario 3 (default 500)")
    parser.add_argument("--db-deals", type=int, help="scenario 4 (default 500)")
    parser.add_argument("--db-down", type=float, help="scenario 4 outage seconds (default 20)")
    parser.add_argument(
        "--json", help="where to write the results (default: <workdir>/results.json)"
    )
    parser.add_argument("--workdir", help="logs and data (default: a new temporary directory)")
    parser.add_argument(
        "--shared-pg",
        action="store_true",
        help="no private cluster: use 127.0.0.1:5432 through a proxy",
    )
    parser.add_argument("--pg-port", type=int, default=5499)
    parser.add_argument("--redis-port", type=int, default=6390)
    args = parser.parse_args(argv)
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
