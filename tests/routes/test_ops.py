"""The ops retry queue and replay."""

from __future__ import annotations

from arq.connections import ArqRedis
from httpx import AsyncClient
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.inbox.models import InboxEvent
from app.models import utcnow
from app.queue import QUEUE_NAME
from app.settings import Settings
from tests.conftest import OPS_TOKEN
from tests.helpers import record_trigger

AUTH = {"Authorization": f"Bearer {OPS_TOKEN}"}
Maker = async_sessionmaker[AsyncSession]


async def set_state(sessionmaker: Maker, event_id: int, **values: object) -> None:
    async with sessionmaker() as session:
        await session.execute(update(InboxEvent).where(InboxEvent.id == event_id).values(**values))
        await session.commit()


async def test_ops_endpoints_need_the_ops_token(client: AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = await client.get("/ops/retries", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"


async def test_retry_queue_lists_waiting_and_failed_events_with_filters_and_paging(
    client: AsyncClient, sessionmaker: Maker, settings: Settings
) -> None:
    waiting = await record_trigger(sessionmaker, settings, 1)
    failed = await record_trigger(sessionmaker, settings, 2)
    done = await record_trigger(sessionmaker, settings, 3)
    retry_at = utcnow()
    await set_state(
        sessionmaker,
        waiting,
        state="retrying",
        attempts=2,
        last_error="sage: 503",
        next_attempt_at=retry_at,
    )
    await set_state(sessionmaker, failed, state="failed", attempts=4, last_error="gave up")
    await set_state(sessionmaker, done, state="invoiced")

    everything = (await client.get("/ops/retries", headers=AUTH)).json()
    only_failed = (await client.get("/ops/retries?state=failed", headers=AUTH)).json()
    page = (await client.get("/ops/retries?limit=1&offset=1", headers=AUTH)).json()

    assert everything["total"] == 2
    assert [(i["deal_id"], i["state"], i["attempt"]) for i in everything["items"]] == [
        ("2", "failed", 4),
        ("1", "retrying", 2),
    ]
    item = everything["items"][1]
    assert item["max_attempts"] == 4 and item["last_error"] == "sage: 503"
    assert item["deal_url"] == "https://testco.kommo.com/leads/detail/1"
    assert item["next_attempt_at"] is not None
    assert [i["deal_id"] for i in only_failed["items"]] == ["2"]
    assert (page["total"], [i["deal_id"] for i in page["items"]]) == (2, ["1"])


async def test_unknown_state_filter_is_400(client: AsyncClient) -> None:
    response = await client.get("/ops/retries?state=bogus", headers=AUTH)
    assert response.status_code == 400
    assert "state" in response.json()["detail"]


async def test_replay_puts_a_failed_event_back_in_the_queue(
    client: AsyncClient, sessionmaker: Maker, settings: Settings, queue: ArqRedis
) -> None:
    event_id = await record_trigger(sessionmaker, settings, 5)
    await set_state(sessionmaker, event_id, state="failed", attempts=4, task_state="created")

    response = await client.post(f"/ops/events/{event_id}/replay", headers=AUTH)

    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["attempt"], body["task_state"]) == ("pending", 0, None)
    jobs = await queue.queued_jobs(queue_name=QUEUE_NAME)
    assert [j.job_id for j in jobs] == [f"event:{event_id}:0"]


async def test_replay_of_an_unknown_event_is_404(client: AsyncClient) -> None:
    response = await client.post("/ops/events/12345/replay", headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "no event 12345"}
