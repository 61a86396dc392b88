"""The `sagebridge` command line, run as a real process against the sandbox upstreams."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.inbox.models import EventState, InboxEvent
from app.mapping import parse_mapping
from app.models import MappingRefusal, MappingVersion
from app.settings import Settings
from sandbox.runner import run_sandbox
from sandbox.seed import SAGE_BUSINESS_ID
from tests.helpers import record_trigger

ROOT = Path(__file__).resolve().parent.parent
Maker = async_sessionmaker[AsyncSession]


async def sagebridge(*args: str, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, out.decode()


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMMO_", "SAGE_"))}
    env.update(LOG_LEVEL="WARNING", **extra)
    return env


def upstream_env(kommo_url: str, sage_api_url: str) -> dict[str, str]:
    return {
        "KOMMO_BASE_URL": kommo_url,
        "KOMMO_ACCESS_TOKEN": "sandbox-kommo-token",
        "KOMMO_ACCOUNT_ID": "31000001",
        "KOMMO_WEBHOOK_SECRET": "x" * 20,
        "KOMMO_TRIGGER_PIPELINE_ID": "7000001",
        "KOMMO_TRIGGER_STATUS_ID": "7100003",
        "KOMMO_INVOICE_NUMBER_FIELD_ID": "6000001",
        "KOMMO_INVOICE_LINK_FIELD_ID": "6000002",
        "SAGE_BASE_URL": sage_api_url,
        "SAGE_ACCESS_TOKEN": "sandbox-sage-token",
        "SAGE_BUSINESS_ID": SAGE_BUSINESS_ID,
    }


async def test_mappings_check_and_suggest_against_the_sandbox(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\ndefaults: {tax_rate_id: GB_STANDARD}\nrules:\n"
        "  - match: {sku: WID-01}\n    ledger_account_id: 9a0e2f1c4b5d4e6f8a7b6c5d4e3f7000\n"
    )
    async with run_sandbox() as sb:
        env = cli_env(**upstream_env(sb.kommo_url, sb.sage_api_url))
        good_rc, good_out = await sagebridge("mappings", "check", env=env)
        bad_rc, bad_out = await sagebridge(
            "mappings", "check", env={**env, "LEDGER_MAPPINGS_PATH": str(bad)}
        )
        listing_rc, listing = await sagebridge("mappings", "suggest", env=env)
        yaml_rc, skeleton = await sagebridge("mappings", "suggest", "--yaml", env=env)

    assert (good_rc, bad_rc, listing_rc, yaml_rc) == (0, 1, 0, 0)
    assert "is valid and every id exists in Sage" in good_out
    # 7000 "Bank charges" exists but is not visible in sales: Sage would refuse the line.
    assert f"{bad}: 1 problem(s)\n✗ line 5: rule 'match: {{sku: WID-01}}': ledger_account_id" in (
        bad_out
    )
    assert "is not a sales ledger account in Sage" in bad_out
    assert "Sales Type A" in listing and "GB_STANDARD" in listing
    assert "element 4200004  sku=MYST-1  type=other  Mystery box" in listing
    assert "Consulting hour" not in listing.split("no rule")[1]  # mapped by element id
    # Pasted under the shipped file's `rules:` (appended: it is the last key), every rule stays.
    shipped = (ROOT / "config" / "ledger_mappings.yaml").read_text()
    pasted = parse_mapping(shipped + skeleton, source="pasted").file.rules
    assert [r.match.model_dump(exclude_none=True) for r in pasted] == [
        {"element_id": 4200001},
        {"sku": "WID-01"},
        {"product_type": "subscription"},
        {"sku": "MYST-1"},
    ]


async def test_mappings_load_puts_the_file_in_force_and_check_stores_nothing(
    tmp_path: Path, sessionmaker: Maker, database_url: str
) -> None:
    shipped = (ROOT / "config" / "ledger_mappings.yaml").read_text()
    doubled = tmp_path / "doubled.yaml"
    doubled.write_text(shipped + "rules:\n  - match: {sku: MYST-1}\n    ledger_account_id: x\n")
    async with run_sandbox() as sb:
        env = cli_env(DATABASE_URL=database_url, **upstream_env(sb.kommo_url, sb.sage_api_url))
        check_rc, _ = await sagebridge("mappings", "check", env=env)
        after_check = await stored_versions(sessionmaker)
        load_rc, loaded = await sagebridge("mappings", "load", env=env)
        again_rc, again = await sagebridge("mappings", "load", env=env)
        bad_rc, refused = await sagebridge(
            "mappings", "load", env={**env, "LEDGER_MAPPINGS_PATH": str(doubled)}
        )

    assert (check_rc, load_rc, again_rc, bad_rc) == (0, 0, 0, 1)
    assert after_check == []
    assert "config/ledger_mappings.yaml is now in force as version 1 (3 rules, sha256 " in loaded
    assert "config/ledger_mappings.yaml was already in force as version 1" in again
    assert "✗ line 26: duplicate key 'rules' (first on line 17)" in refused
    assert "✗ refused: the mapping in force is unchanged" in refused
    assert await stored_versions(sessionmaker) == [(1, "CLI", f"CLI on {socket.gethostname()}")]
    async with sessionmaker() as session:
        refusal = await session.scalar(select(MappingRefusal))
    assert refusal is not None and refusal.source == str(doubled)


async def stored_versions(sessionmaker: Maker) -> list[tuple[int, str, str]]:
    async with sessionmaker() as session:
        rows = await session.scalars(select(MappingVersion).order_by(MappingVersion.id))
        return [(row.id, row.how, row.loaded_by) for row in rows]


async def test_events_list_replay_and_discard(
    sessionmaker: Maker, settings: Settings, database_url: str, redis_url: str
) -> None:
    failed = await record_trigger(sessionmaker, settings, 1)
    pending = await record_trigger(sessionmaker, settings, 2)
    async with sessionmaker() as session:
        await session.execute(
            update(InboxEvent)
            .where(InboxEvent.id == failed)
            .values(state="failed", attempts=4, last_error="sage: 503 four times")
        )
        await session.commit()
    env = cli_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        **upstream_env("http://127.0.0.1:9", "http://127.0.0.1:9/v3.1"),
    )

    list_rc, listing = await sagebridge("events", "list", "--state", "failed", env=env)
    replay_rc, replayed = await sagebridge("events", "replay", str(failed), env=env)
    discard_rc, discarded = await sagebridge(
        "events", "discard", str(pending), "--reason", "invoiced by hand", env=env
    )
    missing_rc, missing = await sagebridge("events", "replay", "999", env=env)

    assert (list_rc, replay_rc, discard_rc, missing_rc) == (0, 0, 0, 1)
    assert "1 event(s) in failed" in listing and "sage: 503 four times" in listing
    assert f"event {failed} is pending again (deal 1)" in replayed
    assert f"event {pending} discarded: invoiced by hand" in discarded
    assert "no event 999" in missing
    async with sessionmaker() as session:
        states = {e.id: e.state for e in (await session.scalars(select(InboxEvent))).all()}
    assert states == {failed: "pending", pending: "discarded"}


async def test_events_commands_say_only_what_happened(
    tmp_path: Path, sessionmaker: Maker, settings: Settings, database_url: str
) -> None:
    """No REDIS_URL and no `sagebridge run` beside it: discard needs no queue and says nothing
    of one; replay says the event was not queued and who will start it."""
    first = await record_trigger(sessionmaker, settings, 1)
    second = await record_trigger(sessionmaker, settings, 2)
    env = cli_env(
        DATABASE_URL=database_url,
        DATA_DIR=str(tmp_path / "data"),
        COLUMNS="200",
        **upstream_env("http://127.0.0.1:9", "http://127.0.0.1:9/v3.1"),
    )
    env.pop("REDIS_URL", None)

    discard_rc, discarded = await sagebridge(
        "events", "discard", str(first), "--reason", "r", env=env
    )
    again_rc, again = await sagebridge("events", "discard", str(first), "--reason", "r", env=env)
    replay_rc, replayed = await sagebridge("events", "replay", str(second), env=env)
    bogus_rc, bogus = await sagebridge("events", "list", "--state", "bogus", env=env)

    assert (discard_rc, discarded) == (0, f"event {first} discarded: r\n")
    assert (again_rc, again) == (1, f"✗ event {first} already ended as discarded\n")
    assert (replay_rc, replayed) == (
        0,
        f"event {second} is pending again (deal 2): not queued (REDIS_URL is not set and no "
        f"`sagebridge run` uses DATA_DIR {tmp_path / 'data'}); a worker's sweeper starts it "
        "within 15 s once a worker runs\n",
    )
    assert bogus_rc == 2
    # The message names every state; the terminal's box may wrap it anywhere.
    states = ", ".join(f"'{state}'" for state in EventState)
    flat = " ".join(bogus.replace("│", " ").split())
    assert f"Invalid value for '--state': Value error, 'bogus' is not one of {states}." in flat
