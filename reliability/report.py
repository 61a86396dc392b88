"""Render a run's JSON record as Markdown (the "Recorded figures" of docs/RELIABILITY.md):

.venv/bin/python -m reliability.report reliability/results/latest.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def markdown(record: dict[str, Any]) -> str:
    m, v = record["machine"], record["versions"]
    packages = ", ".join(f"{k} {ver}" for k, ver in v["packages"].items() if ver)
    lines = [
        f"Run of {record['started_at']} (profile `{record['profile']}`), "
        f"{record['seconds']:.0f} s in all, at commit `{v.get('commit')}`.",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GiB, {m['os']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['load_avg_at_start'])}. "
        f"Python {v['python']}, PostgreSQL {v['postgresql']} ({v['database']}), "
        f"Redis {v['redis']}; {packages}.",
        "",
        "| scenario | result | time | checks |",
        "|---|---|---|---|",
    ]
    for r in record["results"]:
        verdict = {True: "PASS", False: "**FAIL**", None: "skipped"}[r["passed"]]
        ok = sum(1 for x in r["checks"].values() if x)
        failed = [k for k, x in r["checks"].items() if not x]
        note = f"{ok}/{len(r['checks'])} passed"
        if failed:
            note += "; failed: " + "; ".join(failed)
        lines.append(f"| {r['scenario']} | {verdict} | {r['seconds']:.0f} s | {note} |")
    lines += ["", "Figures per scenario (from the JSON record):", ""]
    for r in record["results"]:
        lines.append(f"- **{r['scenario']}** — {_figures(r)}")
    return "\n".join(lines)


def _figures(r: dict[str, Any]) -> str:
    c: dict[str, Any] = r["counts"]
    key = r["scenario"][0]
    if key == "1":
        return "; ".join(
            f"{mode}: {x['deals']} deals + {x['unrelated_deals']} unrelated, "
            f"{x['webhooks_sent']} webhooks ({x['non_2xx']} non-2xx, p50 {x['webhook_p50_ms']} ms, "
            f"p99 {x['webhook_p99_ms']} ms, max {x['webhook_max_ms']} ms), "
            f"{x['invoiced']} invoiced, "
            f"{x['duplicate_invoices']} duplicates, max {x['max_tasks_per_deal']} task/deal, "
            f"unrelated: {x['unrelated_invoices']} invoices / {x['unrelated_tasks']} tasks, "
            f"{x['duplicate_sage_contacts']} duplicate Sage contacts, sent in {x['send_s']} s, "
            f"settled {x['settle_s']} s later ({x['deals_per_s']} deals/s end to end)"
            for mode, x in c.items()
            if isinstance(x, dict) and "webhooks_sent" in x
        )
    if key == "5":
        parts = []
        for name, x in c.items():
            if not isinstance(x, dict) or "sage_posts" not in x:
                continue
            extra = ", ".join(
                f"{k} {x[k]}"
                for k in (
                    "adopted_after_timeout",
                    "attempts_per_deal",
                    "scheduled_delays_match_ladder",
                    "gap_minus_ladder_min_s",
                    "gap_minus_ladder_max_s",
                    "gap_minus_retry_after_min_s",
                    "gap_minus_retry_after_max_s",
                )
                if k in x
            )
            parts.append(
                f"{name}: {x['deals']} deals, {x['sage_posts']} POSTs, {x['invoiced']} invoiced, "
                f"{x['duplicate_invoices']} duplicates, {x['tasks']} tasks; {extra}"
            )
        return "; ".join(parts)
    flat = {
        k: val
        for k, val in c.items()
        if k not in ("bridge_settings", "statuses", "property_tests") and not isinstance(val, dict)
    }
    nested = {k: val for k, val in c.items() if isinstance(val, dict) and k != "bridge_settings"}
    text = ", ".join(f"{k} {val}" for k, val in flat.items())
    for k, val in nested.items():
        text += f"; {k}: " + ", ".join(f"{a} {b}" for a, b in val.items())
    notes = " ".join(n for n in r["notes"] if len(n) < 400)
    return text + (f". Notes: {notes}" if notes else "")


def main() -> None:
    record = json.loads(Path(sys.argv[1]).read_text())
    print(markdown(record))


if __name__ == "__main__":
    main()
