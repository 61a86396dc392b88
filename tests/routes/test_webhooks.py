"""POST /webhooks/kommo/{secret} against a real database and a real Redis."""

from __future__ import annotations

import asyncio

from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.cancellation import NOT_INVOICED
from app.inbox.models import InboxEvent
from app.main import create_app
from app.queue import QUEUE_NAME
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
