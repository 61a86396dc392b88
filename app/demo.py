"""The demo a newcomer gets from `make run` with no credentials: the sandbox Sage and Kommo,
seeded, with Kommo's webhook pointing at this bridge.

The simulators' records are saved in DATA_DIR beside the bridge's database (every few seconds
and at stop) and restored at start, so both carry on together: a deal the bridge remembers as
invoiced has its invoice in the sandbox Sage. `sagebridge reset` starts both afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from app.inbox.repository import InboxRepository
from app.runtime import Database
from app.settings import Settings
from sandbox import snapshot
from sandbox.defaults import SANDBOX_DEFAULTS
from sandbox.kommo.state import KommoState
from sandbox.runner import RunningSandbox, run_sandbox
from sandbox.sage.state import SageState
from sandbox.seed import (
    KOMMO_TOKEN,
    SAGE_TOKEN,
    demo_kommo_state,
    demo_sage_state,
    register_webhook,
)

log = structlog.get_logger(__name__)
SAVE_EVERY_SECONDS = 2.0
WEBHOOK_PATH = "/webhooks/kommo/"
# A deal moved between stages, and a deal deleted (a cancelled invoice, see CANCEL_POLICY).
HOOK_EVENTS = ("status_lead", "delete_lead")


class SandboxOutOfStep(Exception):
    """The bridge's database remembers work the simulators' saved records do not hold."""


def state_file(settings: Settings) -> Path:
    return settings.data_dir / "sandbox.json"


@dataclass(frozen=True)
class SandboxStates:
    sage: SageState
    kommo: KommoState


@asynccontextmanager
async def serve_demo_sandbox(
    settings: Settings, states: SandboxStates
) -> AsyncIterator[RunningSandbox]:
    sage_state, kommo_state = states.sage, states.kommo
    async with run_sandbox(
        host="127.0.0.1",
        sage_port=settings.sandbox_sage_port,
        kommo_port=settings.sandbox_kommo_port,
        sage_state=sage_state,
        kommo_state=kommo_state,
    ) as sandbox:
        secret = settings.secret("kommo_webhook_secret")
        _subscribe(kommo_state, f"http://127.0.0.1:{settings.api_port}{WEBHOOK_PATH}{secret}")
        _log_ready(sandbox, settings)
        saver = _Saver(state_file(settings), sage_state, kommo_state)
        task = asyncio.create_task(saver.keep_saving())
        try:
            yield sandbox
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await saver.save_quietly()


async def load_states(settings: Settings) -> SandboxStates:
    """The saved records, or the seed when the bridge's database is as new as the seed;
    SandboxOutOfStep when the database remembers work the records do not hold."""
    path = state_file(settings)
    try:
        sage, kommo = snapshot.load(path.read_bytes())
    except FileNotFoundError:
        missing = "are missing"
    except (OSError, snapshot.SnapshotError) as exc:
        missing = f"cannot be read ({exc})"
    else:
        log.info(
            "sandbox.state",
            kept="restored",
            file=str(path),
            detail="the sandbox Kommo and Sage carry on from the last run, like the bridge's "
            "database; `make reset` (sagebridge reset) starts both from the seed",
        )
        return SandboxStates(sage, kommo)
    events = await _bridge_events(settings)
    if events:
        raise SandboxOutOfStep(
            f"the bridge's database remembers {events} event(s) but the sandbox's saved Kommo "
            f"and Sage records ({path}) {missing}: started from the seed, the two would "
            "disagree (a deal 'already invoiced' with no invoice in the sandbox Sage). Run "
            "`sagebridge reset` (`make reset` in the checkout) to start both afresh, or set "
            "DATA_DIR to another directory"
        )
    log.info(
        "sandbox.state",
        kept="new",
        file=str(path),
        detail="the sandbox Kommo and Sage start from the seed, the bridge's database is empty; "
        "both are kept across restarts (`make reset`, i.e. sagebridge reset, starts both afresh)",
    )
    return SandboxStates(demo_sage_state(), demo_kommo_state())


async def _bridge_events(settings: Settings) -> int:
    db = Database.open(settings)
    try:
        async with db.sessionmaker() as session:
            return sum((await InboxRepository(session).count_by_state()).values())
    finally:
        await db.close()


def _subscribe(state: KommoState, hook: str) -> None:
    """One webhook to this bridge, for the events it acts on: a restored one to another
    address (API_PORT changed, or the webhook secret) or for other events is replaced."""
    with state.lock:
        if any(
            h.destination == hook and tuple(h.settings) == HOOK_EVENTS
            for h in state.webhooks.values()
        ):
            return
        for old in [h for h in state.webhooks.values() if WEBHOOK_PATH in h.destination]:
            del state.webhooks[old.id]
        register_webhook(state, hook, HOOK_EVENTS)


def _log_ready(sandbox: RunningSandbox, settings: Settings) -> None:
    """What to try first. The tokens shown are the sandbox's published ones (logging lets
    exactly those through); an OPS_API_TOKEN of the user's own is never printed."""
    api = f"http://127.0.0.1:{settings.api_port}"
    ops = settings.secret("ops_api_token")
    ops_shown = ops if ops == SANDBOX_DEFAULTS["ops_api_token"] else "$OPS_API_TOKEN"
    log.info(
        "sandbox.ready",
        kommo=sandbox.kommo_url,
        sage=sandbox.sage_api_url,
        try_it=f"curl -X POST {sandbox.kommo_url}/sandbox/leads/3000001/move "
        "-H 'Content-Type: application/json' -d '{\"status_id\": 7100003}'",
        see_deal=f"curl -H 'Authorization: Bearer {KOMMO_TOKEN}' "
        f"{sandbox.kommo_url}/api/v4/leads/3000001",
        see_invoices=f"curl -H 'Authorization: Bearer {SAGE_TOKEN}' "
        f"'{sandbox.sage_api_url}/sales_invoices?attributes=all'",
        see_sync_log=f"curl -H 'Authorization: Bearer {ops_shown}' "
        f"'{api}/ops/sync-log?deal_id=3000001'",
    )


class _Saver:
    """Writes the simulators' records when they changed: a hard kill loses a few seconds."""

    def __init__(self, path: Path, sage: SageState, kommo: KommoState) -> None:
        self._path, self._sage, self._kommo = path, sage, kommo
        self._written: bytes | None = None

    async def keep_saving(self) -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY_SECONDS)
            await self.save_quietly()

    async def save_quietly(self) -> None:
        try:
            await self.save()
        except OSError as exc:
            log.warning("sandbox.state_not_saved", file=str(self._path), error=str(exc))

    async def save(self) -> None:
        data = await asyncio.to_thread(snapshot.dump, self._sage, self._kommo)
        if data != self._written:
            await asyncio.to_thread(snapshot.write, self._path, data)
            self._written = data
