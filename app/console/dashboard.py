"""What the dashboard shows, gathered from the same repositories as `/ops/status`,
`/ops/connections`, `/ops/alerts` and `/metrics`, plus the console's two chart queries."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.models import Alert
from app.alerts.repository import AlertRepository
from app.connections import flow
from app.connections.runtime import Connections
from app.connections.store import ConnectionInfo
from app.console import charts
from app.console.formatting import duration
from app.console.repository import ConsoleRepository, InvoiceTiming, RequestCount
from app.inbox.models import EventState
from app.inbox.repository import InboxRepository
from app.queue import Queue

HOURS = 24
RECENT_ALERTS = 5


@dataclass(frozen=True)
class Throughput:
    invoices: int
    p50_seconds: float | None
    p99_seconds: float | None
    per_hour: charts.Chart
    latency: charts.Chart


@dataclass(frozen=True)
class UpstreamHealth:
    api: str
    requests: int
    throttled: int  # 429
    server_errors: int  # 5xx
    refused: int  # other 4xx
    network: int  # timeouts, connections dropped or refused

    @property
    def errors(self) -> int:
        return self.throttled + self.server_errors + self.refused + self.network


@dataclass(frozen=True)
class ConnectionRow:
    info: ConnectionInfo
    days_left: float | None


@dataclass(frozen=True)
class Dashboard:
    now: datetime
    events_by_state: dict[str, int]
    oldest_pending: datetime | None
    throughput: Throughput
    upstreams: list[UpstreamHealth]
    connections: list[ConnectionRow]
    kommo_webhook: dict[str, Any] | None
    alerts: list[Alert]


async def load(
    session: AsyncSession, queue: Queue, connections: Connections, *, now: datetime
) -> Dashboard:
    inbox, console = InboxRepository(session), ConsoleRepository(session)
    since = _hour(now) - timedelta(hours=HOURS - 1)
    alerts, _ = await AlertRepository(session).list(
        states=None, kind=None, limit=RECENT_ALERTS, offset=0
    )
    counts = await inbox.count_by_state()
    return Dashboard(
        now=now,
        events_by_state={state.value: counts.get(state.value, 0) for state in EventState},
        oldest_pending=await inbox.oldest_active(),
        throughput=throughput(await console.invoices_since(since), since),
        upstreams=upstream_health(await console.requests_since(since)),
        connections=connection_rows(await flow.list_connections(connections), now),
        kommo_webhook=await queue.webhook_state(),
        alerts=alerts,
    )


def throughput(timings: list[InvoiceTiming], since: datetime) -> Throughput:
    """Invoices per hour and trigger→invoice latency (p50, p99) per hour, from `since` (the
    start of the first of HOURS hours)."""
    slots: list[list[float]] = [[] for _ in range(HOURS)]
    for timing in timings:
        slot = int((timing.invoiced_at - since) / timedelta(hours=1))
        if 0 <= slot < HOURS:
            slots[slot].append((timing.invoiced_at - timing.triggered_at).total_seconds())
    labels = [f"{since + timedelta(hours=i):%H:00}" for i in range(HOURS)]
    everything = [seconds for slot in slots for seconds in slot]
    return Throughput(
        invoices=len(everything),
        p50_seconds=percentile(everything, 50),
        p99_seconds=percentile(everything, 99),
        per_hour=charts.bar_chart(
            [len(slot) for slot in slots],
            labels,
            fmt=lambda v: f"{v:g}",
            summary=f"Invoices per hour, last {HOURS} hours: {len(everything)} in all",
        ),
        latency=charts.line_chart(
            {"p50": [percentile(s, 50) for s in slots], "p99": [percentile(s, 99) for s in slots]},
            labels,
            fmt=duration,
            summary=f"Trigger to invoice per hour, last {HOURS} hours: median and 99th percentile",
        ),
    )


def percentile(values: list[float], p: int) -> float | None:
    """The p-th percentile (interpolated between the nearest values), None for no values."""
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def upstream_health(counts: list[RequestCount]) -> list[UpstreamHealth]:
    by_api: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for count in counts:
        by_api[count.api][_kind(count.status)] += count.count
    return [
        UpstreamHealth(
            api=api,
            requests=sum(kinds.values()),
            throttled=kinds["throttled"],
            server_errors=kinds["server_errors"],
            refused=kinds["refused"],
            network=kinds["network"],
        )
        for api, kinds in sorted(by_api.items())
    ]


def _kind(status: str) -> str:
    if not status.isdigit():
        return "network"
    code = int(status)
    if code == 429:
        return "throttled"
    if code >= 500:
        return "server_errors"
    return "refused" if code >= 400 else "ok"


def connection_rows(infos: list[ConnectionInfo], now: datetime) -> list[ConnectionRow]:
    return [
        ConnectionRow(
            info,
            (info.grant_expires_at - now) / timedelta(days=1) if info.grant_expires_at else None,
        )
        for info in infos
    ]


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)
