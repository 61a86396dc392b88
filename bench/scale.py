"""Scale: the queries ops, the console, the sweeper and reconciliation run, timed against an inbox
of `rows` events (1 million by default) in PostgreSQL, each with its plan.

The rows are written by one `INSERT … SELECT generate_series` in the proportions a bridge that
has run for a while has (mostly invoiced and skipped; a few percent failed, needing a mapping,
retrying or pending), two events per deal, received over the last two months; then VACUUM
ANALYZE, as autovacuum would have done. Each query is the repository call the app makes (not
a copy of its SQL), run `repeat` times; the SQL it sent is then run under EXPLAIN ANALYZE and
any sequential scan of inbox_events is reported. Only PostgreSQL: SQLite is the one-machine
Quick start, not where a million events live.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import create_engine, create_sessionmaker
from app.inbox.intake import trigger_dedupe_key
from app.inbox.models import NEEDS_ATTENTION, EventState
from app.inbox.repository import InboxRepository
from app.models import utcnow
from bench.infra import Infra

# Queries must answer well inside a page load; the target table reads this.
TARGET_QUERY_MS = 50.0

_POPULATE = """
INSERT INTO inbox_events (
    source, dedupe_key, account_id, deal_id, action, pipeline_id, status_id,
    responsible_user_id, changed_at, state, attempts, next_attempt_at, lease_until, last_error,
    task_state, task_attempts, runs, payload, received_at, updated_at)
SELECT 'kommo',
       'kommo:29000001:lead:' || (g / 2) || ':' || CASE WHEN g % 2 = 0
           THEN 'trigger:500:503' ELSE 'status:500:502:' || g END,
       '29000001', (g / 2)::text, 'leads.status', '500',
       CASE WHEN g % 2 = 0 THEN '503' ELSE '502' END, '42', 1700000000 + g,
       s.state,
       CASE WHEN s.state IN ('retrying', 'failed') THEN 2 ELSE 0 END,
       CASE WHEN s.state = 'retrying' THEN now() + interval '10 minutes'
            WHEN s.state = 'pending' THEN now() - interval '1 second' END,
       NULL,
       CASE WHEN s.state IN ('failed', 'retrying') THEN 'Sage answered 503' END,
       CASE WHEN s.state = 'failed' AND g % 7 = 0 THEN 'pending' END,
       0, 1, '{}'::json,
       now() - (:rows - g) * interval '5 seconds',
       now() - (:rows - g) * interval '5 seconds'
FROM generate_series(1, :rows) AS g
CROSS JOIN LATERAL (SELECT CASE
    WHEN g % 2 = 1 THEN 'skipped'
    WHEN g % 1000 < 20 THEN 'failed'
    WHEN g % 1000 < 30 THEN 'needs_mapping'
    WHEN g % 1000 < 40 THEN 'retrying'
    WHEN g % 1000 < 44 THEN 'pending'
    WHEN g % 1000 < 50 THEN 'kept'
    ELSE 'invoiced' END AS state) AS s
"""


@dataclass(frozen=True)
class ScaleConfig:
    rows: int = 1_000_000
    repeat: int = 5

    @classmethod
    def quick(cls) -> ScaleConfig:
        return cls(rows=100_000, repeat=3)


@dataclass(frozen=True)
class QueryTiming:
    name: str
    median_ms: float
    max_ms: float
    statements: int
    seq_scans: list[str]  # the statements (shortened) that read inbox_events whole

    @property
    def met(self) -> bool:
        return self.median_ms <= TARGET_QUERY_MS and not self.seq_scans


@dataclass
class ScaleResult:
    config: ScaleConfig
    rows: int = 0
    populate_s: float = 0.0
    queries: list[QueryTiming] = field(default_factory=list)
    skipped: str | None = None


Query = Callable[[AsyncSession], Awaitable[Any]]


def _queries(rows: int) -> dict[str, Query]:
    attention = [s.value for s in NEEDS_ATTENTION]
    keys = [trigger_dedupe_key("29000001", str(d), "500", "503") for d in range(1000, 1250)]
    deal = str(rows // 4)

    def inbox(session: AsyncSession) -> InboxRepository:
        return InboxRepository(session)

    return {
        "GET /ops/retries (and console queue page): first page": lambda s: inbox(s).list(
            states=attention, limit=50, offset=0
        ),
        "GET /ops/retries?state=failed, page 10": lambda s: inbox(s).list(
            states=[EventState.FAILED.value], limit=50, offset=450
        ),
        "sweeper: due events": lambda s: inbox(s).due(now=utcnow()),
        "dashboard, /ops/status, /metrics: events by state": lambda s: inbox(s).count_by_state(),
        "dashboard: oldest pending or retrying": lambda s: inbox(s).oldest_active(),
        "sync log: events by state, last 24 h": lambda s: inbox(s).count_by_state(
            since=utcnow() - timedelta(days=1), until=utcnow()
        ),
        "console deal page: the deal's events": lambda s: inbox(s).for_deal(deal),
        "reconciliation: 250 deals' trigger events": lambda s: inbox(s).by_dedupe_keys(keys),
    }


async def run_scale(infra: Infra, config: ScaleConfig) -> ScaleResult:
    result = ScaleResult(config)
    if not infra.database_url.startswith("postgresql"):
        result.skipped = "needs PostgreSQL"
        return result
    await infra.reset()
    engine = create_engine(infra.database_url)
    try:
        started = time.monotonic()
        async with engine.begin() as conn:
            await conn.execute(text(_POPULATE), {"rows": config.rows})
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE inbox_events"))
            result.rows = int(await conn.scalar(text("SELECT count(*) FROM inbox_events")) or 0)
        result.populate_s = round(time.monotonic() - started, 1)
        print(f"  scale: {result.rows:,} inbox rows in {result.populate_s} s", flush=True)
        sessionmaker = create_sessionmaker(engine)
        for name, query in _queries(config.rows).items():
            timing = await _time(engine, sessionmaker, name, query, config.repeat)
            result.queries.append(timing)
            _print(timing)
    finally:
        await engine.dispose()
    return result


async def _time(
    engine: Any, sessionmaker: Any, name: str, query: Query, repeat: int
) -> QueryTiming:
    sent: list[tuple[str, Any]] = []

    def capture(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        sent.append((statement, params))

    durations = []
    for attempt in range(repeat):
        if attempt == repeat - 1:
            event.listen(engine.sync_engine, "before_cursor_execute", capture)
        async with sessionmaker() as session:
            started = time.perf_counter()
            await query(session)
            durations.append((time.perf_counter() - started) * 1000)
    event.remove(engine.sync_engine, "before_cursor_execute", capture)
    scans = [stmt for stmt, params in sent if await _scans_table(engine, stmt, params)]
    return QueryTiming(
        name=name,
        median_ms=round(statistics.median(durations), 2),
        max_ms=round(max(durations), 2),
        statements=len(sent),
        seq_scans=[" ".join(s.split())[:160] for s in scans],
    )


async def _scans_table(engine: Any, statement: str, params: Any) -> bool:
    """The statement reads inbox_events whole: a Seq Scan of it, or an index walk that throws
    away more than a tenth of the table (what an ordered scan of the primary key filtered row
    by row does)."""
    async with engine.connect() as conn:
        total = int(
            await conn.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'inbox_events'"))
            or 0
        )
        plan = await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", params)
        nodes = list(_nodes(plan.scalar()))
    on_table = [n for n in nodes if n.get("Relation Name") == "inbox_events"]
    return any(
        n.get("Node Type") == "Seq Scan" or n.get("Rows Removed by Filter", 0) > total / 10
        for n in on_table
    )


def _nodes(plan: Any) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan."""
    stack = [plan]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "Node Type" in node:
                yield node
            stack.extend(node.values())


def _print(t: QueryTiming) -> None:
    scan = f"  FULL SCAN: {t.seq_scans[0][:80]}" if t.seq_scans else ""
    print(f"  scale {t.name:58} {t.median_ms:8.2f} ms (max {t.max_ms:.2f}){scan}", flush=True)
