"""At most one alert per cause per period, then a digest; each event ending alerts once, with
several workers scanning at once and after restarts; conditions alert when they start."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from arq.connections import ArqRedis

from app.alerts.causes import Kind
from app.alerts.check import check
from app.alerts.config import AlertConfig
from app.alerts.messages import compose
from app.alerts.models import Alert
from app.bridge import Bridge
from app.queue import WEBHOOK_STATE_KEY, Queue
from app.settings import Settings
from tests.alerts.conftest import (
    SAGE_REFUSAL,
    AlertRun,
    Clock,
    Receiver,
    fail_deal,
    received,
)
from tests.helpers import Maker, Scheduled, load_event, make_due, record_trigger, run_event
from tests.upstreams import upstreams

FAILED = "An event failed: its deal has no invoice"
URL = "https://testco.kommo.com/leads/detail/{}"


def failed_item(event_id: int, deal_id: int) -> dict[str, object]:
    return {
        "text": f"Deal {deal_id} (event {event_id}): {SAGE_REFUSAL} {URL.format(deal_id)}",
        "event_id": event_id,
        "deal_id": str(deal_id),
        "state": "failed",
        "error": SAGE_REFUSAL,
        "deal_url": URL.format(deal_id),
    }


async def needs_mapping(sessionmaker: Maker, settings: Settings, bridge: Bridge) -> int:
    async with upstreams() as (kommo, _sage):
        kommo.add_lead(34, products=[(104, 1)])
        event_id = await record_trigger(sessionmaker, settings, 34)
        assert await run_event(sessionmaker, bridge, event_id) == "needs_mapping"
    return event_id


async def test_one_alert_per_cause_per_hour_then_a_digest_of_what_came_meanwhile(
    hook_settings: Settings,
    sessionmaker: Maker,
    bridge: tuple[Bridge, Scheduled],
    clock: Clock,
    receiver: tuple[Receiver, str],
    run_alert_job: AlertRun,
) -> None:
    built = bridge[0]
    first = await fail_deal(sessionmaker, hook_settings, built, 31)
    assert await run_alert_job(hook_settings) == 1
    first_at: datetime = clock()

    clock.advance(minutes=10)
    second = await fail_deal(sessionmaker, hook_settings, built, 32)
    third = await fail_deal(sessionmaker, hook_settings, built, 33)
    await needs_mapping(sessionmaker, hook_settings, built)
    assert await run_alert_job(hook_settings) == 1  # another cause: at once; failures held
    clock.advance(minutes=49, seconds=59)
    assert await run_alert_job(hook_settings) == 0  # 59:59 after the first: still held
    clock.advance(seconds=1)
    assert await run_alert_job(hook_settings) == 1  # the hour is up: the digest

    payloads = received(receiver[0])
    assert [p["data"]["title"] for p in payloads] == [
        FAILED,
        "A deal needs a ledger mapping: no invoice yet",
        "Digest: 2 events failed: their deals have no invoice",
    ]
    assert payloads[0]["data"]["items"] == [failed_item(first, 31)]
    digest = payloads[2]
    assert digest["data"] | {"id": 0, "created_at": ""} == {
        "id": 0,
        "cause": "event_failed",
        "kind": "event_failed",
        "title": "Digest: 2 events failed: their deals have no invoice",
        "digest": True,
        "count": 2,
        "items": [failed_item(second, 32), failed_item(third, 33)],
        "created_at": "",
    }
    assert digest["text"].splitlines()[:4] == [
        "sagebridge: Digest: 2 events failed: their deals have no invoice",
        f"Since the alert of {first_at:%Y-%m-%d %H:%M} UTC (at most one alert per cause every "
        "60 minutes), 2 more:",
        f"- {failed_item(second, 32)['text']}",
        f"- {failed_item(third, 33)['text']}",
    ]

    clock.advance(minutes=90)
    assert await run_alert_job(hook_settings) == 0  # nothing new, nothing sent
    fourth = await fail_deal(sessionmaker, hook_settings, built, 35)
    assert await run_alert_job(hook_settings) == 1  # a new period: at once, no digest
    last = received(receiver[0])[3]["data"]
    assert (last["title"], last["digest"], last["items"]) == (
        FAILED,
        False,
        [failed_item(fourth, 35)],
    )


async def test_each_ending_alerts_once_with_workers_scanning_at_once_and_after_restarts(
    hook_settings: Settings,
    sessionmaker: Maker,
    bridge: tuple[Bridge, Scheduled],
    clock: Clock,
) -> None:
    config = AlertConfig.from_settings(hook_settings)

    async def worker_scan() -> list[Alert]:
        async with sessionmaker() as session:
            return await check(session, config, hook=None, now=clock())

    async with upstreams() as (kommo, sage):
        kommo.add_lead(41, products=[(102, 1)])
        sage.faults.refuse_next("POST", "/v3.1/sales_invoices", status=422, message="not valid")
        # The manager's task comes on a later run.
        kommo.faults.fail_next("POST", "/api/v4/tasks", status=503)
        event_id = await record_trigger(sessionmaker, hook_settings, 41)
        assert await run_event(sessionmaker, bridge[0], event_id) == "failed"

        raised = await asyncio.gather(worker_scan(), worker_scan())
        assert sorted(len(alerts) for alerts in raised) == [0, 1]

        await make_due(sessionmaker, event_id)
        assert await run_event(sessionmaker, bridge[0], event_id) == "failed"
    assert (await load_event(sessionmaker, event_id)).task_state == "created"
    assert await worker_scan() == []  # the event changed (its task), its ending did not

    clock.advance(minutes=61)
    again = await fail_deal(sessionmaker, hook_settings, bridge[0], 41, updated_at=1_760_000_900)
    assert again == event_id  # the deal moved into the stage again: the same event reopened
    [alert] = await worker_scan()
    assert (alert.cause, alert.digest, alert.items) == (
        "event_failed",
        False,
        [failed_item(event_id, 41)],
    )


async def test_a_condition_alerts_when_it_starts_and_again_only_after_it_stopped(
    hook_settings: Settings,
    queue: ArqRedis,
    clock: Clock,
    receiver: tuple[Receiver, str],
    run_alert_job: AlertRun,
) -> None:
    await Queue(queue).record_webhook_state("disabled")
    assert await run_alert_job(hook_settings) == 1
    clock.advance(minutes=10)
    await Queue(queue).record_webhook_state("enabled")  # re-enabled by ops
    assert await run_alert_job(hook_settings) == 0
    clock.advance(minutes=10)
    await Queue(queue).record_webhook_state("disabled")  # and off again within the hour: held
    assert await run_alert_job(hook_settings) == 0
    clock.advance(minutes=40)
    assert await run_alert_job(hook_settings) == 1  # the digest
    clock.advance(hours=3)
    assert await run_alert_job(hook_settings) == 0  # still disabled: no more alerts
    await queue.delete(WEBHOOK_STATE_KEY)  # not checked lately (Redis flushed): no change
    assert await run_alert_job(hook_settings) == 0
    await Queue(queue).record_webhook_state("disabled")
    assert await run_alert_job(hook_settings) == 0

    titles = [(p["data"]["title"], p["data"]["count"]) for p in received(receiver[0])]
    assert titles == [
        ("Kommo has disabled the bridge's webhook", 1),
        ("Digest: Kommo has disabled the bridge's webhook", 1),
    ]


def test_a_long_digest_lists_twenty_and_counts_the_rest() -> None:
    items = [{"text": f"Deal {n} (event {n}): refused"} for n in range(20)]
    message = compose(
        Kind.EVENT_FAILED,
        items,
        count=57,
        digest_since=datetime.fromisoformat("2026-12-01T09:30:00+00:00"),
        every=timedelta(minutes=60),
    )
    lines = message.text.splitlines()
    assert message.title == "Digest: 57 events failed: their deals have no invoice"
    assert lines[1] == (
        "Since the alert of 2026-12-01 09:30 UTC (at most one alert per cause every 60 "
        "minutes), 57 more:"
    )
    assert lines[2:4] == ["- Deal 0 (event 0): refused", "- Deal 1 (event 1): refused"]
    assert lines[21:23] == [
        "- Deal 19 (event 19): refused",
        "- and 37 more: GET /ops/retries, GET /ops/alerts",
    ]
