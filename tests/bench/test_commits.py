"""The benchmark's commit probe: what it prints beside a record must be a real measurement of
the database under test, and it must leave that database as it found it."""

from __future__ import annotations

from sqlalchemy import inspect

from app.db import create_engine
from bench.commits import TABLE, commit_latency
from bench.report import Results, render
from bench.sysinfo import describe


async def test_each_commit_is_timed_and_the_probe_table_is_dropped(database_url: str) -> None:
    latency = await commit_latency(database_url, commits=40)

    assert latency.count == 40
    assert 0 < latency.p50_ms <= latency.p99_ms <= latency.max_ms
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await engine.dispose()
    assert TABLE not in tables
    assert "inbox_events" in tables  # the bridge's own tables are untouched


async def test_the_results_header_carries_the_commit_latency(database_url: str) -> None:
    results = Results("quick", describe(database="db", redis="redis"))
    results.commit = await commit_latency(database_url, commits=10)

    header = render(results).splitlines()[2]

    assert header.startswith("database commit, idle machine: p50 ")
    assert f"/ p99 {results.commit.p99_ms:.1f} /" in header
    assert "10 one-row transactions" in header
