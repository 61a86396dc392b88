"""The mapping in force: shown with its version, reloaded only when valid as a whole and known to
Sage, refusals shown whichever process saw them; parked events replayed once it covers them;
discard recorded."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from app.inbox.models import InboxEvent
from app.main import create_app
from app.mapping import MappingError
from app.mapping_store import Mappings
from app.queue import HEARTBEAT_KEY, QUEUE_NAME
from app.settings import Settings
from tests.conftest import OPS_TOKEN, make_settings
from tests.helpers import record_trigger
from tests.upstreams import Sage

AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}
HOST = socket.gethostname()
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


LEDGER_ACCOUNTS = "/v3.1/ledger_accounts"


@pytest.fixture
async def ops(
    database_url: str, redis_url: str, mapping_file: Path, queue: ArqRedis, sage: Sage
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


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_the_mapping_in_force_is_shown(ops: AsyncClient, mapping_file: Path) -> None:
    body = (await ops.get("/ops/mappings", headers=AUTH)).json()

    loaded_at = body.pop("loaded_at")
    assert body == {
        "id": 1,
        "sha256": sha256(mapping_file),
        "source": str(mapping_file),
        "loaded_by": f"api start on {HOST}",
        "rules": [
            {"match": {"element_id": 101}, "ledger_account_id": "la-services"},
            {
                "match": {"sku": "WID-01"},
                "ledger_account_id": "la-goods",
                "tax_rate_id": "GB_STANDARD",
            },
            {
                "match": {"product_type": "subscription"},
                "ledger_account_id": "la-subscriptions",
                "tax_rate_id": "GB_LOWER",
            },
            {"match": {"sku": "BOOK-1"}, "ledger_account_id": "la-goods", "tax_rate_id": "GB_ZERO"},
        ],
        "defaults": {"tax_rate_id": "GB_STANDARD"},
        "last_refusal": None,
    }
    assert datetime.fromisoformat(loaded_at) > datetime.now(UTC) - timedelta(minutes=1)


async def test_an_edit_naming_ids_sage_lacks_is_refused_and_the_old_mapping_stays(
    ops: AsyncClient, mapping_file: Path
) -> None:
    before = (await ops.get("/ops/mappings", headers=AUTH)).json()
    mapping_file.write_text(UNKNOWN_LEDGER)

    response = await ops.post("/ops/mappings/reload", headers=AUTH)

    problems = [
        "line 7: rule 'match: {sku: MYST-1}': ledger_account_id 'la-nope' is not a sales ledger "
        "account in Sage",
        "line 8: rule 'match: {sku: MYST-1}': tax_rate_id 'GB_NOPE' is not in Sage",
    ]
    assert response.status_code == 422
    assert response.json() == {
        "error": "mapping_refused",
        "detail": "the mapping was refused and the previous one stays in force: "
        + "; ".join(problems),
    }
    after = (await ops.get("/ops/mappings", headers=AUTH)).json()
    refusal = after.pop("last_refusal")
    assert before.pop("last_refusal") is None
    assert after == before and after["id"] == 1
    assert refusal.pop("refused_at")
    assert refusal == {
        "sha256": sha256(mapping_file),
        "source": str(mapping_file),
        "problems": problems,
        "refused_by": f"ops API on {HOST}",
    }
    ready = (await ops.get("/readyz")).json()
    assert ready["mapping_sha256"] == before["sha256"]
    assert ready["warnings"] == {
        "mapping": f"the last edit was refused (ops API on {HOST}), the previous mapping is in "
        "force: " + "; ".join(problems)
    }


async def test_a_second_rules_key_is_refused_naming_both_lines(
    ops: AsyncClient, mapping_file: Path
) -> None:
    """Issue 14, bug 4: YAML kept only the last `rules:`, so pasted rules replaced the others."""
    mapping_file.write_text(
        mapping_file.read_text()
        + "rules:\n  - match: {sku: MYST-1}\n    ledger_account_id: la-goods\n"
    )

    response = await ops.post("/ops/mappings/reload", headers=AUTH)

    assert response.status_code == 422
    assert response.json()["detail"] == (
        "the mapping was refused and the previous one stays in force: line 16: duplicate key "
        "'rules' (first on line 4): YAML keeps only the last one and silently drops the others; "
        "keep one and put everything under it"
    )
    shown = (await ops.get("/ops/mappings", headers=AUTH)).json()
    assert (shown["id"], len(shown["rules"])) == (1, 4)


async def test_a_reload_stores_a_new_version_only_when_the_file_changed(
    ops: AsyncClient, mapping_file: Path
) -> None:
    same = await ops.post("/ops/mappings/reload", headers=AUTH)
    mapping_file.write_text(
        mapping_file.read_text() + "  - match: {sku: NEW-1}\n    ledger_account_id: la-goods\n"
    )
    changed = await ops.post("/ops/mappings/reload", headers=AUTH)
    shown = await ops.get("/ops/mappings", headers=AUTH)

    assert (same.status_code, same.json()["id"], same.json()["loaded_by"]) == (
        200,
        1,
        f"api start on {HOST}",
    )
    assert changed.status_code == 200
    assert changed.json() == shown.json()
    assert (shown.json()["id"], shown.json()["loaded_by"]) == (2, f"ops API on {HOST}")
    assert shown.json()["sha256"] == sha256(mapping_file)
    assert shown.json()["rules"][-1] == {"match": {"sku": "NEW-1"}, "ledger_account_id": "la-goods"}


async def test_a_refusal_seen_by_another_process_is_shown_until_a_load_succeeds(
    ops: AsyncClient, mapping_file: Path, sessionmaker: Maker, tmp_path: Path
) -> None:
    """The worker's watcher, on another host with a file of its own, refuses an edit: the API
    shows it; a good load anywhere clears it."""
    worker_file = tmp_path / "worker-host.yaml"
    worker_file.write_text(mapping_file.read_text())
    worker = Mappings.create(worker_file, sessionmaker, "worker")
    await worker.start(None)
    worker_file.write_text("version: 1\nrules:\n  - match: {sku: A}\n    ledger: x\n")

    assert await worker.pick_up_edit(None) is None
    refused = (await ops.get("/ops/mappings", headers=AUTH)).json()
    mapping_file.write_text(mapping_file.read_text() + "# a comment\n")
    assert (await ops.post("/ops/mappings/reload", headers=AUTH)).status_code == 200
    cleared = (await ops.get("/ops/mappings", headers=AUTH)).json()

    assert refused["id"] == 1
    assert refused["last_refusal"]["refused_by"] == f"file change seen by worker on {HOST}"
    assert refused["last_refusal"]["source"] == str(worker_file)
    assert refused["last_refusal"]["problems"] == [
        "line 3: rule 'match: {sku: A}': ledger_account_id: Field required",
        "line 4: rule 'match: {sku: A}': ledger: Extra inputs are not permitted",
    ]
    assert (cleared["id"], cleared["last_refusal"]) == (2, None)


async def test_a_schema_error_is_refused_with_its_line(
    ops: AsyncClient, mapping_file: Path
) -> None:
    mapping_file.write_text("version: 1\nrules:\n  - match: {sku: A}\n    ledger: x\n")

    response = await ops.post("/ops/mappings/reload", headers=AUTH)

    assert response.status_code == 422
    assert (
        "line 3: rule 'match: {sku: A}': ledger_account_id: Field required"
        in (response.json()["detail"])
    )


async def test_when_sage_cannot_be_asked_the_reload_is_refused(
    ops: AsyncClient, mapping_file: Path, sage: Sage
) -> None:
    sage.faults.fail_next("GET", LEDGER_ACCOUNTS, status=503)
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
    database_url: str, redis_url: str, mapping_file: Path, sage: Sage, sessionmaker: Maker
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
    stored = Mappings.create(mapping_file, sessionmaker, "test")
    assert await stored.newest_id() is None
    refusal = await stored.last_refusal()
    assert refusal is not None and refusal.refused_by == f"api start on {HOST}"


async def test_start_up_goes_on_when_sage_is_unreachable(
    database_url: str, redis_url: str, mapping_file: Path, sage: Sage
) -> None:
    sage.faults.disconnect_next("GET", LEDGER_ACCOUNTS)
    settings = make_settings(
        database_url=database_url,
        redis_url=redis_url,
        ledger_mappings_path=mapping_file,
        mapping_check_on_start=True,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert len((await app.state.mapping.mapping()).file.rules) == 4


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

    assert (after["id"], after["sha256"]) == (2, sha256(mapping_file))
    assert after["loaded_by"] == f"file change seen by api on {HOST}"
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
    assert after["last_refusal"]["refused_by"] == f"file change seen by api on {HOST}"
    assert any("la-nope" in p for p in after["last_refusal"]["problems"])


async def test_every_problem_is_named_at_once_the_ids_of_the_valid_rules_too(
    ops: AsyncClient, mapping_file: Path
) -> None:
    mapping_file.write_text(
        "version: 1\n"
        "defaults: {tax_rate_id: GB_STANDARD}\n"
        "rules:\n"
        "  - match: {sku: Wid-01}   # the widget\n"
        "    ledger_account_id: la-nope\n"
        "  - match:\n"
        "      sku: WID-01\n"
        "    ledger_account_id: ''\n"
        "  - match: {sku: wid-01}\n"
        "    ledger_account_id: la-goods\n"
    )

    response = await ops.post("/ops/mappings/reload", headers=AUTH)

    refusal = (await ops.get("/ops/mappings", headers=AUTH)).json()["last_refusal"]
    assert response.status_code == 422
    assert refusal["problems"] == [
        "line 5: rule 'match: {sku: Wid-01}': ledger_account_id 'la-nope' is not a sales ledger "
        "account in Sage",
        "line 8: rule 'match: sku: WID-01': ledger_account_id: String should have at least 1 "
        "character",
        "line 9: rule 'match: {sku: wid-01}': matches sku 'wid-01' like the rule on line 4 "
        "('match: {sku: Wid-01}') (compared ignoring case): keep one",
    ]


async def test_a_deleted_mapping_file_is_logged_and_shown_by_readyz_until_it_is_back(
    ops: AsyncClient, mapping_file: Path, queue: ArqRedis
) -> None:
    await queue.set(HEARTBEAT_KEY, b"alive", ex=60)
    kept = mapping_file.read_text()
    with capture_logs() as logs:
        mapping_file.unlink()
        await asyncio.sleep(0.5)  # the API's watcher looks every 0.1 s here
        missing = await ops.get("/readyz")
        mapping_file.write_text(kept)
        await asyncio.sleep(0.5)
        back = await ops.get("/readyz")

    assert missing.status_code == 200  # the version in force still invoices
    assert missing.json()["warnings"] == {
        "mapping_file": f"{mapping_file}: cannot read the file: No such file or directory; "
        "version 1 stays in force, restore the file to edit the mapping"
    }
    assert (back.status_code, back.json()["warnings"]) == (200, {})
    # Logged once while missing (the tests log at WARNING: the info that it is back is not seen).
    seen = [(e["event"], e.get("problem")) for e in logs if e["event"].startswith("mapping.file")]
    assert seen == [("mapping.file_unreadable", "cannot read the file: No such file or directory")]


async def test_a_start_without_the_file_uses_the_version_in_force(
    ops: AsyncClient, sessionmaker: Maker, tmp_path: Path
) -> None:
    elsewhere = Mappings.create(tmp_path / "gone.yaml", sessionmaker, "worker")

    current = await elsewhere.start(None)

    assert current.id == 1
    assert elsewhere.file_problem == "cannot read the file: No such file or directory"
