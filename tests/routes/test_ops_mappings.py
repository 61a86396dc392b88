"""The mapping in force: shown, reloaded only when valid as a whole and known to Sage; parked
events replayed once it covers them; discard recorded."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from arq.connections import ArqRedis
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.main import create_app
from app.mapping import MappingError
from app.models import InboxEvent
from app.queue import QUEUE_NAME
from app.settings import Settings
from tests.conftest import DATA, OPS_TOKEN, make_settings
from tests.fakes import FakeSage, sage_error
from tests.helpers import record_trigger

AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}
Maker = async_sessionmaker[AsyncSession]
UNKNOWN_LEDGER = """\
version: 1
defaults: {tax_rate_id: GB_STANDARD}
rules:
  - match: {sku: WID-01}
    ledger_account_id: la-goods
  - match: {sku: MYST-1}
    ledger_account_id: la-nope
    tax_rate_id: GB_NOPE
"""


@pytest.fixture
def mapping_file(tmp_path: Path) -> Path:
    path = tmp_path / "ledger_mappings.yaml"
    shutil.copy(DATA / "ledger_mappings.yaml", path)
    return path


@pytest.fixture
def sage() -> Any:
    with respx.mock(assert_all_mocked=False, assert_all_called=False) as router:
        router.route(host="bridge.test").pass_through()
        yield FakeSage(router)


@pytest.fixture
async def ops(
    database_url: str, redis_url: str, mapping_file: Path, queue: ArqRedis, sage: FakeSage
) -> AsyncIterator[AsyncClient]:
    settings = make_settings(
        database_url=database_url,
        redis_url=redis_url,
        ledger_mappings_path=mapping_file,
        mapping_watch_seconds=0.1,
    )
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://bridge.test") as client:
            yield client


async def test_the_mapping_in_force_is_shown(ops: AsyncClient, mapping_file: Path) -> None:
    body = (await ops.get("/ops/mappings", headers=AUTH)).json()

    assert body["source"] == str(mapping_file)
    assert len(body["sha256"]) == 64 and body["last_refusal"] is None
    assert body["defaults"] == {"tax_rate_id": "GB_STANDARD"}
    assert body["rules"][1] == {
        "match": {"sku": "WID-01"},
        "ledger_account_id": "la-goods",
        "tax_rate_id": "GB_STANDARD",
    }


async def test_an_edit_naming_ids_sage_lacks_is_refused_and_the_old_mapping_stays(
    ops: AsyncClient, mapping_file: Path
) -> None:
    before = (await ops.get("/ops/mappings", headers=AUTH)).json()
    mapping_file.write_text(UNKNOWN_LEDGER)

    response = await ops.post("/ops/mappings/reload", headers=AUTH)

    assert response.status_code == 422
    assert response.json() == {
        "error": "mapping_refused",
        "detail": "the mapping was refused and the previous one stays in force: "
        "line 6: rule 2 (sku='myst-1'): ledger_account_id 'la-nope' is not a sales ledger "
        "account in Sage; line 6: rule 2 (sku='myst-1'): tax_rate_id 'GB_NOPE' is not in Sage",
    }
    after = (await ops.get("/ops/mappings", headers=AUTH)).json()
    assert after["sha256"] == before["sha256"] and len(after["last_refusal"]) == 2


async def test_a_schema_error_is_refused_with_its_line(
    ops: AsyncClient, mapping_file: Path
) -> None:
    mapping_file.write_text("version: 1\nrules:\n  - match: {sku: A}\n    ledger: x\n")

    response = await ops.post("/ops/mappings/reload", headers=AUTH)

    assert response.status_code == 422
    assert "line 3: rules.0.ledger_account_id: Field required" in response.json()["detail"]


async def test_when_sage_cannot_be_asked_the_reload_is_refused(
    ops: AsyncClient, mapping_file: Path, sage: FakeSage
) -> None:
    sage.faults.add("ledger_accounts", sage_error(503, "ServiceUnavailable", "down"))
    mapping_file.write_text(mapping_file.read_text() + "\n# edited\n")

    response = await ops.post("/ops/mappings/reload", headers=AUTH)

    assert response.status_code == 422
    assert "could not check the ids against sage" in response.json()["detail"]


async def test_parked_events_are_replayed_once_the_mapping_covers_them(
    ops: AsyncClient,
    mapping_file: Path,
    sessionmaker: Maker,
    database_url: str,
    redis_url: str,
    queue: ArqRedis,
) -> None:
    settings: Settings = make_settings(database_url=database_url, redis_url=redis_url)
    parked = await record_trigger(sessionmaker, settings, 1)
    other = await record_trigger(sessionmaker, settings, 2)
    async with sessionmaker() as session:
        for event_id, sku in ((parked, "MYST-1"), (other, "OTHER-9")):
            unmapped = [{"element_id": "104", "name": "Box", "sku": sku, "product_type": "x"}]
            await session.execute(
                update(InboxEvent)
                .where(InboxEvent.id == event_id)
                .values(state="needs_mapping", payload={"unmapped": unmapped})
            )
        await session.commit()

    before = (await ops.post("/ops/events/replay-needs-mapping", headers=AUTH)).json()
    mapping_file.write_text(
        mapping_file.read_text() + "  - match: {sku: MYST-1}\n    ledger_account_id: la-goods\n"
    )
    assert (await ops.post("/ops/mappings/reload", headers=AUTH)).status_code == 200
    after = (await ops.post("/ops/events/replay-needs-mapping", headers=AUTH)).json()

    assert before == {"replayed": [], "still_unmapped": [other, parked]}
    assert after == {"replayed": [parked], "still_unmapped": [other]}
    jobs = await queue.queued_jobs(queue_name=QUEUE_NAME)
    assert [j.job_id for j in jobs] == [f"event:{parked}:0"]
    event = (await ops.get(f"/ops/events/{parked}", headers=AUTH)).json()
    assert event["state"] == "pending"
    assert event["ops"][0]["action"] == "replay"


async def test_discard_ends_an_event_and_records_why(
    ops: AsyncClient, sessionmaker: Maker, database_url: str, redis_url: str
) -> None:
    settings = make_settings(database_url=database_url, redis_url=redis_url)
    event_id = await record_trigger(sessionmaker, settings, 3)

    empty = await ops.post(f"/ops/events/{event_id}/discard", headers=AUTH, json={})
    response = await ops.post(
        f"/ops/events/{event_id}/discard", headers=AUTH, json={"reason": "invoiced by hand"}
    )
    again = await ops.post(
        f"/ops/events/{event_id}/discard", headers=AUTH, json={"reason": "twice"}
    )

    assert empty.status_code == 400
    assert response.status_code == 200
    body = response.json()
    assert body["state"] == "discarded"
    assert body["last_error"] == "discarded by ops: invoiced by hand"
    assert [(o["action"], o["reason"]) for o in body["ops"]] == [("discard", "invoiced by hand")]
    assert again.status_code == 400


async def test_the_bridge_refuses_to_start_on_a_mapping_sage_does_not_know(
    database_url: str, redis_url: str, mapping_file: Path, sage: FakeSage
) -> None:
    mapping_file.write_text(UNKNOWN_LEDGER)
    settings = make_settings(
        database_url=database_url,
        redis_url=redis_url,
        ledger_mappings_path=mapping_file,
        mapping_check_on_start=True,
    )
    app = create_app(settings)

    with pytest.raises(MappingError, match="la-nope"):
        async with app.router.lifespan_context(app):
            pass


async def test_start_up_goes_on_when_sage_is_unreachable(
    database_url: str, redis_url: str, mapping_file: Path, sage: FakeSage
) -> None:
    sage.faults.add("ledger_accounts", httpx.ConnectError("no route"))
    settings = make_settings(
        database_url=database_url,
        redis_url=redis_url,
        ledger_mappings_path=mapping_file,
        mapping_check_on_start=True,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert app.state.mapping.get().file.rules


async def test_an_edited_file_is_picked_up_without_a_reload_call(
    ops: AsyncClient, mapping_file: Path
) -> None:
    before = (await ops.get("/ops/mappings", headers=AUTH)).json()["sha256"]
    mapping_file.write_text(
        mapping_file.read_text() + "  - match: {sku: NEW-1}\n    ledger_account_id: la-goods\n"
    )

    for _ in range(100):
        after = (await ops.get("/ops/mappings", headers=AUTH)).json()
        if after["sha256"] != before:
            break
        await asyncio.sleep(0.05)

    assert after["sha256"] != before
    assert after["rules"][-1] == {"match": {"sku": "NEW-1"}, "ledger_account_id": "la-goods"}


async def test_a_bad_edit_to_the_file_is_refused_by_the_watcher_too(
    ops: AsyncClient, mapping_file: Path
) -> None:
    before = (await ops.get("/ops/mappings", headers=AUTH)).json()["sha256"]
    mapping_file.write_text(UNKNOWN_LEDGER)

    for _ in range(100):
        after = (await ops.get("/ops/mappings", headers=AUTH)).json()
        if after["last_refusal"]:
            break
        await asyncio.sleep(0.05)

    assert after["sha256"] == before
    assert any("la-nope" in p for p in after["last_refusal"])
