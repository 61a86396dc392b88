"""One mapping in force for every process: the version in the database, checked per job.

Regression for issue 14, bug 2: a replay right after a mapping reload ran with the worker's old
copy of the file, parked the deal again and opened a second identical task."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.cli import migrate_database
from app.domain import LineItem
from app.main import create_app
from app.mapping_store import How, Mappings, start_mappings
from app.models import MappingVersion
from app.runtime import Database, Upstreams
from app.settings import Settings
from app.workers.main import WorkerContext, process_event_job, shutdown, startup
from tests.conftest import DATA, OPS_TOKEN, make_settings
from tests.helpers import record_trigger
from tests.upstreams import Kommo, Sage

AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}
Maker = async_sessionmaker[AsyncSession]
MYSTERY_RULE = "  - match: {sku: MYST-1}\n    ledger_account_id: la-goods\n"
MYSTERY_BOX = LineItem(
    element_id="104", name="Mystery box", quantity=Decimal(1), unit_price=Decimal(1), sku="MYST-1"
)


@pytest.fixture
def mapped_settings(database_url: str, redis_url: str, mapping_file: Path) -> Settings:
    # A watcher that never fires in a test: only the reload may change the mapping.
    return make_settings(
        database_url=database_url,
        redis_url=redis_url,
        ledger_mappings_path=mapping_file,
        mapping_watch_seconds=3600,
    )


@pytest.fixture
def kommo(kommo: Kommo) -> Kommo:
    """Deal 1: a Widget (mapped) and two Mystery boxes (not in tests/data's mapping)."""
    kommo.add_lead(1, products=[(102, 1), (104, 2)])
    return kommo


@pytest.fixture
async def ops(
    mapped_settings: Settings, queue: ArqRedis, kommo: Kommo
) -> AsyncIterator[AsyncClient]:
    app: FastAPI = create_app(mapped_settings)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://bridge.test") as client:
            yield client


@pytest.fixture
async def worker(
    mapped_settings: Settings, queue: ArqRedis, kommo: Kommo, ops: AsyncClient
) -> AsyncIterator[WorkerContext]:
    """The worker process's context, as arq builds it (start-up after the API's)."""
    ctx = WorkerContext(settings=mapped_settings, redis=queue)
    await startup(ctx)
    yield ctx
    await shutdown(ctx)


async def test_a_replay_right_after_a_reload_invoices_with_the_new_mapping(
    ops: AsyncClient,
    worker: WorkerContext,
    kommo: Kommo,
    sage: Sage,
    mapping_file: Path,
    sessionmaker: Maker,
    mapped_settings: Settings,
) -> None:
    event_id = await record_trigger(sessionmaker, mapped_settings, 1)
    assert await process_event_job(worker, event_id) == "needs_mapping"
    assert len(kommo.tasks) == 1 and sage.invoice_posts == []

    mapping_file.write_text(mapping_file.read_text() + MYSTERY_RULE)
    reload = await ops.post("/ops/mappings/reload", headers=AUTH)
    replay = await ops.post("/ops/events/replay-needs-mapping", headers=AUTH)
    # At once: no sweep, no watcher tick between the replay and the job.
    state = await process_event_job(worker, event_id)

    assert reload.status_code == 200
    assert replay.json() == {"replayed": [event_id], "still_unmapped": []}
    assert state == "invoiced"
    lines = sage.invoice_posts[0]["sales_invoice"]["invoice_lines"]
    assert [(li["description"], li["ledger_account_id"]) for li in lines] == [
        ("Widget", "la-goods"),
        ("Mystery box", "la-goods"),
    ]
    assert len(kommo.tasks) == 1, "no second 'NOT raised' task for the same deal"


async def test_two_processes_agree_once_one_has_loaded_and_do_not_flip_flop(
    sessionmaker: Maker, tmp_path: Path
) -> None:
    """Two hosts, each with a file of its own: the last edit is in force on both."""
    api_file, worker_file = tmp_path / "api.yaml", tmp_path / "worker.yaml"
    for path in (api_file, worker_file):
        shutil.copy(DATA / "ledger_mappings.yaml", path)
    api = Mappings.create(api_file, sessionmaker, "api")
    worker = Mappings.create(worker_file, sessionmaker, "worker")
    first = await api.start(None)
    assert (await worker.start(None)).id == first.id

    api_file.write_text(api_file.read_text() + MYSTERY_RULE)
    stored = await api.pick_up_edit(None)
    seen_by_worker = await worker.current()
    unchanged_worker_file = await worker.pick_up_edit(None)
    after_both_looked = await api.current()

    assert stored is not None and stored.id == first.id + 1
    assert (seen_by_worker.id, seen_by_worker.sha256) == (stored.id, stored.sha256)
    assert seen_by_worker.mapping.covers(MYSTERY_BOX)
    assert unchanged_worker_file is None, "the worker's older file did not change: no edit"
    assert after_both_looked.id == stored.id

    worker_file.write_text(worker_file.read_text() + "# reviewed\n")
    edited_on_worker = await worker.pick_up_edit(None)

    assert edited_on_worker is not None and edited_on_worker.id == stored.id + 1
    assert (await api.current()).sha256 == edited_on_worker.sha256 == sha256_of(worker_file)
    assert await api.pick_up_edit(None) is None, "the last edit wins: no flip back"


async def test_a_restart_with_an_older_file_does_not_roll_the_mapping_back(
    sessionmaker: Maker, mapping_file: Path
) -> None:
    original = mapping_file.read_text()
    api = Mappings.create(mapping_file, sessionmaker, "api")
    await api.start(None)
    mapping_file.write_text(original + MYSTERY_RULE)
    edited = await api.load(How.CLI, None)
    mapping_file.write_text(original)  # a host that still has the earlier copy

    restarted = Mappings.create(mapping_file, sessionmaker, "worker")
    in_force = await restarted.start(None)

    assert (in_force.id, in_force.sha256) == (edited.id, edited.sha256)
    assert await restarted.newest_id() == edited.id


async def test_processes_storing_the_same_edit_at_once_make_one_version(
    sessionmaker: Maker, mapping_file: Path
) -> None:
    """API_WORKERS processes (and the worker) on one host all see the edit at the same tick."""
    processes = [Mappings.create(mapping_file, sessionmaker, f"api-{i}") for i in range(4)]
    await asyncio.gather(*(p.start(None) for p in processes))
    mapping_file.write_text(mapping_file.read_text() + MYSTERY_RULE)

    loaded = await asyncio.gather(*(p.pick_up_edit(None) for p in processes))

    async with sessionmaker() as session:
        rows = (await session.scalars(select(MappingVersion).order_by(MappingVersion.id))).all()
    # PostgreSQL spends a sequence value on each insert that lost the race: ids may have gaps.
    assert [row.replaces_id for row in rows] == [0, rows[0].id]
    assert {(v.id, v.sha256) for v in loaded if v is not None} == {(rows[1].id, rows[1].sha256)}


async def test_a_job_asks_the_database_once_for_the_version_and_never_reads_the_file(
    ops: AsyncClient,
    worker: WorkerContext,
    kommo: Kommo,
    mapping_file: Path,
    sessionmaker: Maker,
    mapped_settings: Settings,
    tmp_path: Path,
) -> None:
    for lead_id in (2, 3, 4):
        kommo.add_lead(lead_id, products=[(102, 1)])
    events = [await record_trigger(sessionmaker, mapped_settings, i) for i in (2, 3, 4)]
    assert await process_event_job(worker, events[0]) == "invoiced"  # the version is cached
    mapping_file.unlink()
    statements = record_mapping_queries(worker["db"].engine)

    assert await process_event_job(worker, events[1]) == "invoiced"
    warm = list(statements)
    other_host = tmp_path / "other-host.yaml"
    other_host.write_text((DATA / "ledger_mappings.yaml").read_text() + MYSTERY_RULE)
    newer = await Mappings.create(other_host, sessionmaker, "cli").load(How.CLI, None)
    statements.clear()
    assert await process_event_job(worker, events[2]) == "invoiced"

    assert len(warm) == 1 and warm[0].startswith("SELECT max(mapping_versions.id)")
    assert len(statements) == 2, "a new version: its id, then its row, parsed once"
    assert (await worker["mapping"].current()).id == newer.id


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_mapping_queries(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "mapping_versions" in statement:
            seen.append(" ".join(statement.split()))

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    return seen


async def test_a_start_without_the_database_is_completed_by_the_watcher(
    tmp_path: Path, mapping_file: Path
) -> None:
    """`sagebridge api` started before `sagebridge migrate`: it runs, and loads once it can."""
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/late.db", ledger_mappings_path=mapping_file
    )
    db = Database.open(settings)
    upstreams = Upstreams.open(settings)
    try:
        mappings = await start_mappings(
            settings, db.sessionmaker, upstreams.accounting, process="worker"
        )
        with pytest.raises(SQLAlchemyError):
            await mappings.current()
        await asyncio.to_thread(migrate_database, settings)

        started = await mappings.pick_up_edit(None)
    finally:
        await upstreams.close()
        await db.close()

    assert started is not None
    assert (started.id, started.loaded_by) == (1, f"worker start on {socket.gethostname()}")
    assert started.sha256 == sha256_of(mapping_file)
