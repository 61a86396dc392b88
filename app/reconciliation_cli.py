"""`sagebridge reconcile report`: the reconciliation report now, printed and stored (GET
/ops/reconciliation then shows it). The worker runs it every day by itself."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from app.bridge import Bridge
from app.mapping_store import start_mappings
from app.models import ReconciliationReport
from app.reconciliation import report_now
from app.runtime import Database, Upstreams, pipeline_config
from app.settings import Settings

reconcile_cli = typer.Typer(
    help="The reconciliation report: where Kommo, Sage and the bridge disagree."
)


@reconcile_cli.command("report")
def report_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Against the built-in sandbox upstreams.")
    ] = False,
) -> None:
    """Run the report now against Kommo and Sage, store it, print each finding with its
    suggested action; exit 1 when it found something."""
    # The CLI's own settings handling; imported here because app.cli imports this module.
    from app.cli import _upstream_settings

    report = asyncio.run(_run(_upstream_settings(sandbox=sandbox)))
    typer.echo(json.dumps(_plain(report), indent=2) if as_json else _table(report))
    if report.rows:
        raise typer.Exit(1)


async def _run(settings: Settings) -> ReconciliationReport:
    db = Database.open(settings)
    upstreams = Upstreams.open(settings)
    try:
        mappings = await start_mappings(
            settings, db.sessionmaker, upstreams.accounting, process="cli"
        )
        bridge = Bridge(
            crm=upstreams.crm,
            accounting=upstreams.accounting,
            mapping=mappings.mapping,
            config=pipeline_config(settings),
            schedule=_no_schedule,
        )
        return await report_now(db.sessionmaker, bridge, days=settings.reconcile_report_days)
    finally:
        await upstreams.close()
        await db.close()


async def _no_schedule(*_: object) -> None:
    """The report replays nothing itself: ops do, from what it suggests."""


def _plain(report: ReconciliationReport) -> dict[str, object]:
    return {
        "id": report.id,
        "started_at": report.started_at.isoformat(),
        "counts": report.counts,
        "rows": report.rows,
        "problems": report.problems,
    }


def _table(report: ReconciliationReport) -> str:
    lines = [f"reconciliation report {report.id}: {len(report.rows)} finding(s)"]
    for row in report.rows:
        event = f" (event {row['event_id']})" if row.get("event_id") else ""
        lines.append(f"  {row['kind']:<20} deal {row['deal_id']:<10} {row['detail']}")
        lines.append(f"  {'':<20} → {row['action']}{event}: {row['advice']}")
    lines += [f"  ! {problem}" for problem in report.problems]
    return "\n".join(lines)
