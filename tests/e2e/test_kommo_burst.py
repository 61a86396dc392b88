"""A burst of deals against the sandbox Kommo enforcing its 7 requests/s: the worker's jobs share
their Kommo reads and write-backs, so far fewer than the 4 calls per invoice a lone deal makes
reach Kommo, and none of them is refused with a 429. Counted from the simulator's request log."""

from __future__ import annotations

from collections import Counter

import pytest

from sandbox.common.requestlog import RecordedRequest
from tests.e2e.test_end_to_end import (
    Stack,
    add_lead,
    eventually,
    invoice_field,
    move,
    sage_invoices,
)
from tests.e2e.test_end_to_end import e2e_database as e2e_database
from tests.e2e.test_end_to_end import stack as stack  # this module's own bridge and sandbox

pytestmark = pytest.mark.asyncio(loop_scope="module")
DEALS = 30
FIRST_DEAL = 9_200_001


def route(entry: RecordedRequest) -> str:
    batched = entry.path in ("/api/v4/leads", "/api/v4/contacts")
    return f"{entry.method} {entry.path}" if batched else f"{entry.method} {entry.path[:20]}…"


async def test_a_burst_shares_kommo_calls_and_draws_no_429(stack: Stack) -> None:
    deals = list(range(FIRST_DEAL, FIRST_DEAL + DEALS))
    for deal in deals:
        add_lead(stack, deal)
    kommo = stack.sandbox.kommo
    kommo.requests.clear()

    for deal in deals:
        await move(stack, deal)
    await eventually(lambda: all(invoice_field(stack, d) for d in deals), stack, timeout=120)

    sent = kommo.requests.entries()
    routes = Counter(route(e) for e in sent)
    assert [e.status for e in sent if e.status == 429] == [], routes
    assert len(sent) <= 2 * DEALS, routes  # a lone deal makes 4: lead, contact, elements, PATCH
    assert routes["GET /api/v4/leads"] >= 1 and routes["PATCH /api/v4/leads"] >= 1, routes
    references = Counter(i.reference for i in sage_invoices(stack))
    assert [references[f"KOMMO-{d}"] for d in deals] == [1] * DEALS
