"""Delivery: a receiver that is down gets the alert once it is back (and only the channel that
missed it is tried again); an SMTP server that refuses leaves the alert failed after the
bounded retries; a hanging receiver costs only the alerts job, never an invoice; no secret in
any log line."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import structlog
from arq.connections import ArqRedis
from sqlalchemy import select

from app.alerts.models import Alert
from app.inbox.models import InboxEvent
from app.logging import configure_logging
from app.queue import Queue
from app.settings import Settings
from app.workers.main import build_worker
from sandbox.runner import serve_app
from tests.alerts.conftest import (
    HOOK_PATH_TOKEN,
    HOOK_SECRET,
    SMTP_PASSWORD,
    SMTP_USER,
    AlertRun,
    Clock,
    Mailbox,
    Receiver,
    alert_settings,
    received,
)
from tests.helpers import Maker, record_trigger
from tests.upstreams import upstreams

DISABLED = "Kommo has disabled the bridge's webhook"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def smtp_url(mailbox: Mailbox, password: str = SMTP_PASSWORD) -> str:
    return f"smtp://{SMTP_USER}:{quote(password, safe='')}@127.0.0.1:{mailbox.port}?starttls=false"


def email_settings(
    database_url: str, redis_url: str, tmp: Path, smtp: str, **more: Any
) -> Settings:
    return alert_settings(
        database_url,
        redis_url,
        tmp,
        alert_email_to=["ops@example.com"],
        alert_email_from="bridge@example.com",
        smtp_url=smtp,
        **more,
    )


async def the_alert(sessionmaker: Maker) -> Alert:
    async with sessionmaker() as session:
        [alert] = (await session.scalars(select(Alert))).all()
        return alert


async def test_a_receiver_that_is_down_gets_the_alert_once_it_is_back(
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    mailbox: Mailbox,
    queue: ArqRedis,
    sessionmaker: Maker,
    clock: Clock,
    run_alert_job: AlertRun,
) -> None:
    port = free_port()  # nothing listens there yet
    settings = email_settings(
        database_url,
        redis_url,
        tmp_path,
        smtp_url(mailbox),
        alert_webhook_url=f"http://127.0.0.1:{port}/services/{HOOK_PATH_TOKEN}",
        alert_webhook_secret=HOOK_SECRET,
    )
    await Queue(queue).record_webhook_state("disabled")

    assert await run_alert_job(settings) == 0
    alert = await the_alert(sessionmaker)
    assert (alert.state, alert.attempts, alert.delivered, alert.next_attempt_at) == (
        "pending",
        1,
        ["email"],
        clock() + timedelta(seconds=60),
    )
    assert alert.last_error == "webhook: ConnectError: All connection attempts failed"
    clock.advance(seconds=59)
    assert await run_alert_job(settings) == 0  # not due yet
    assert (await the_alert(sessionmaker)).attempts == 1

    hook = Receiver()
    async with serve_app(hook.app, port=port):
        clock.advance(seconds=1)
        assert await run_alert_job(settings) == 1

    alert = await the_alert(sessionmaker)
    assert (alert.state, alert.attempts, alert.delivered, alert.sent_at, alert.last_error) == (
        "sent",
        2,
        ["email", "webhook"],
        clock(),
        None,
    )
    assert [mail["Subject"] for mail in mailbox.messages] == [f"[sagebridge] {DISABLED}"]
    assert [p["data"]["title"] for p in received(hook)] == [DISABLED]


async def test_an_smtp_server_that_refuses_leaves_the_alert_failed_after_the_last_retry(
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    mailbox: Mailbox,
    queue: ArqRedis,
    sessionmaker: Maker,
    clock: Clock,
    run_alert_job: AlertRun,
) -> None:
    settings = email_settings(database_url, redis_url, tmp_path, smtp_url(mailbox))
    mailbox.refuse = True
    await Queue(queue).record_webhook_state("disabled")

    assert await run_alert_job(settings) == 0
    for delay in (60, 300, 900, 3600):  # ALERT_RETRY_DELAYS_SECONDS
        assert (await the_alert(sessionmaker)).next_attempt_at == clock() + timedelta(seconds=delay)
        clock.advance(seconds=delay)
        assert await run_alert_job(settings) == 0

    alert = await the_alert(sessionmaker)
    refused = (
        f"SMTP server 127.0.0.1:{mailbox.port}: SMTPRecipientsRefused: "
        "[SMTPRecipientRefused(550, '5.7.1 Relaying denied', 'ops@example.com')]"
    )
    assert (alert.state, alert.attempts, alert.next_attempt_at, alert.last_error) == (
        "failed",
        5,
        None,
        refused,
    )
    clock.advance(days=1)
    assert await run_alert_job(settings) == 0
    assert (await the_alert(sessionmaker)).attempts == 5  # failed is final
    assert mailbox.messages == []


async def test_a_hanging_receiver_holds_only_the_alerts_job_and_invoicing_goes_on(
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    queue: ArqRedis,
    sessionmaker: Maker,
    receiver: tuple[Receiver, str],
) -> None:
    hook, url = receiver
    hook.release = asyncio.Event()  # it takes the request and never answers
    settings = alert_settings(
        database_url,
        redis_url,
        tmp_path,
        alert_webhook_url=url,
        alert_webhook_secret=HOOK_SECRET,
        ledger_mappings_path=Path("tests/data/ledger_mappings.yaml").resolve(),
    )
    await Queue(queue).record_webhook_state("disabled")
    async with upstreams(pass_through="127.0.0.1") as (kommo, sage):
        kommo.add_lead(51, products=[(102, 1)])
        event_id = await record_trigger(sessionmaker, settings, 51)
        worker = build_worker(settings, burst=True, poll_delay=0.05)
        running = asyncio.create_task(worker.main())
        try:
            await asyncio.wait_for(hook.holding.wait(), 15)  # the alerts job is stuck in it
            state = await _wait_for_end(sessionmaker, event_id)
            assert state == "invoiced"  # while the alerts job is still waiting on the receiver
            assert not hook.release.is_set() and len(sage.invoices) == 1
            await asyncio.wait_for(running, 30)
        finally:
            hook.release.set()
            await worker.close()

    alert = await the_alert(sessionmaker)
    assert (alert.state, alert.attempts, alert.last_error) == (
        "pending",
        1,
        "webhook: no answer within 2 s",
    )


async def _wait_for_end(sessionmaker: Maker, event_id: int) -> str:
    for _ in range(300):
        async with sessionmaker() as session:
            event = await session.get(InboxEvent, event_id)
            if event is not None and event.state not in ("pending", "retrying"):
                return event.state
        await asyncio.sleep(0.05)
    raise AssertionError("the event never ended")


async def test_no_secret_reaches_a_log_line(
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    mailbox: Mailbox,
    queue: ArqRedis,
    sessionmaker: Maker,
    clock: Clock,
    run_alert_job: AlertRun,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    hook_url = f"http://127.0.0.1:{port}/services/{HOOK_PATH_TOKEN}"
    wrong_password = "wrong-smtp-password-1234"
    refused, good = (
        email_settings(
            database_url,
            redis_url,
            tmp_path,
            smtp_url(mailbox, password),
            alert_webhook_url=hook_url,
            alert_webhook_secret=HOOK_SECRET,
        )
        for password in (wrong_password, SMTP_PASSWORD)
    )
    logged = io.StringIO()
    before = structlog.get_config()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", logged)
        configure_logging("DEBUG", json=True)  # the application's own processors
    try:
        await Queue(queue).record_webhook_state("disabled")
        await run_alert_job(refused)  # the SMTP login refused, the receiver down
        async with serve_app(Receiver().app, port=port):
            clock.advance(seconds=60)
            assert await run_alert_job(good) == 1
    finally:
        structlog.configure(**before)

    lines = logged.getvalue().splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert events == ["alert.raised", "alert.retry_scheduled", "alert.sent", "alert.sent"]
    assert "SMTPAuthenticationError" in lines[1] and "ConnectError" in lines[1]
    secrets = [SMTP_PASSWORD, quote(SMTP_PASSWORD, safe=""), wrong_password, HOOK_SECRET]
    secrets += [HOOK_SECRET.removeprefix("whsec_"), HOOK_PATH_TOKEN, hook_url]
    assert [secret for secret in secrets if secret in logged.getvalue()] == []
    assert (await the_alert(sessionmaker)).state == "sent"
