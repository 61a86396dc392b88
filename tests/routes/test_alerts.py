"""GET /ops/alerts: every alert raised by the worker's job, newest first, paged and filtered."""

from __future__ import annotations

from arq.connections import ArqRedis
from httpx import AsyncClient

from app.alerts.config import AlertConfig
from app.alerts.job import last_hook_check, run_alerts
from app.queue import Queue
from app.settings import Settings
from tests.alerts.conftest import Clock
from tests.conftest import OPS_TOKEN
from tests.helpers import Maker, record_trigger

AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}


async def raise_three_alerts(
    settings: Settings, sessionmaker: Maker, queue: ArqRedis, clock: Clock
) -> int:
    """No channel is configured: the alerts are recorded and logged only."""
    hooks = Queue(queue)

    async def job() -> int:
        hook = await last_hook_check(hooks)
        config = AlertConfig.from_settings(settings)
        return await run_alerts(sessionmaker, config, hook=hook, budget=10, clock=clock)

    await hooks.record_webhook_state("disabled")
    await job()
    event_id = await record_trigger(sessionmaker, settings, 61)  # due, and no worker runs it
    clock.advance(minutes=31)
    await job()
    await hooks.record_webhook_state("enabled")
    await job()
    clock.advance(hours=2)
    await hooks.record_webhook_state("disabled")
    await job()
    return event_id


async def test_alerts_are_listed_newest_first_with_their_delivery(
    client: AsyncClient, settings: Settings, sessionmaker: Maker, queue: ArqRedis
) -> None:
    clock = Clock()
    event_id = await raise_three_alerts(settings, sessionmaker, queue, clock)

    response = await client.get("/ops/alerts", headers=AUTH)

    assert response.status_code == 200
    page = response.json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 50, 0)
    assert [(a["id"], a["kind"]) for a in page["items"]] == [
        (3, "kommo_webhook_disabled"),
        (2, "events_waiting"),
        (1, "kommo_webhook_disabled"),
    ]
    waiting = page["items"][1]
    item = waiting["items"][0]
    assert waiting == {
        "id": 2,
        "cause": "events_waiting",
        "kind": "events_waiting",
        "title": "Due events are waiting too long",
        "text": waiting["text"],
        "digest": False,
        "count": 1,
        "items": [item],
        "channels": [],
        "delivered": [],
        "state": "recorded",
        "attempts": 0,
        "next_attempt_at": None,
        "last_error": None,
        "created_at": waiting["created_at"],
        "sent_at": None,
    }
    assert (item["oldest_event_id"], item["deal_id"], item["minutes"]) == (event_id, "61", 30)
    assert waiting["text"].splitlines()[1] == f"- {item['text']}"


async def test_alerts_page_and_filter(
    client: AsyncClient, settings: Settings, sessionmaker: Maker, queue: ArqRedis
) -> None:
    await raise_three_alerts(settings, sessionmaker, queue, Clock())

    async def ids(query: str) -> tuple[int, list[int]]:
        response = await client.get(f"/ops/alerts?{query}", headers=AUTH)
        assert response.status_code == 200
        return response.json()["total"], [a["id"] for a in response.json()["items"]]

    assert await ids("limit=1&offset=1") == (3, [2])
    assert await ids("kind=kommo_webhook_disabled") == (2, [3, 1])
    assert await ids("state=recorded&state=failed") == (3, [3, 2, 1])
    assert await ids("state=sent") == (0, [])


async def test_alerts_need_the_ops_token_and_known_filters(client: AsyncClient) -> None:
    assert (await client.get("/ops/alerts")).status_code == 401
    bad = await client.get("/ops/alerts?state=lost", headers=AUTH)
    assert bad.status_code == 400
    assert bad.json()["error"] == "bad_request"
