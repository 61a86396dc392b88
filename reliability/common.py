"""What every scenario shares: its result record, waiting for the system to settle, and the
verdict on a set of deals (exactly one invoice, at most one task, nothing lost)."""

# ruff: noqa: ASYNC109 - bounded waits take their bound as `timeout`

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from reliability.driver import Hook
from reliability.stack import Stack
from sandbox.seed import STATUS_RAISE_INVOICE

TERMINAL = ("invoiced", "skipped", "needs_mapping", "failed", "applied", "discarded")


@dataclass
class Result:
    scenario: str
    title: str
    passed: bool | None = None  # None: skipped
    checks: dict[str, bool] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool) -> bool:
        self.checks[name] = bool(ok)
        return bool(ok)

    def finish(self, started: float) -> Result:
        self.seconds = round(time.monotonic() - started, 1)
        if self.passed is None and self.checks:
            self.passed = all(self.checks.values())
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "passed": self.passed,
            "checks": self.checks,
            "counts": self.counts,
            "seconds": self.seconds,
            "notes": self.notes,
        }


@dataclass
class Verdict:
    """Upstream truth for a set of deals, read from the simulators' state."""

    deals: list[int]
    invoices: dict[int, int]  # deal → Sage invoices with reference KOMMO-<deal>
    tasks: dict[int, int]  # deal → Kommo tasks on it
    written_back: set[int]  # deals whose invoice number is on the lead
    duplicate_contacts: int

    @property
    def invoiced(self) -> int:
        return sum(1 for d in self.deals if self.invoices.get(d, 0) >= 1)

    @property
    def duplicates(self) -> int:
        """Extra invoices beyond the first, over all deals."""
        return sum(max(0, n - 1) for n in self.invoices.values())

    @property
    def deals_with_duplicates(self) -> list[int]:
        return sorted(d for d, n in self.invoices.items() if n > 1)

    @property
    def missing(self) -> list[int]:
        return [d for d in self.deals if self.invoices.get(d, 0) == 0]

    @property
    def max_tasks(self) -> int:
        return max((self.tasks.get(d, 0) for d in self.deals), default=0)


async def verdict(stack: Stack, first_id: int, count: int) -> Verdict:
    summary = await stack.sandbox.summary(first_id, count)
    deals = list(range(first_id, first_id + count))
    invoices = {int(ref.split("-", 1)[1]): len(v) for ref, v in summary["invoices"].items()}
    tasks = {int(k): len(v["tasks"]) for k, v in summary["leads"].items()}
    written = {int(k) for k, v in summary["leads"].items() if v["invoice_number"]}
    dup_contacts = sum(n - 1 for n in summary["contacts_by_email"].values() if n > 1)
    return Verdict(deals, invoices, tasks, written, dup_contacts)


async def settle(
    stack: Stack,
    deal_ids: list[int],
    *,
    timeout: float,
    expect: str = "invoiced",
    supervise: bool = True,
) -> tuple[bool, float, Counter[str]]:
    """Wait until every deal's trigger event has ended (and its task, if any, is opened).

    Returns (settled, seconds waited, states). Bounded by `timeout`; the harness restarts a
    bridge process that dies on its own meanwhile (and reports it).
    """
    started = time.monotonic()
    states: Counter[str] = Counter()
    while True:
        if supervise:
            stack.bridge.supervise()
        events = await stack.db.events(deal_ids)
        states = Counter(e["state"] for e in events.values())
        states["missing"] = len(deal_ids) - len(events)
        done = all(e["state"] in TERMINAL and e["task_state"] != "pending" for e in events.values())
        complete = done and len(events) == len(deal_ids)
        if complete and (expect != "invoiced" or await _written_back(stack, deal_ids)):
            return True, time.monotonic() - started, states
        if time.monotonic() - started > timeout:
            return False, time.monotonic() - started, states
        await asyncio.sleep(PACE["poll_s"])


async def _written_back(stack: Stack, deal_ids: list[int]) -> bool:
    first, count = min(deal_ids), max(deal_ids) - min(deal_ids) + 1
    summary = await stack.sandbox.summary(first, count)
    wanted = {str(d) for d in deal_ids}
    return all(v["invoice_number"] for k, v in summary["leads"].items() if k in wanted)


# The small versions in tests/reliability scale the pauses below down (and poll faster).
PACE = {"quiet": 1.0, "poll_s": 0.5}


async def quiet(seconds: float) -> None:
    """Give stragglers (a late duplicate job) the chance to show themselves before counting."""
    await asyncio.sleep(seconds * PACE["quiet"])


_ENTRY = re.compile(r"^(\w+\[\w+\])\[(\d+)\](.*)$")


def merge_forms(*bodies: str) -> str:
    """Several Kommo status bodies as one, as Kommo batches moves into one POST: renumber the
    `leads[status][i]` entries and keep one `account[...]` block."""
    pairs: list[tuple[str, str]] = []
    account: dict[str, str] = {}
    offset = 0
    for body in bodies:
        seen: set[int] = set()
        for key, value in parse_qsl(body, keep_blank_values=True):
            match = _ENTRY.match(key)
            if match is None:
                account.setdefault(key, value)
                continue
            index = int(match.group(2))
            seen.add(index)
            pairs.append((f"{match.group(1)}[{index + offset}]{match.group(3)}", value))
        offset += len(seen)
    return urlencode(pairs + list(account.items()))


async def moved(stack: Stack, lead_ids: list[int], status_id: int, *, trigger: bool) -> Hook:
    body = await stack.sandbox.stage(lead_ids, status_id)
    assert body is not None, f"leads {lead_ids} did not change stage"
    ids = tuple(lead_ids)
    return Hook(body, trigger=ids if trigger else (), other=() if trigger else ids)


async def deals_at_the_trigger(
    stack: Stack, first_id: int, deals: int
) -> tuple[list[int], list[Hook]]:
    """`deals` new deals (about 20 per customer) moved to Raise Invoice in the sandbox, and the
    webhook each move produced, not sent yet: what the fault scenarios deliver under faults."""
    deal_ids = list(range(first_id, first_id + deals))
    await stack.sandbox.add_leads(first_id, deals, customers=max(1, deals // 20))
    hooks = [await moved(stack, [d], STATUS_RAISE_INVOICE, trigger=True) for d in deal_ids]
    return deal_ids, hooks
