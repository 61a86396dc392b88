"""Scenario 4 — database down: PostgreSQL stops for 20 s in the middle of a run while webhooks
keep coming. Pass: every webhook answered during the outage is a 5xx (never a 2xx for
something not stored), every acknowledged deal is stored and invoiced afterwards (0 lost), and
after Kommo's retries (re-sent here) every deal is invoiced exactly once."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from reliability.common import Result, deals_at_the_trigger, quiet, settle, verdict
from reliability.driver import Answer, Hook, Sender, percentile
from reliability.infra import PrivatePostgres, TcpProxy
from reliability.stack import Stack

KOMMO_PATIENCE_S = 2.0
RESEND_ROUNDS = 20


class Outage(Protocol):
    name: str

    async def down(self) -> None: ...

    async def up(self) -> None: ...


class StopPostgres:
    """The real thing: `pg_ctl stop -m fast` on the private cluster, `pg_ctl start` after."""

    name = "pg_ctl stop -m fast / start (private cluster)"

    def __init__(self, pg: PrivatePostgres) -> None:
        self.pg = pg

    async def down(self) -> None:
        await asyncio.to_thread(self.pg.stop, "fast")

    async def up(self) -> None:
        await asyncio.to_thread(self.pg.start)


class CutProxy:
    """The bridge reaches PostgreSQL through a TCP proxy: cut drops every connection and
    refuses new ones, as a stopped server does (the shared server itself keeps running)."""

    name = "TCP proxy cut / restored"

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy

    async def down(self) -> None:
        await self.proxy.cut()

    async def up(self) -> None:
        await self.proxy.restore()


async def run(
    stack: Stack,
    *,
    outage: Outage,
    deals: int,
    first_id: int,
    down_for: float = 20.0,
    settle_timeout: float = 600,
) -> Result:
    result = Result("4-database-down", f"Database down {down_for:.0f}s mid-run")
    started = time.monotonic()
    deal_ids, hooks = await deals_at_the_trigger(stack, first_id, deals)
    exits_before = len(stack.bridge.unexpected_exits)
    quarter = max(1, len(hooks) // 4)
    sender = Sender(stack.bridge.webhook_url, timeout=10)
    try:
        await sender.send_all(hooks[:quarter], concurrency=4)
        await outage.down()
        down_at = time.monotonic()
        outage_hooks = hooks[quarter : 3 * quarter]
        unsent = await _send_for(sender, outage_hooks, seconds=down_for)
        up_at = time.monotonic()
        await outage.up()
        up_done = time.monotonic()
        await sender.send_all(unsent + hooks[3 * quarter :], concurrency=4)
        resent = await _kommo_retries(sender, deal_ids)
    finally:
        await sender.aclose()
    during = [a for a in sender.answers if down_at <= a.sent_at and a.sent_at + a.seconds <= up_at]
    settled, waited, states = await settle(stack, deal_ids, timeout=settle_timeout)
    await quiet(2)
    events = await stack.db.events(deal_ids)
    acked = _first_ack(sender.answers)
    acked_not_stored = sorted(d for d in acked if str(d) not in events)
    v = await verdict(stack, first_id, deals)
    acked_lost = sorted(d for d in acked if d in v.missing)
    latencies = [a.seconds for a in during]
    result.counts = {
        "deals": deals,
        "outage": outage.name,
        "outage_s": round(up_at - down_at, 1),
        "restart_s": round(up_done - up_at, 1),
        "webhooks_total": len(sender.answers),
        "during_outage": len(during),
        "during_outage_2xx": sum(1 for a in during if a.acknowledged),
        "during_outage_5xx": sum(1 for a in during if a.status and a.status >= 500),
        "during_outage_no_answer": sum(1 for a in during if a.status is None),
        "outage_answer_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "outage_answer_max_ms": round(max(latencies, default=0) * 1000, 1),
        "resent_after_outage": resent,
        "acknowledged_deals": len(acked),
        "acknowledged_not_stored": len(acked_not_stored),
        "acknowledged_lost": len(acked_lost),
        "invoiced": v.invoiced,
        "duplicate_invoices": v.duplicates,
        "max_tasks_per_deal": v.max_tasks,
        "event_states": dict(states),
        "settle_s": round(waited, 1),
        "unexpected_exits": [n for n, _, _ in stack.bridge.unexpected_exits[exits_before:]],
    }
    result.check("webhooks were sent during the outage", len(during) > 0)
    result.check(
        "every answer during the outage is 5xx (no 2xx)",
        all(a.status is not None and a.status >= 500 for a in during),
    )
    result.check("every acknowledged webhook was stored", not acked_not_stored)
    result.check("0 lost among acknowledged", not acked_lost)
    result.check("settled (after Kommo-style resends)", settled)
    result.check("every deal invoiced exactly once", not v.missing and v.duplicates == 0)
    result.check("at most 1 task per deal", v.max_tasks <= 1)
    result.counts["outage_answers_within_kommo_2s"] = all(
        a.seconds < KOMMO_PATIENCE_S for a in during
    )
    if acked_not_stored:
        result.notes.append(f"2xx but not stored: {acked_not_stored[:20]}")
    return result.finish(started)


async def _send_for(sender: Sender, hooks: list[Hook], *, seconds: float) -> list[Hook]:
    """Send hooks spread over the outage, 2 in flight, until it ends; returns those not sent
    (they go out after the outage, as later moves would)."""
    deadline = time.monotonic() + seconds
    pause = seconds / max(1, len(hooks)) * 2
    queue = list(hooks)

    async def lane() -> None:
        while queue and time.monotonic() < deadline:
            await sender.send(queue.pop(0))
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))

    await asyncio.gather(lane(), lane())
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    return queue


def _first_ack(answers: list[Answer]) -> set[int]:
    return {d for a in answers if a.acknowledged for d in a.hook.trigger}


async def _kommo_retries(sender: Sender, deal_ids: list[int]) -> int:
    """Kommo re-sends what was not acknowledged; so do we, until each deal has a 2xx."""
    resent = 0
    for _ in range(RESEND_ROUNDS):
        acked = _first_ack(sender.answers)
        pending: dict[int, Hook] = {}
        for a in sender.answers:
            for d in a.hook.trigger:
                if d not in acked:
                    pending[d] = a.hook
        if not pending:
            return resent
        for hook in pending.values():
            await sender.send(hook)
            resent += 1
        await asyncio.sleep(1)
    return resent
