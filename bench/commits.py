"""The database's own commit latency, measured once on the idle machine before anything else.

The bridge answers a webhook only after the commit holding its row, so a commit's tail is a
floor under the ingest p99 that no code in the bridge can lower: the same code's ingest p99 at
500/s was 9 ms on one 2-core guest and 43–62 ms on another whose commits alone stalled for
10–20 ms (docs/PERFORMANCE.md). Printed beside the results, it says which kind of machine a
record was made on.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import Column, Integer, MetaData, Table, Text

from app.db import create_engine
from bench.stats import Latency

# A table of its own (logged, like `inbox_events`: a TEMP table would skip the WAL flush that
# a commit waits for), dropped afterwards.
TABLE = "bench_commit_probe"
_METADATA = MetaData()
_PROBE = Table(TABLE, _METADATA, Column("id", Integer, primary_key=True), Column("note", Text))
# One commit after another, with a short pause between, so that each waits for a flush of its
# own instead of riding along with the one before.
PAUSE_S = 0.002


async def commit_latency(database_url: str, *, commits: int) -> Latency:
    """Each of `commits` one-row INSERTs in a transaction of its own, from BEGIN to COMMIT."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_METADATA.drop_all)
            await conn.run_sync(_METADATA.create_all)
        seconds = []
        for row in range(commits):
            started = time.perf_counter()
            async with engine.begin() as conn:
                await conn.execute(_PROBE.insert().values(id=row, note="probe"))
            seconds.append(time.perf_counter() - started)
            await asyncio.sleep(PAUSE_S)
        async with engine.begin() as conn:
            await conn.run_sync(_METADATA.drop_all)
    finally:
        await engine.dispose()
    return Latency.of(seconds)
