"""POST /webhooks/kommo/{secret} against a real database and a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any, cast

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from prometheus_client import REGISTRY
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Message, Scope

from app.cancellation import NOT_INVOICED
from app.inbox.models import InboxEvent
from app.main import create_app
from app.queue import QUEUE_NAME
from app.routes.webhooks import KommoWebhookLane
from app.settings import Settings
from tests.conftest import WEBHOOK_SECRET, make_settings
from tests.helpers import lead_entry, status_webhook

URL = f"/webhooks/kommo/{WEBHOOK_SECRET}"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
Maker = async_sessionmaker[AsyncSession]


async def stored(sessionmaker: Maker) -> list[InboxEvent]:
    async with sessionmaker() as session:
        return list((await session.scalars(select(InboxEvent).order_by(InboxEvent.id))).all())


async def job_status(queue: ArqRedis, job_id: str) -> JobStatus:
    return await Job(job_id, queue, _queue_name=QUEUE_NAME).status()


async def test_every_entry_is_stored_and_only_the_trigger_is_queued(
    client: AsyncClient, sessionmaker: Maker, queue: ArqRedis
) -> None:
    body = status_webhook(
        lead_entry(11),  # into the trigger stage
        lead_entry(12, status_id=502),  # another stage of the same pipeline
        lead_entry(13, pipeline_id=999),  # the same status id in another pipeline
    )

    response = await client.post(URL, content=body, headers=FORM)

    assert response.status_code == 200
    assert response.json() == {"received": 3, "queued": 1, "skipped": 2, "ignored": 0}
    rows = await stored(sessionmaker)
    assert [(r.deal_id, r.state, r.action) for r in rows] == [
        ("11", "pending", "leads.status"),
        ("12", "skipped", "leads.status"),
        ("13", "skipped", "leads.status"),
    ]
    assert rows[0].responsible_user_id == "42" and rows[0].account_id == "29000001"
    assert rows[1].last_error == "moved to a stage that is not the invoice trigger"
    assert await job_status(queue, f"event:{rows[0].id}:0") == JobStatus.queued


async def test_every_lead_entry_is_stored_other_entities_are_only_counted(
    client: AsyncClient, sessionmaker: Maker
) -> None:
    body = (
        b"leads[update][0][id]=5&leads[delete][0][id]=8&contacts[add][0][id]=6"
        b"&contacts[delete][0][id]=7&contacts[delete][0][type]=company&task[add][0][id]=9"
        b"&catalogs[add][0][custom_fields][3][values][0][value][entity_id]=5&account[id]=29000001"
    )

    response = await client.post(URL, content=body, headers=FORM)

    assert response.json() == {"received": 6, "queued": 0, "skipped": 2, "ignored": 4}
    assert [(r.action, r.deal_id, r.state, r.last_error) for r in await stored(sessionmaker)] == [
        ("leads.update", "5", "skipped", "leads[update] events do not raise invoices"),
        ("leads.delete", "8", "skipped", NOT_INVOICED),
    ]


async def test_more_than_500_entries_is_400_naming_the_cap(
    client: AsyncClient, sessionmaker: Maker
) -> None:
    entries = "&".join(f"contacts[update][{i}][id]={i + 1}" for i in range(501))
    body = f"{entries}&account[id]=29000001".encode()

    response = await client.post(URL, content=body, headers=FORM)

    assert (response.status_code, response.json()) == (
        400,
        {
            "error": "bad_request",
            "detail": "malformed Kommo webhook: more than 500 entries in one body "
            "(the limit is 500)",
        },
    )
    assert await stored(sessionmaker) == []


async def test_a_5000_digit_index_is_400_not_500(client: AsyncClient, sessionmaker: Maker) -> None:
    body = b"leads[status][" + b"9" * 5000 + b"][id]=1&account[id]=29000001"

    response = await client.post(URL, content=body, headers=FORM)

    assert response.status_code == 400
    assert "longer than 64 characters" in response.json()["detail"]
    assert await stored(sessionmaker) == []


async def test_a_body_without_account_id_is_400(client: AsyncClient, sessionmaker: Maker) -> None:
    body = b"leads[status][0][id]=1&leads[status][0][status_id]=503&account[subdomain]=testco"

    response = await client.post(URL, content=body, headers=FORM)

    assert (response.status_code, response.json()["detail"]) == (
        400,
        "malformed Kommo webhook: the body has no account[id]",
    )
    assert await stored(sessionmaker) == []


async def test_five_concurrent_deliveries_store_one_event_and_one_job(
    client: AsyncClient, sessionmaker: Maker, queue: ArqRedis
) -> None:
    body = status_webhook(lead_entry(21))

    responses = await asyncio.gather(
        *(client.post(URL, content=body, headers=FORM) for _ in range(5))
    )

    assert [r.status_code for r in responses] == [200] * 5
    assert sum(r.json()["queued"] for r in responses) == 1
    rows = await stored(sessionmaker)
    assert len(rows) == 1
    assert len(await queue.queued_jobs(queue_name=QUEUE_NAME)) == 1


async def test_wrong_secret_is_401_and_nothing_is_stored(
    client: AsyncClient, sessionmaker: Maker
) -> None:
    response = await client.post(
        "/webhooks/kommo/guess", content=status_webhook(lead_entry(1)), headers=FORM
    )

    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthorized",
        "detail": "unknown webhook URL: check the secret in the hook's address",
    }
    assert await stored(sessionmaker) == []


async def test_malformed_body_is_400_with_the_reason_and_nothing_is_stored(
    client: AsyncClient, sessionmaker: Maker
) -> None:
    response = await client.post(URL, content=b"account[id]=29000001", headers=FORM)

    assert response.status_code == 400
    assert response.json() == {
        "error": "bad_request",
        "detail": "malformed Kommo webhook: no events in the body "
        "(expected keys like leads[status][0][id])",
    }
    assert await stored(sessionmaker) == []


async def test_a_bad_number_is_400_not_500(client: AsyncClient, sessionmaker: Maker) -> None:
    body = status_webhook(lead_entry(1, status_id="x"))  # type: ignore[arg-type]

    response = await client.post(URL, content=body, headers=FORM)

    assert response.status_code == 400
    assert "status_id] must be an integer" in response.json()["detail"]
    assert await stored(sessionmaker) == []


async def test_json_body_is_400(client: AsyncClient, sessionmaker: Maker) -> None:
    response = await client.post(URL, json={"leads": {"status": [{"id": 1}]}})

    assert response.status_code == 400
    assert "expected Content-Type application/x-www-form-urlencoded" in response.json()["detail"]
    assert await stored(sessionmaker) == []


async def test_another_accounts_webhook_is_403(client: AsyncClient, sessionmaker: Maker) -> None:
    body = status_webhook(lead_entry(1), account_id=123)

    response = await client.post(URL, content=body, headers=FORM)

    assert response.status_code == 403
    assert response.json()["detail"] == "webhook is for Kommo account 123, not 29000001"
    assert await stored(sessionmaker) == []


async def test_the_account_id_is_compared_even_without_kommo_subdomain(
    app: FastAPI, client: AsyncClient, sessionmaker: Maker
) -> None:
    app.state.settings = app.state.settings.model_copy(update={"kommo_subdomain": None})
    other = status_webhook(lead_entry(1), account_id=123, subdomain="someone-else")
    ours = status_webhook(lead_entry(2), subdomain="renamed")

    refused = await client.post(URL, content=other, headers=FORM)
    accepted = await client.post(URL, content=ours, headers=FORM)

    assert (refused.status_code, refused.json()["detail"]) == (
        403,
        "webhook is for Kommo account 123, not 29000001",
    )
    assert accepted.status_code == 200
    assert [r.deal_id for r in await stored(sessionmaker)] == ["2"]


async def test_another_subdomain_is_403_when_both_name_one(
    client: AsyncClient, sessionmaker: Maker
) -> None:
    response = await client.post(
        URL, content=status_webhook(lead_entry(1), subdomain="evil"), headers=FORM
    )

    assert (response.status_code, response.json()["detail"]) == (
        403,
        "webhook is for Kommo subdomain 'evil', not 'testco'",
    )
    assert await stored(sessionmaker) == []


async def test_oversized_body_is_413(client: AsyncClient, sessionmaker: Maker) -> None:
    response = await client.post(URL, content=b"a=" + b"x" * 300_000, headers=FORM)

    assert response.status_code == 413
    assert await stored(sessionmaker) == []


async def test_database_down_is_503_never_2xx(
    settings: Settings, queue: ArqRedis, redis_url: str
) -> None:
    down = make_settings(
        database_url="postgresql+asyncpg://bridge@127.0.0.1:1/none", redis_url=redis_url
    )
    app: FastAPI = create_app(down)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://bridge.test") as client:
            response = await client.post(URL, content=status_webhook(lead_entry(1)), headers=FORM)

    assert response.status_code == 503
    assert response.json() == {
        "error": "service_unavailable",
        "detail": "the event could not be stored (database unavailable); Kommo will retry",
    }
    assert await queue.queued_jobs(queue_name=QUEUE_NAME) == []


async def test_a_later_move_into_the_stage_reopens_a_skipped_event_but_a_duplicate_does_not(
    client: AsyncClient, sessionmaker: Maker
) -> None:
    first = status_webhook(lead_entry(31, updated_at=1000))
    await client.post(URL, content=first, headers=FORM)
    async with sessionmaker() as session:
        event = (await session.scalars(select(InboxEvent))).one()
        event.state = "skipped"
        await session.commit()

    duplicate = await client.post(URL, content=first, headers=FORM)
    later = await client.post(
        URL, content=status_webhook(lead_entry(31, updated_at=2000)), headers=FORM
    )

    assert duplicate.json()["queued"] == 0
    assert later.json()["queued"] == 1
    async with sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(InboxEvent))
        event = (await session.scalars(select(InboxEvent))).one()
    assert count == 1 and (event.state, event.changed_at) == ("pending", 2000)


async def test_redis_down_still_stores_and_acknowledges_the_sweeper_delivers_later(
    database_url: str, sessionmaker: Maker
) -> None:
    no_redis = make_settings(database_url=database_url, redis_url="redis://127.0.0.1:1/0")
    app: FastAPI = create_app(no_redis)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://bridge.test") as client:
            response = await client.post(URL, content=status_webhook(lead_entry(41)), headers=FORM)

    assert response.status_code == 200
    (row,) = await stored(sessionmaker)
    assert (row.deal_id, row.state) == ("41", "pending")  # the sweeper's to deliver


# The lane (app.routes.webhooks.KommoWebhookLane) serves the route ahead of FastAPI's routing;
# the FastAPI route behind it must give the same answers, and every other request goes past it.

SAME_ANSWER_CASES = {
    "accepted": (URL, FORM, status_webhook(lead_entry(61))),
    "wrong secret": ("/webhooks/kommo/not-the-secret", FORM, status_webhook(lead_entry(62))),
    "JSON body": (URL, {"Content-Type": "application/json"}, b'{"leads": []}'),
    "over the limit": (URL, FORM, b"a=" + b"x" * 300_000),
    "another account": (URL, FORM, status_webhook(lead_entry(63), account_id=1)),
}


@pytest.mark.parametrize("case", SAME_ANSWER_CASES)
async def test_the_lane_and_the_fastapi_route_answer_alike(
    case: str, settings: Settings, queue: ArqRedis, sessionmaker: Maker
) -> None:
    url, headers, body = SAME_ANSWER_CASES[case]
    answers = []
    for lane in (True, False):
        app = create_app(settings) if lane else without_lane(create_app(settings))
        async with app.router.lifespan_context(app):
            transport = ASGITransport(app=app)
            async with AsyncClient(transport=transport, base_url="http://bridge.test") as http:
                before = _counted()
                response = await http.post(url, content=body, headers=headers)
                answers.append((response.status_code, response.json(), _counted() - before))
        if case == "accepted":  # the second delivery of one event: a duplicate, queued 0
            async with sessionmaker() as session:
                await session.execute(delete(InboxEvent))
                await session.commit()

    assert answers[0] == answers[1]
    assert answers[0][2] == {("kommo", answers[0][1].get("error", "accepted")): 1}


def without_lane(app: FastAPI) -> FastAPI:
    """The app with the webhook served by its FastAPI route (before the first request builds
    the middleware stack)."""
    app.user_middleware = [
        m for m in app.user_middleware if cast(object, m.cls) is not KommoWebhookLane
    ]
    return app


def _counted() -> Counter[tuple[str, str]]:
    return Counter(
        {
            (sample.labels["source"], sample.labels["result"]): int(sample.value)
            for metric in REGISTRY.collect()
            if metric.name == "sagebridge_webhooks"
            for sample in metric.samples
            if sample.name == "sagebridge_webhooks_total"
        }
    )


async def test_the_lane_reads_a_body_sent_in_chunks_and_refuses_one_that_grows_too_big(
    app: FastAPI, sessionmaker: Maker
) -> None:
    body = status_webhook(lead_entry(71))
    status, answer = await _raw_post(app, [body[:40], body[40:90], body[90:]])
    assert (status, answer["queued"]) == (200, 1)

    status, answer = await _raw_post(app, [b"a=" + b"x" * 200_000] * 2)  # no Content-Length
    assert (status, answer["error"]) == (413, "payload_too_large")
    assert [r.deal_id for r in await stored(sessionmaker)] == ["71"]


async def test_a_sender_that_hangs_up_mid_body_stores_nothing_and_hears_nothing(
    app: FastAPI, sessionmaker: Maker
) -> None:
    body = status_webhook(lead_entry(72))
    messages: list[Message] = [
        {"type": "http.request", "body": body[:50], "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(_scope(URL, []), receive, send)

    assert sent == []
    assert await stored(sessionmaker) == []


async def test_other_requests_on_the_webhook_paths_go_past_the_lane(client: AsyncClient) -> None:
    nested = await client.post(f"{URL}/extra", content=b"a=1", headers=FORM)
    read = await client.get(URL)
    empty = await client.post("/webhooks/kommo/", content=b"a=1", headers=FORM)

    assert (nested.status_code, read.status_code, empty.status_code) == (404, 405, 404)


async def test_the_lane_serves_the_route_under_a_root_path(
    app: FastAPI, sessionmaker: Maker
) -> None:
    """Behind a proxy that mounts the bridge at /bridge (uvicorn --root-path /bridge)."""
    body = status_webhook(lead_entry(73))
    status, answer = await _raw_post(app, [body], path=f"/bridge{URL}", root_path="/bridge")

    assert (status, answer["queued"]) == (200, 1)


@pytest.mark.parametrize("lane", [True, False], ids=["lane", "route"])
async def test_a_refusal_under_a_root_path_is_counted(
    lane: bool, settings: Settings, queue: ArqRedis
) -> None:
    app = create_app(settings) if lane else without_lane(create_app(settings))
    async with app.router.lifespan_context(app):
        before = _counted()
        status, answer = await _raw_post(
            app, [b"a=1"], path="/bridge/webhooks/kommo/wrong", root_path="/bridge"
        )

    assert (status, answer["error"]) == (401, "unauthorized")
    assert _counted() - before == {("kommo", "unauthorized"): 1}


async def _raw_post(
    app: FastAPI, chunks: list[bytes], *, path: str = URL, root_path: str = ""
) -> tuple[int, dict[str, Any]]:
    """A POST whose body arrives in `chunks` ASGI messages, as a slow sender's would."""
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        hung_up: Message = {"type": "http.disconnect"}
        return messages.pop(0) if messages else hung_up

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-type", FORM["Content-Type"].encode())]
    await app(_scope(path, headers, root_path=root_path), receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


def _scope(path: str, headers: list[tuple[bytes, bytes]], *, root_path: str = "") -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("bridge.test", 80),
    }
