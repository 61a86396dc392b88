"""The first hour, as a new user lives it: `sagebridge run` in the sandbox, stopped and started
again, the CLI beside it, a busy port, and `sagebridge reset`. Real processes throughout."""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.cli import migrate_database
from app.db import create_engine, create_sessionmaker
from app.inbox.models import InboxEvent
from app.settings import Settings
from tests.conftest import make_settings
from tests.helpers import record_trigger
from tests.processes import clean_env, command, free_port, running, wait_for

SANDBOX_OPS_TOKEN = "sandbox-ops-token-for-127.0.0.1-only"
MOVE = {"status_id": 7100003}  # the seed's Raise Invoice stage
INVOICE_NUMBER_FIELD = 6000001
CREDENTIALS = {
    "KOMMO_BASE_URL": "http://127.0.0.1:9",
    "KOMMO_ACCESS_TOKEN": "kommo-token-for-first-hour-tests",
    "KOMMO_ACCOUNT_ID": "29000001",
    "KOMMO_WEBHOOK_SECRET": "first-hour-webhook-secret",
    "KOMMO_TRIGGER_PIPELINE_ID": "500",
    "KOMMO_TRIGGER_STATUS_ID": "503",
    "KOMMO_INVOICE_NUMBER_FIELD_ID": "900",
    "KOMMO_INVOICE_LINK_FIELD_ID": "901",
    "SAGE_BASE_URL": "http://127.0.0.1:9/v3.1",
    "SAGE_ACCESS_TOKEN": "sage-token-for-first-hour-tests",
    "SAGE_BUSINESS_ID": "b" * 32,
}


def sandbox_env(tmp_path: Path) -> tuple[dict[str, str], dict[str, int]]:
    ports = {"API_PORT": free_port(), "SANDBOX_SAGE_PORT": free_port()}
    ports["SANDBOX_KOMMO_PORT"] = free_port()
    env = clean_env(tmp_path, LOG_JSON="true", **{k: str(v) for k, v in ports.items()})
    return env, ports


def log_events(log: Path) -> dict[str, dict[str, Any]]:
    """The run's JSON log lines by event name (the last of each)."""
    events = {}
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            events[entry["event"]] = entry
    return events


async def invoice_on_deal(kommo: str, deal: int, timeout: float = 30) -> str:
    """The invoice number the bridge wrote back to the sandbox deal, once it has."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=kommo) as http:
        await http.post(f"/sandbox/leads/{deal}/move", json=MOVE)
        while time.monotonic() < deadline:
            await asyncio.sleep(1)  # the bridge shares this token's 7 requests/s
            lead = await http.get(f"/api/v4/leads/{deal}", headers=_kommo_auth())
            if lead.status_code != 200:
                continue
            for value in lead.json().get("custom_fields_values") or []:
                if value["field_id"] == INVOICE_NUMBER_FIELD:
                    return str(value["values"][0]["value"])
    raise TimeoutError(f"deal {deal} shows no invoice")


def _kommo_auth() -> dict[str, str]:
    return {"Authorization": "Bearer sandbox-kommo-token"}


async def logged_curl(line: str) -> httpx.Response:
    """Run a `curl -H '…' URL` the log printed, as printed."""
    words = shlex.split(line)
    assert words[:2] == ["curl", "-H"], line
    name, _, value = words[2].partition(": ")
    async with httpx.AsyncClient() as http:
        return await http.get(words[3], headers={name: value})


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), timeout=60)


async def test_a_restarted_run_carries_on_with_its_sandbox_and_the_cli_reaches_it(
    tmp_path: Path,
) -> None:
    env, ports = sandbox_env(tmp_path)
    api = f"http://127.0.0.1:{ports['API_PORT']}"
    kommo = f"http://127.0.0.1:{ports['SANDBOX_KOMMO_PORT']}"
    data = tmp_path / "data"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"

    async with running(env, first_log) as proc:
        await wait_for(f"{api}/healthz", proc)
        pid = proc.pid
        run_file = json.loads((data / "run.json").read_text())
        run_file_mode = stat.S_IMODE((data / "run.json").stat().st_mode)
        first_invoice = await invoice_on_deal(kommo, 3000001)
        replay = await command("events", "replay", "1", env=env)
        reset = await command("reset", "--yes", env=env)
        second_run = await command("run", env=env)
        first_rc = await stop(proc)
    run_file_left = (data / "run.json").exists()

    async with running(env, second_log) as proc:
        await wait_for(f"{api}/healthz", proc)
        second_invoice = await invoice_on_deal(kommo, 3000002)
        ready = log_events(second_log)["sandbox.ready"]
        invoices = await logged_curl(ready["see_invoices"])
        await asyncio.sleep(1)  # past the bridge's burst on the Kommo token's 7 requests/s
        deal = await logged_curl(ready["see_deal"])
        sync_log = await logged_curl(ready["see_sync_log"])
        second_rc = await stop(proc)

    first, second = log_events(first_log), log_events(second_log)
    assert (first_rc, second_rc) == (0, 0), second_log.read_text()[-3000:]
    assert (run_file["pid"], run_file_mode, run_file_left) == (pid, 0o600, False)
    assert run_file["redis_url"].startswith("unix://:")
    assert replay == (
        0,
        f"event 1 is pending again (deal 3000001): queued on the embedded Redis of `sagebridge "
        f"run` (pid {pid}) for the running worker\n",
    )
    assert reset[0] == 2 and reset[1].endswith(
        f"sagebridge: stop `sagebridge run` (pid {pid}) first: it is using this data\n"
    )
    assert (
        second_run[0] == 2
        and f"`sagebridge run` (pid {pid}) already uses DATA_DIR" in (second_run[1])
    )
    assert (first["sandbox.state"]["kept"], second["sandbox.state"]["kept"]) == ("new", "restored")
    # The invoice raised before the restart is still in the sandbox Sage, and its numbering
    # goes on from there: both sides kept their data.
    assert (first_invoice, second_invoice) == ("SI-1", "SI-2")
    numbers = sorted(item["displayed_as"] for item in invoices.json()["$items"])
    assert (invoices.status_code, numbers) == (200, ["SI-1", "SI-2"])
    assert (deal.status_code, deal.json()["id"]) == (200, 3000001)
    # Event 1 was replayed after it raised SI-1: run again, it found the deal's lines matching
    # the invoice (the change check) and posted nothing.
    assert sync_log.status_code == 200 and sync_log.json()["events_by_state"] == {"unchanged": 1}
    assert SANDBOX_OPS_TOKEN in ready["see_sync_log"]
    assert stat.S_IMODE((data / "sandbox.json").stat().st_mode) == 0o600


async def events_in(database_url: str) -> int | None:
    """How many events the database holds; None when the bridge's tables are gone."""
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            return int(await session.scalar(select(func.count()).select_from(InboxEvent)) or 0)
    except Exception:
        return None
    finally:
        await engine.dispose()


async def test_the_bridges_data_without_the_sandboxs_is_refused_until_a_reset(
    tmp_path: Path,
) -> None:
    """A database from before the sandbox kept its records (or a deleted sandbox.json): run
    refuses rather than answer "already invoiced" for an invoice the sandbox Sage lacks."""
    env, _ = sandbox_env(tmp_path)
    data = tmp_path / "data"
    settings = make_settings(data_dir=data, database_url=None)
    await asyncio.to_thread(migrate_database, settings)
    maker = create_sessionmaker(create_engine(settings.resolved_database_url))
    await record_trigger(maker, settings, 3000001)

    run_rc, refused = await command("run", env=env)
    declined = await command("reset", env=env, stdin=b"n\n")
    held_after_no = await events_in(settings.resolved_database_url)
    reset = await command("reset", "--yes", env=env)

    assert run_rc == 2
    assert refused.splitlines()[-1] == (
        "sagebridge: the bridge's database remembers 1 event(s) but the sandbox's saved Kommo "
        f"and Sage records ({data / 'sandbox.json'}) are missing: started from the seed, the "
        "two would disagree (a deal 'already invoiced' with no invoice in the sandbox Sage). Run "
        "`sagebridge reset` (`make reset` in the checkout) to start both afresh, or set DATA_DIR "
        "to another directory"
    )
    assert "Traceback" not in refused
    deletes = (
        "This deletes:\n"
        f"  - the bridge's tables in sqlite+aiosqlite:///{data / 'sagebridge.db'} "
        "(1 event(s), 0 invoice(s))\n"
        f"  - the embedded Redis's data ({data / 'redis'})\n"
        f"  - the sandbox Kommo's and Sage's saved records ({data / 'sandbox.json'})\n"
    )
    assert declined == (1, deletes + "Delete all of it? [y/N]: Nothing was deleted.\n")
    assert held_after_no == 1
    assert reset == (
        0,
        deletes + "✓ deleted: the next `sagebridge run` starts the bridge and the sandbox from "
        "the seed\n",
    )
    assert await events_in(settings.resolved_database_url) is None
    assert not (data / "redis").exists()


async def test_reset_outside_the_sandbox_needs_saying_so(tmp_path: Path) -> None:
    env = clean_env(tmp_path, **CREDENTIALS)
    settings = Settings(data_dir=tmp_path / "data")
    await asyncio.to_thread(migrate_database, settings)

    refused = await command("reset", "--yes", env=env)
    meant = await command("reset", "--yes", "--outside-sandbox", env=env)

    assert refused == (
        2,
        "sagebridge: Kommo/Sage credentials are configured, so this database records which "
        "real deals were invoiced: reset it only with --outside-sandbox, if you mean it\n",
    )
    assert meant[0] == 0 and meant[1].endswith(
        "✓ deleted: the next `sagebridge run` starts with an empty database\n"
    )
    assert "sandbox.json" not in meant[1]
    assert await events_in(settings.resolved_database_url) is None


@pytest.mark.parametrize(
    ("busy", "args"),
    [("API_PORT", ("run",)), ("SANDBOX_KOMMO_PORT", ("run",)), ("API_PORT", ("api", "--sandbox"))],
)
async def test_a_busy_port_is_named_with_the_variable_that_moves_it(
    tmp_path: Path, busy: str, args: tuple[str, ...]
) -> None:
    env, ports = sandbox_env(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports[busy]))
        holder.listen()
        rc, output = await command(*args, env=env)

    assert rc == 2
    assert output.splitlines()[-1] == (
        f"sagebridge: port {ports[busy]} on 127.0.0.1 ({busy}) is in use: stop what listens "
        f"there, or set {busy} to a free port"
    )
    assert "Traceback" not in output
    assert not (tmp_path / "data" / "redis").exists()  # refused before anything started


async def test_two_settings_naming_one_port_are_refused(tmp_path: Path) -> None:
    env, ports = sandbox_env(tmp_path)
    env["SANDBOX_SAGE_PORT"] = str(ports["API_PORT"])

    rc, output = await command("run", env=env)

    assert (rc, output.splitlines()[-1]) == (
        2,
        f"sagebridge: SANDBOX_SAGE_PORT and API_PORT are both {ports['API_PORT']}: give each "
        "its own port",
    )
