"""Every scenario of `make reliability` at small counts, against real processes on 127.0.0.1
(one stack for the module). The full counts and the timing bounds run in `make reliability`;
here pass/fail is about invariants only: nothing lost, nothing twice, nothing stored from a
rejected request, no secret anywhere."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from reliability.common import Result, moved, settle
from reliability.driver import Sender
from reliability.environment import Servers
from reliability.profiles import FAST
from reliability.scenarios import (
    db_down,
    hostile,
    redelivery,
    redis_lost,
    sage_faults,
    secrets,
    tokens,
    worker_kill,
)
from reliability.stack import Stack
from sandbox.seed import STATUS_RAISE_INVOICE

# Real processes, about 90 s in all; marked so `make reliability-small` can run just these and
# CI's second pass (same PostgreSQL server) can leave them out.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.scenarios]
P = FAST


def assert_passed(result: Result, *, timing_checks: frozenset[str] = frozenset()) -> None:
    """Every check of the scenario passed, except timing bounds this profile does not judge."""
    failed = [name for name, ok in result.checks.items() if not ok and name not in timing_checks]
    detail = json.dumps(result.as_dict(), indent=1, default=str)
    assert not failed, f"{result.scenario}: {failed}\n{detail}"


async def test_redelivery_three_times_sequential_and_concurrent(stack: Stack) -> None:
    result = await redelivery.run(
        stack, deals=P.redelivery_deals, first_id=11_000_000, settle_timeout=P.settle_timeout_s
    )
    assert_passed(result)


async def test_worker_killed_mid_run_loses_nothing(stack: Stack) -> None:
    result = await worker_kill.run(
        stack,
        deals=P.kill_deals,
        first_id=12_000_000,
        kill_every=P.kill_every_s,
        spread_s=P.kill_spread_s,
        max_kills=2,
        settle_timeout=P.settle_timeout_s,
    )
    # The 60 s bound is checked by `make reliability` (production lease); here only that every
    # orphan came back.
    assert_passed(result, timing_checks=frozenset({"every orphan picked up within 60s"}))


async def test_redis_flushed_and_restarted_loses_nothing(stack: Stack) -> None:
    result = await redis_lost.run(
        stack,
        deals=P.redis_deals,
        first_id=13_000_000,
        down_for=P.redis_down_s,
        settle_timeout=P.settle_timeout_s,
    )
    assert_passed(result)


async def test_worker_survives_a_redis_restart(stack: Stack) -> None:
    worker = stack.bridge.processes["worker-0"]
    await asyncio.to_thread(stack.redis.restart, 1.0)
    deal = 13_500_000
    await stack.sandbox.add_leads(deal, 1)
    sender = Sender(stack.bridge.webhook_url)
    await sender.send(await moved(stack, [deal], STATUS_RAISE_INVOICE, trigger=True))
    await sender.aclose()
    # No supervisor here: either the worker dies, or it invoices the deal (bounded wait).
    deadline = time.monotonic() + 60
    state = None
    while worker.proc.poll() is None and time.monotonic() < deadline:
        state = (await stack.db.events([deal])).get(str(deal), {}).get("state")
        if state == "invoiced":
            break
        await asyncio.sleep(0.25)
    alive = worker.proc.poll() is None
    stack.bridge.supervise()  # leave a running worker for the tests after this one
    assert alive, "the worker process exited when Redis restarted"
    assert state == "invoiced", f"the worker lived on but left the deal {state} for 60 s"


async def test_database_down_answers_5xx_and_loses_nothing_acknowledged(
    stack: Stack, reliability_servers: Servers
) -> None:
    result = await db_down.run(
        stack,
        outage=reliability_servers.outage,
        deals=P.db_deals,
        first_id=14_000_000,
        down_for=P.db_down_s,
        settle_timeout=P.settle_timeout_s,
    )
    assert_passed(result)


async def test_sage_faults_no_duplicates_ladder_and_one_task(stack: Stack) -> None:
    result = await sage_faults.run(
        stack,
        deals=P.fault_deals,
        first_id=15_000_000,
        ladder=list(P.ladder),
        retry_after=P.retry_after,
        http_timeout=P.sage_http_timeout,
        check_timing=False,
        settle_timeout=P.settle_timeout_s,
        phases=P.fault_phases,
    )
    assert_passed(result)


async def test_hostile_requests_to_the_live_api(stack: Stack) -> None:
    result = await hostile.run(stack, body_mb=P.hostile_body_mb, bodies=P.hostile_bodies)
    assert_passed(result)


async def test_unauthenticated_oversized_ops_body_is_refused_unread(stack: Stack) -> None:
    size = P.hostile_body_mb * 1024 * 1024
    body = b'{"reason": "' + b"a" * size + b'"}'
    async with httpx.AsyncClient(base_url=stack.bridge.api_url, timeout=60) as http:
        try:
            response = await http.post(
                "/ops/events/1/discard", content=body, headers={"Content-Type": "application/json"}
            )
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            status = 413  # answered 413 and closed while we were still sending: refused unread
        else:
            status = response.status_code
        assert status == 413
        assert (await http.get("/healthz")).status_code == 200


async def test_no_secret_in_logs_rows_keys_or_upstream_records(
    stack: Stack, reliability_servers: Servers
) -> None:
    result = await secrets.run(
        stack, deals=P.secrets_deals, first_id=18_000_000, extra=reliability_servers.secrets
    )
    assert_passed(result)


async def test_settle_is_bounded(stack: Stack) -> None:
    """The harness's own waits end: a deal that never gets a webhook times out, not hangs."""
    ok, waited, states = await settle(stack, [19_000_000], timeout=1)
    assert not ok and waited < 30 and states["missing"] == 1


async def test_oauth_expiry_under_load_and_revoked_grant(stack: Stack) -> None:
    overrides = {**P.base_settings, **tokens.settings()}
    # Last in the module: the stack keeps these settings until it stops.
    await stack.bridge.reconfigure(overrides)
    result = await tokens.run(
        stack, first_id=16_000_000, jobs=10, settle_timeout=P.settle_timeout_s
    )
    assert_passed(result)
