"""Scenario 2 — worker killed: SIGKILL the worker every few seconds while deals flow, and start
it again at once. Pass: 0 lost, 0 duplicates, and every orphaned event (one the killed worker
held a lease on) picked up again — claimed anew or finished — within 60 s of the kill."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from reliability.common import TERMINAL, Result, deals_at_the_trigger, quiet, settle, verdict
from reliability.driver import Answer, Hook, Sender
from reliability.stack import Stack

PICKUP_LIMIT_S = 60.0
VICTIM = "worker-0"


@dataclass
class Orphan:
    event_id: int
    lease: Any
    killed_at: float
    picked_up_after: float | None = None


@dataclass
class Killer:
    """Kills while the run is in full flow: until 90 % of the deals have ended (or max_kills),
    so the last orphans recover undisturbed rather than being killed again and again."""

    stack: Stack
    interval: float
    max_kills: int
    deal_ids: list[int]
    orphans: list[Orphan] = field(default_factory=list)
    kills: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while self.kills < self.max_kills and not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=self.interval)
                return
            except TimeoutError:
                pass
            if await self._ended_fraction() >= 0.9:
                return
            await self.kill_once()

    async def _ended_fraction(self) -> float:
        events = await self.stack.db.events(self.deal_ids)
        ended = sum(1 for e in events.values() if e["state"] in TERMINAL)
        return ended / max(1, len(self.deal_ids))

    async def kill_once(self) -> None:
        """Kill when the worker holds something (waiting at most one interval for that)."""
        deadline = time.monotonic() + self.interval
        leased = await _leased(self.stack)
        while not leased and time.monotonic() < deadline and not self.stop.is_set():
            await asyncio.sleep(0.05)
            leased = await _leased(self.stack)
        if not leased:
            return  # idle or still starting: killing it now would prove nothing
        killed_at = time.monotonic()
        self.stack.bridge.kill_and_restart(VICTIM)
        self.kills += 1
        self.orphans.extend(Orphan(eid, lease, killed_at) for eid, lease in leased)


async def _leased(stack: Stack) -> list[tuple[int, Any]]:
    """Events a worker holds right now (with one worker, all of them are the victim's)."""
    query = text(
        "SELECT id, lease_until FROM inbox_events WHERE lease_until > now() "
        "AND state IN ('pending', 'retrying')"
    )
    async with stack.db.engine.connect() as conn:
        return [(r[0], r[1]) for r in (await conn.execute(query)).all()]


async def watch_pickups(stack: Stack, killer: Killer, done: asyncio.Event) -> None:
    """Poll the orphans' rows: picked up = the lease changed (re-claimed) or was released."""
    while not done.is_set() or any(o.picked_up_after is None for o in killer.orphans):
        waiting = [o for o in killer.orphans if o.picked_up_after is None]
        if waiting:
            ids = [o.event_id for o in waiting]
            query = text("SELECT id, lease_until FROM inbox_events WHERE id = ANY(:ids)")
            async with stack.db.engine.connect() as conn:
                now_leases: dict[int, Any] = dict((await conn.execute(query, {"ids": ids})).all())
            now = time.monotonic()
            for o in waiting:
                if now_leases.get(o.event_id) != o.lease:
                    o.picked_up_after = now - o.killed_at
        if done.is_set() and not waiting:
            return
        await asyncio.sleep(0.5)


async def run(
    stack: Stack,
    *,
    deals: int,
    first_id: int,
    kill_every: float = 5.0,
    max_kills: int = 40,
    settle_timeout: float = 600,
    spread_s: float = 0.0,
) -> Result:
    result = Result("2-worker-killed", "Worker SIGKILLed every few seconds and restarted")
    started = time.monotonic()
    deal_ids, hooks = await deals_at_the_trigger(stack, first_id, deals)
    exits_before = len(stack.bridge.unexpected_exits)
    killer = Killer(stack, kill_every, max_kills, deal_ids)
    all_done = asyncio.Event()
    killing = asyncio.create_task(killer.run())
    watching = asyncio.create_task(watch_pickups(stack, killer, all_done))
    sender = Sender(stack.bridge.webhook_url)
    try:
        # A steady trickle spread over `spread_s` (as deals arrive through a working day, only
        # faster), so the kills land all through the run rather than on one burst.
        answers = await _trickle(sender, hooks, spread_s)
        settled, waited, states = await settle(stack, deal_ids, timeout=settle_timeout)
    finally:
        killer.stop.set()
        await killing
        all_done.set()
        await sender.aclose()
    try:
        await asyncio.wait_for(watching, timeout=PICKUP_LIMIT_S * 3)
    except TimeoutError:
        result.notes.append("some orphans were never picked up (watch timed out)")
    await quiet(2)
    v = await verdict(stack, first_id, deals)
    pickups = [o.picked_up_after for o in killer.orphans if o.picked_up_after is not None]
    never = sum(1 for o in killer.orphans if o.picked_up_after is None)
    worst = max(pickups, default=0.0)
    result.counts = {
        "deals": deals,
        "kills": killer.kills,
        "worker_starts": stack.bridge.starts.get(VICTIM, 0),
        "orphaned_events": len(killer.orphans),
        "orphans_never_picked_up": never,
        "orphan_pickup_max_s": round(worst, 1),
        "orphan_pickup_mean_s": round(sum(pickups) / len(pickups), 1) if pickups else 0,
        "non_2xx": sum(1 for a in answers if not a.acknowledged),
        "invoiced": v.invoiced,
        "lost": len(v.missing),
        "duplicate_invoices": v.duplicates,
        "max_tasks_per_deal": v.max_tasks,
        "event_states": dict(states),
        "settle_s": round(waited, 1),
        "unexpected_exits": len(stack.bridge.unexpected_exits) - exits_before,
    }
    result.check("at least one kill landed on held events", len(killer.orphans) > 0)
    result.check("settled", settled)
    result.check("0 lost", not v.missing)
    result.check("0 duplicates", v.duplicates == 0)
    result.check("at most 1 task per deal", v.max_tasks <= 1)
    result.check("every orphan picked up again", never == 0)
    result.check(f"every orphan picked up within {PICKUP_LIMIT_S:.0f}s", worst <= PICKUP_LIMIT_S)
    return result.finish(started)


async def _trickle(sender: Sender, hooks: list[Hook], spread_s: float) -> list[Answer]:
    if spread_s <= 0:
        return await sender.send_all(hooks, concurrency=4)
    pause = spread_s / max(1, len(hooks))
    answers = []
    for hook in hooks:  # bounded by the list
        answers.append(await sender.send(hook))
        await asyncio.sleep(pause)
    return answers
