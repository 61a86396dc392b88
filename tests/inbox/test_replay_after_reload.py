"""Issue 14's bug 2 as ops met it, end to end through the API and the worker: edit the YAML,
reload, replay what the mapping now covers. The worker uses the new mapping at once (the mapping
in force is read from the database per job), the deal is invoiced, and the manager's "NOT raised"
task is completed, not joined by a second one (the part bug 3 fixes)."""

from __future__ import annotations

from pathlib import Path

from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.settings import Settings
from app.workers.main import WorkerContext, process_event_job
from tests.conftest import OPS_TOKEN
from tests.helpers import record_trigger
from tests.test_mapping_in_force import (  # noqa: F401 - the deal, API and worker of that module
    MYSTERY_RULE,
    kommo,
    mapped_settings,
    ops,
    worker,
)
from tests.upstreams import Kommo, Sage

AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}


async def test_a_replay_after_a_reload_invoices_and_completes_the_one_task(
    ops: AsyncClient,  # noqa: F811
    worker: WorkerContext,  # noqa: F811
    kommo: Kommo,  # noqa: F811
    sage: Sage,
    mapping_file: Path,
    sessionmaker: async_sessionmaker[AsyncSession],
    mapped_settings: Settings,  # noqa: F811
) -> None:
    event_id = await record_trigger(sessionmaker, mapped_settings, 1)
    assert await process_event_job(worker, event_id) == "needs_mapping"
    mapping_file.write_text(mapping_file.read_text() + MYSTERY_RULE)

    await ops.post("/ops/mappings/reload", headers=AUTH)
    await ops.post("/ops/events/replay-needs-mapping", headers=AUTH)
    state = await process_event_job(worker, event_id)

    assert state == "invoiced" and len(sage.invoice_posts) == 1
    assert len(kommo.tasks) == 1
    [task] = kommo.state.tasks.values()
    assert (task.id, task.is_completed) == (8000001, True)
    assert (task.result_text or "").startswith("Sage invoice SI-1 was raised")
    event = (await ops.get(f"/ops/events/{event_id}", headers=AUTH)).json()
    assert (event["state"], event["task_state"]) == ("invoiced", "closed")
