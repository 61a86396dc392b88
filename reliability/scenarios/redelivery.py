"""Scenario 1 — redelivery: every deal's webhook delivered 3 times, sequentially and 10-way
concurrently, mixed with unrelated stage changes (other deals moving between other stages, some
batched into the same body). Pass: exactly 1 invoice and at most 1 task per deal; the unrelated
deals get none."""

# ruff: noqa: ASYNC109 - the settle bound

from __future__ import annotations

import random
import time

from reliability.common import Result, merge_forms, moved, quiet, settle, verdict
from reliability.driver import Hook, Sender, percentile
from reliability.stack import Stack
from sandbox.seed import STATUS_LOST, STATUS_NEW_LEAD, STATUS_RAISE_INVOICE

COPIES = 3


async def run(
    stack: Stack, *, deals: int, first_id: int, concurrency: int = 10, settle_timeout: float = 600
) -> Result:
    result = Result("1-redelivery", "Redelivery ×3, sequential and 10-way concurrent")
    started = time.monotonic()
    modes = {"sequential": 1, "concurrent": concurrency}
    for n, (mode, width) in enumerate(modes.items()):
        base = first_id + n * 2 * deals
        await _one_mode(stack, result, mode, width, base, deals, settle_timeout)
    return result.finish(started)


async def _one_mode(
    stack: Stack, result: Result, mode: str, width: int, base: int, deals: int, timeout: float
) -> bool:
    deal_ids = list(range(base, base + deals))
    others = list(range(base + deals, base + deals + max(1, deals // 2)))
    await stack.sandbox.add_leads(base, deals, customers=max(1, deals // 20))
    await stack.sandbox.add_leads(others[0], len(others), customers=2)
    hooks = await _hooks(stack, deal_ids, others)
    sender = Sender(stack.bridge.webhook_url)
    t0 = time.monotonic()
    try:
        answers = await sender.send_all(hooks, concurrency=width)
    finally:
        await sender.aclose()
    send_s = time.monotonic() - t0
    settled, waited, states = await settle(stack, deal_ids, timeout=timeout)
    await quiet(2)
    v = await verdict(stack, base, deals)
    o = await verdict(stack, others[0], len(others))
    latencies = [a.seconds for a in answers]
    non_2xx = sum(1 for a in answers if not a.acknowledged)
    result.counts[mode] = {
        "deals": deals,
        "unrelated_deals": len(others),
        "webhooks_sent": len(answers),
        "non_2xx": non_2xx,
        "invoiced": v.invoiced,
        "duplicate_invoices": v.duplicates,
        "max_tasks_per_deal": v.max_tasks,
        "written_back": len(v.written_back & set(deal_ids)),
        "unrelated_invoices": sum(o.invoices.values()),
        "unrelated_tasks": sum(o.tasks.values()),
        "duplicate_sage_contacts": v.duplicate_contacts,
        "event_states": dict(states),
        "webhook_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "webhook_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "webhook_max_ms": round(max(latencies, default=0) * 1000, 1),
        "send_s": round(send_s, 1),
        "settle_s": round(waited, 1),
        "deals_per_s": round(deals / max(0.001, send_s + waited), 1),
    }
    checks = [
        result.check(f"{mode}: every webhook answered 2xx", non_2xx == 0),
        result.check(f"{mode}: settled", settled),
        result.check(
            f"{mode}: exactly 1 invoice per deal", v.invoiced == deals and not v.duplicates
        ),
        result.check(f"{mode}: at most 1 task per deal", v.max_tasks <= 1),
        result.check(
            f"{mode}: no invoice or task for unrelated deals",
            sum(o.invoices.values()) == 0 and sum(o.tasks.values()) == 0,
        ),
    ]
    if v.deals_with_duplicates:
        result.notes.append(f"{mode}: duplicated deals {v.deals_with_duplicates[:20]}")
    return all(checks)


async def _hooks(stack: Stack, deal_ids: list[int], others: list[int]) -> list[Hook]:
    """Each deal's move to Raise Invoice ×3 (copies adjacent, so concurrent senders overlap
    them), unrelated moves spread between; every 10th deal rides in a batch with one."""
    rng = random.Random(deal_ids[0])
    unrelated = [await moved(stack, [o], STATUS_NEW_LEAD, trigger=False) for o in others]
    spare = list(unrelated)
    hooks: list[Hook] = []
    for i, deal in enumerate(deal_ids):
        hook = await moved(stack, [deal], STATUS_RAISE_INVOICE, trigger=True)
        if i % 10 == 0 and spare:
            extra = spare.pop()
            hook = Hook(merge_forms(hook.body, extra.body), hook.trigger, extra.other)
        hooks.extend([hook] * COPIES)
        if spare and rng.random() < 0.5:
            hooks.append(spare.pop())
    hooks.extend(spare)
    # Unrelated deals also leave for Closed-lost: a second non-trigger move of each.
    for o in others[: len(others) // 2]:
        hooks.append(await moved(stack, [o], STATUS_LOST, trigger=False))
    return hooks
