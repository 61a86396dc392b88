"""Scenario 5 — Sage faults, injected with the simulator's own fault routes on
`POST /v3.1/sales_invoices`, one kind per phase:

A. commit-then-timeout: Sage creates the invoice but the answer never arrives in time;
B. a 5xx burst (2 failures per deal);
C. 429 with a Retry-After longer than the first rung of the ladder;
D. a 500 that never ends: the whole ladder, then exactly one task.

Pass: 0 duplicates in every phase; the retry delays the bridge scheduled are exactly the
configured ladder (and Retry-After where it is longer), read from its logs; the measured gap
between Sage POSTs is within ±tolerance of the ladder (the bridge adds 1 s of slack on purpose;
the full run checks this, the fast one only reports it); exactly one task per exhausted deal,
opened after its last attempt."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime
from itertools import pairwise
from typing import Any

from reliability.common import Result, moved, quiet, settle, verdict
from reliability.driver import Sender
from reliability.stack import Stack
from sandbox.seed import STATUS_RAISE_INVOICE

ROUTE = "/v3.1/sales_invoices"
# app/clients/http.py absorbs a 429 asking for at most this long in the request itself
# (a short pause, no ladder); a longer Retry-After goes to the ladder as max(rung, Retry-After).
BRIEF_THROTTLE_S = 5


async def run(
    stack: Stack,
    *,
    deals: int,
    first_id: int,
    ladder: list[int],
    retry_after: tuple[int, ...],
    http_timeout: float,
    tolerance: float = 5.0,
    check_timing: bool = True,
    settle_timeout: float = 600,
    phases: str = "ABCD",
) -> Result:
    result = Result("5-sage-faults", f"Sage faults; retry ladder {ladder}s")
    started = time.monotonic()
    k = deals
    all_phases = [
        (
            "A commit-then-timeout",
            {"kind": "timeout_after_commit", "delay": http_timeout * 10, "count": k},
        ),
        ("B 5xx burst", {"kind": "fail", "status": 503, "count": 2 * k}),
        *(
            (
                f"C{i + 1} 429 Retry-After {ra}s",
                {"kind": "rate_limit", "retry_after": ra, "count": k},
            )
            for i, ra in enumerate(retry_after)
        ),
        ("D 500 until exhausted", {"kind": "fail", "status": 500, "count": 100_000}),
    ]
    chosen = [(name, fault) for name, fault in all_phases if name[0] in phases]
    for n, (name, fault) in enumerate(chosen):
        base = first_id + n * 1000
        await stack.sandbox.add_leads(base, k, customers=1)
        await stack.sandbox.arm_sage_fault(method="POST", path=ROUTE, **fault)
        await _send(stack, base, k)
        expect = "failed" if name.startswith("D") else "invoiced"
        settled, waited, states = await settle(
            stack, _ids(base, k), timeout=settle_timeout, expect=expect
        )
        await stack.sandbox.clear_faults()
        await quiet(1 if check_timing else 0)
        posts = await _posts_by_deal(stack, base, k)
        scheduled = _scheduled_delays(stack, base, k)
        v = await verdict(stack, base, k)
        counts: dict[str, Any] = {
            "deals": k,
            "invoiced": v.invoiced,
            "duplicate_invoices": v.duplicates,
            "tasks": sum(v.tasks.get(d, 0) for d in v.deals),
            "max_tasks_per_deal": v.max_tasks,
            "sage_posts": sum(len(p) for p in posts.values()),
            "event_states": dict(states),
            "settle_s": round(waited, 1),
        }
        result.counts[name] = counts
        result.check(f"{name}: settled", settled)
        result.check(f"{name}: 0 duplicates", v.duplicates == 0)
        if name.startswith("A"):
            adopted = len(stack.bridge.log_events("worker", "invoice.adopted"))
            counts["adopted_after_timeout"] = adopted
            result.check(
                f"{name}: one invoice each, adopted not re-posted",
                v.invoiced == k and all(len(p) == 1 for p in posts.values()),
            )
            result.check(f"{name}: no task", counts["tasks"] == 0)
        elif name.startswith("B"):
            ok = all(
                (v.invoices.get(d) == 1 and v.tasks.get(d, 0) == 0)
                or (v.invoices.get(d, 0) == 0 and v.tasks.get(d, 0) == 1)
                for d in v.deals
            )
            result.check(f"{name}: each deal invoiced, or failed with exactly one task", ok)
            _ladder_checks(result, name, posts, scheduled, ladder, None, tolerance, check_timing)
        elif name.startswith("C"):
            ra = int(str(fault["retry_after"]))
            result.check(
                f"{name}: every deal invoiced, no task", v.invoiced == k and counts["tasks"] == 0
            )
            if ra <= BRIEF_THROTTLE_S:
                _brief_429_checks(result, name, posts, scheduled, ra, tolerance, check_timing)
            else:
                _ladder_checks(result, name, posts, scheduled, ladder, ra, tolerance, check_timing)
        else:
            await _exhausted_checks(
                result, name, stack, base, k, posts, scheduled, ladder, tolerance, check_timing
            )
    return result.finish(started)


def _ids(base: int, k: int) -> list[int]:
    return list(range(base, base + k))


async def _send(stack: Stack, base: int, k: int) -> None:
    hooks = [await moved(stack, [d], STATUS_RAISE_INVOICE, trigger=True) for d in _ids(base, k)]
    sender = Sender(stack.bridge.webhook_url)
    try:
        await sender.send_all(hooks, concurrency=4)
    finally:
        await sender.aclose()


async def _posts_by_deal(stack: Stack, base: int, k: int) -> dict[int, list[tuple[datetime, int]]]:
    """(arrival time, status) of every POST /sales_invoices per deal, from Sage's request log."""
    posts: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    wanted = {f"KOMMO-{d}": d for d in _ids(base, k)}
    for entry in await stack.sandbox.sage_requests("POST", ROUTE):
        body = entry.get("body") or {}
        reference = (
            (body.get("sales_invoice") or {}).get("reference") if isinstance(body, dict) else None
        )
        if reference in wanted and entry["path"] == ROUTE:
            posts[wanted[reference]].append(
                (datetime.fromisoformat(entry["timestamp"]), entry["status"])
            )
    for deal in posts:
        posts[deal].sort()
    return posts


def _scheduled_delays(stack: Stack, base: int, k: int) -> dict[int, list[float]]:
    """The delays the bridge itself scheduled (its `event.retry_scheduled` log lines)."""
    wanted = {str(d) for d in _ids(base, k)}
    delays: dict[int, list[float]] = defaultdict(list)
    for record in stack.bridge.log_events("worker", "event.retry_scheduled"):
        if record.get("deal_id") in wanted:
            delays[int(record["deal_id"])].append(float(record["delay_s"]))
    return delays


def _gaps(posts: list[tuple[datetime, int]]) -> list[float]:
    return [(b[0] - a[0]).total_seconds() for a, b in pairwise(posts)]


def _ladder_checks(
    result: Result,
    name: str,
    posts: dict[int, list[tuple[datetime, int]]],
    scheduled: dict[int, list[float]],
    ladder: list[int],
    retry_after: int | None,
    tolerance: float,
    check_timing: bool,
) -> None:
    deviations: list[float] = []
    exact = True
    for deal, times in posts.items():
        wanted = [float(x) for x in ladder]
        if retry_after is not None:
            wanted[0] = float(max(ladder[0], retry_after))
        got = scheduled.get(deal, [])
        exact = exact and got == wanted[: len(got)] and len(got) == len(times) - 1
        for i, gap in enumerate(_gaps(times)):
            deviations.append(gap - wanted[i])
    counts = result.counts[name]
    counts["scheduled_delays_match_ladder"] = exact
    counts["gap_minus_ladder_min_s"] = round(min(deviations, default=0), 2)
    counts["gap_minus_ladder_max_s"] = round(max(deviations, default=0), 2)
    result.check(f"{name}: scheduled delays = ladder (Retry-After when longer)", exact)
    result.check(f"{name}: never retried early", min(deviations, default=0) >= 0)
    if check_timing:
        worst = max((abs(d) for d in deviations), default=0)
        result.check(f"{name}: gaps within ±{tolerance:.0f}s of the ladder", worst <= tolerance)


def _brief_429_checks(
    result: Result,
    name: str,
    posts: dict[int, list[tuple[datetime, int]]],
    scheduled: dict[int, list[float]],
    retry_after: int,
    tolerance: float,
    check_timing: bool,
) -> None:
    gaps = [g for times in posts.values() for g in _gaps(times)]
    counts = result.counts[name]
    counts["path"] = "absorbed in the request (short Retry-After)"
    counts["gap_minus_retry_after_min_s"] = round(min(gaps, default=0) - retry_after, 2)
    counts["gap_minus_retry_after_max_s"] = round(max(gaps, default=0) - retry_after, 2)
    result.check(f"{name}: not sent down the ladder", not any(scheduled.values()))
    result.check(
        f"{name}: Retry-After honoured (never early)",
        min(gaps, default=retry_after) >= retry_after - 0.05,
    )
    if check_timing:
        worst = max((abs(g - retry_after) for g in gaps), default=0)
        result.check(f"{name}: gaps within ±{tolerance:.0f}s of Retry-After", worst <= tolerance)


async def _exhausted_checks(
    result: Result,
    name: str,
    stack: Stack,
    base: int,
    k: int,
    posts: dict[int, list[tuple[datetime, int]]],
    scheduled: dict[int, list[float]],
    ladder: list[int],
    tolerance: float,
    check_timing: bool,
) -> None:
    summary = await stack.sandbox.summary(base, k)
    counts = result.counts[name]
    attempts_ok = all(len(posts.get(d, [])) == len(ladder) + 1 for d in _ids(base, k))
    counts["attempts_per_deal"] = sorted({len(posts.get(d, [])) for d in _ids(base, k)})
    result.check(f"{name}: {len(ladder) + 1} attempts per deal", attempts_ok)
    _ladder_checks(result, name, posts, scheduled, ladder, None, tolerance, check_timing)
    after_last = True
    one_task = True
    for d in _ids(base, k):
        tasks = summary["leads"][str(d)]["tasks"]
        one_task = one_task and len(tasks) == 1
        if tasks and posts.get(d):
            last_post = posts[d][-1][0].timestamp()
            after_last = after_last and tasks[0]["created_at"] >= int(last_post)
    result.check(f"{name}: exactly one task per deal", one_task)
    result.check(f"{name}: the task comes after the last retry", after_last)
    result.check(f"{name}: no invoice", result.counts[name]["invoiced"] == 0)
