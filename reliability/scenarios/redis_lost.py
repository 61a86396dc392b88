"""Scenario 3 — Redis lost: FLUSHALL in the middle of a run, then a hard Redis restart (killed,
down for a few seconds, started empty). Pass: 0 lost (the sweeper re-delivers from the
database), 0 duplicates."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from reliability.common import Result, deals_at_the_trigger, quiet, settle, verdict
from reliability.driver import Hook, Sender
from reliability.stack import Stack

SURVIVED = "bridge processes survived the Redis restart (no supervisor needed)"


async def run(
    stack: Stack,
    *,
    deals: int,
    first_id: int,
    down_for: float = 5.0,
    settle_timeout: float = 600,
) -> Result:
    result = Result("3-redis-lost", "Redis FLUSHALL and restart mid-run")
    started = time.monotonic()
    deal_ids, hooks = await deals_at_the_trigger(stack, first_id, deals)
    exits_before = len(stack.bridge.unexpected_exits)
    third = max(1, len(hooks) // 3)
    sender = Sender(stack.bridge.webhook_url)
    flushed_keys = 0
    try:
        await sender.send_all(hooks[:third], concurrency=4)
        flushed_keys = await _flushall(stack)
        await sender.send_all(hooks[third : 2 * third], concurrency=4)
        # Hard restart; webhooks keep arriving while Redis is down.
        await asyncio.to_thread(stack.redis.stop)
        during = asyncio.create_task(_send_slowly(sender, hooks[2 * third :], down_for))
        await asyncio.sleep(down_for)
        await asyncio.to_thread(stack.redis.start)
        await during
    finally:
        await sender.aclose()
    answers = sender.answers
    settled, waited, states = await settle(stack, deal_ids, timeout=settle_timeout)
    await quiet(2)
    v = await verdict(stack, first_id, deals)
    exited = [name for name, _, _ in stack.bridge.unexpected_exits[exits_before:]]
    result.counts = {
        "deals": deals,
        "keys_flushed": flushed_keys,
        "redis_down_s": down_for,
        "webhooks": len(answers),
        "non_2xx": sum(1 for a in answers if not a.acknowledged),
        "invoiced": v.invoiced,
        "lost": len(v.missing),
        "duplicate_invoices": v.duplicates,
        "max_tasks_per_deal": v.max_tasks,
        "event_states": dict(states),
        "settle_s": round(waited, 1),
        "sweeper_requeued": sum(
            int(r.get("count", 0)) for r in stack.bridge.log_events("worker", "sweeper.requeued")
        ),
        "unexpected_exits": exited,
    }
    result.check(
        "webhooks stored and acknowledged while Redis was down",
        all(a.acknowledged for a in answers),
    )
    result.check("settled", settled)
    result.check("0 lost", not v.missing)
    result.check("0 duplicates", v.duplicates == 0)
    result.check("at most 1 task per deal", v.max_tasks <= 1)
    result.check(SURVIVED, not exited)
    if exited:
        result.notes.append(
            f"{sorted(set(exited))} exited when Redis went away ({len(exited)}x) and were "
            "restarted by the harness, as a process supervisor would; the bridge alone would "
            "have stopped processing"
        )
    return result.finish(started)


async def _flushall(stack: Stack) -> int:
    async with aioredis.Redis.from_url(stack.redis.url(0)) as r:
        keys = int(await r.dbsize())
        await r.flushall()
    return keys


async def _send_slowly(sender: Sender, hooks: list[Hook], spread: float) -> None:
    """Spread the hooks over the outage, one at a time (bounded by the list)."""
    pause = spread / max(1, len(hooks))
    for hook in hooks:
        await sender.send(hook)
        await asyncio.sleep(pause)
