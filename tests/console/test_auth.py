"""Who may use the console: the ops token once for a session cookie, CSRF on every POST,
sessions that end (logout, expiry, a new ops token), and no console without OPS_API_TOKEN."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from fastapi import FastAPI
from httpx import AsyncClient
from redis.asyncio import Redis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.console.sessions import ConsoleSessions
from app.inbox.models import InboxEvent
from app.queue import QUEUE_NAME
from app.settings import Settings
from tests.conftest import OPS_TOKEN, make_settings
from tests.console.conftest import console_client, csrf_of, log_in, logged_in, text_of
from tests.helpers import load_event, record_trigger

Maker = async_sessionmaker[AsyncSession]
SESSION = "sagebridge_console"


def set_cookies(response_headers: list[str], name: str) -> list[str]:
    return [c for c in response_headers if c.startswith(f"{name}=")]


async def test_the_console_is_off_without_the_ops_token(
    database_url: str, redis_url: str, tmp_path: Path, queue: ArqRedis
) -> None:
    settings = make_settings(
        database_url=database_url, redis_url=redis_url, data_dir=tmp_path, ops_api_token=None
    )
    async with console_client(settings) as client:
        answers = [
            await client.get("/console"),
            await client.get("/console/login"),
            await client.post("/console/login", data={"token": "anything"}),
            await client.get("/console/static/console.css"),
        ]

    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    assert text_of(answers[0]).startswith(
        "The console is off · sagebridge console The console is off The console is off because "
        "OPS_API_TOKEN is not set. Set it (at least 32 characters) and restart the API"
    )


async def test_a_page_without_a_session_sends_the_browser_to_the_login_page(
    client: AsyncClient,
) -> None:
    page = await client.get("/console/queue?state=failed")
    action = await client.post("/console/events/1/replay", data={"csrf_token": "x"})

    assert page.status_code == 303
    assert page.headers["location"] == "/console/login?next=%2Fconsole%2Fqueue%3Fstate%3Dfailed"
    assert (action.status_code, action.headers["location"]) == (
        303,
        "/console/login?next=%2Fconsole",
    )


async def test_the_ops_token_is_exchanged_once_for_a_session_cookie(client: AsyncClient) -> None:
    form = await client.get("/console/login?next=/console/queue")

    answer = await log_in(client, back="/console/queue")

    assert form.status_code == 200
    assert 'name="next" value="/console/queue"' in form.text
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/queue")
    (cookie,) = set_cookies(answer.headers.get_list("set-cookie"), SESSION)
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert attributes == {"httponly", "max-age", "path", "samesite"}  # not Secure over http
    assert "; Max-Age=28800;" in cookie and "; Path=/console;" in cookie
    assert "SameSite=strict" in cookie
    assert OPS_TOKEN not in cookie
    page = await client.get("/console/queue")
    assert page.status_code == 200 and "Retry queue" in text_of(page)


async def test_the_cookie_is_secure_when_browsers_reach_the_bridge_over_https(
    settings: Settings, queue: ArqRedis
) -> None:
    https = settings.model_copy(update={"public_base_url": "https://bridge.example.com"})
    async with console_client(https, base_url="https://bridge.example.com") as client:
        answer = await log_in(client)
        assert answer.status_code == 303

    (cookie,) = set_cookies(answer.headers.get_list("set-cookie"), SESSION)
    assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


async def test_a_wrong_token_is_refused_and_opens_nothing(client: AsyncClient) -> None:
    answer = await log_in(client, token="not-the-ops-token-but-just-as-long-000")

    assert answer.status_code == 401
    assert "That is not the ops token." in text_of(answer)
    assert not set_cookies(answer.headers.get_list("set-cookie"), SESSION)
    assert (await client.get("/console")).status_code == 303


async def test_a_login_without_the_login_form_is_refused(client: AsyncClient) -> None:
    answer = await client.post("/console/login", data={"token": OPS_TOKEN, "next": "/console"})

    assert answer.status_code == 403
    assert "Refused: the login form has expired" in text_of(answer)
    assert not set_cookies(answer.headers.get_list("set-cookie"), SESSION)


@pytest.mark.parametrize("elsewhere", ["https://evil.example/", "//evil.example/console", "/ops"])
async def test_login_only_ever_sends_the_browser_to_a_console_page(
    client: AsyncClient, elsewhere: str
) -> None:
    answer = await log_in(client, back=elsewhere)

    assert (answer.status_code, answer.headers["location"]) == (303, "/console")


async def test_a_post_without_the_csrf_token_is_refused_and_does_nothing(
    client: AsyncClient, sessionmaker: Maker, settings: Settings, queue: ArqRedis
) -> None:
    event_id = await record_trigger(sessionmaker, settings, 7)
    async with sessionmaker() as session:
        await session.execute(
            update(InboxEvent).where(InboxEvent.id == event_id).values(state="failed")
        )
        await session.commit()
    await queue.flushdb()
    csrf = await logged_in(client)

    refused = [
        await client.post(f"/console/events/{event_id}/replay", data=data)
        for data in ({}, {"csrf_token": ""}, {"csrf_token": "forged"})
    ]
    as_json = await client.post(f"/console/events/{event_id}/replay", json={"csrf_token": csrf})

    assert [r.status_code for r in [*refused, as_json]] == [403, 403, 403, 403]
    assert "Refused: this form did not come from the console" in text_of(refused[0])
    assert (await load_event(sessionmaker, event_id)).state == "failed"
    assert await queue.zcard(QUEUE_NAME) == 0
    done = await client.post(f"/console/events/{event_id}/replay", data={"csrf_token": csrf})
    assert done.status_code == 303
    assert (await load_event(sessionmaker, event_id)).state == "pending"


async def test_logout_ends_the_session_for_every_copy_of_its_cookie(client: AsyncClient) -> None:
    csrf = await logged_in(client)
    cookie = client.cookies[SESSION]

    answer = await client.post("/console/logout", data={"csrf_token": csrf})

    assert (answer.status_code, answer.headers["location"]) == (
        303,
        "/console/login?logged_out=1",
    )
    (cleared,) = set_cookies(answer.headers.get_list("set-cookie"), SESSION)
    assert "Max-Age=0" in cleared
    login = await client.get(answer.headers["location"])
    assert "You are logged out." in text_of(login)
    client.cookies.set(SESSION, cookie, domain="bridge.test", path="/console")
    assert (await client.get("/console")).status_code == 303


async def test_a_session_lasts_console_session_minutes(app: FastAPI, client: AsyncClient) -> None:
    now = [1_900_000_000.0]
    redis = app.state.connections.redis
    app.state.console_sessions = ConsoleSessions(
        redis, OPS_TOKEN, timedelta(minutes=480), clock=lambda: now[0]
    )
    await logged_in(client)
    (key,) = await redis.keys("sagebridge:console:session:*")

    now[0] += 479 * 60
    still = await client.get("/console")
    now[0] += 2 * 60
    expired = await client.get("/console")

    assert still.status_code == 200
    assert (expired.status_code, expired.headers["location"]) == (
        303,
        "/console/login?next=%2Fconsole",
    )
    assert 480 * 60 - 10 < await redis.ttl(key) <= 480 * 60  # Redis forgets it then too


async def test_a_new_ops_token_ends_every_session(app: FastAPI, client: AsyncClient) -> None:
    await logged_in(client)
    redis = app.state.connections.redis

    app.state.console_sessions = ConsoleSessions(
        redis, "the-next-ops-token-0123456789abcdef", timedelta(minutes=480)
    )

    assert (await client.get("/console")).status_code == 303


async def test_the_login_form_token_is_single_browser(client: AsyncClient) -> None:
    """The login form's token is only good with the cookie the same page set."""
    form = await client.get("/console/login")
    token = csrf_of(form)
    client.cookies.clear()

    answer = await client.post(
        "/console/login", data={"token": OPS_TOKEN, "csrf_token": token, "next": "/console"}
    )

    assert answer.status_code == 403


async def test_without_redis_the_console_says_so(app: FastAPI, client: AsyncClient) -> None:
    nowhere = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    app.state.console_sessions = ConsoleSessions(nowhere, OPS_TOKEN, timedelta(minutes=480))

    answer = await log_in(client)
    await nowhere.aclose()

    assert answer.status_code == 503
    assert "The console keeps its sessions in Redis, which did not answer" in text_of(answer)
