"""A real SMTP server (aiosmtpd) and a real HTTP receiver, both on 127.0.0.1 in this event loop,
for the alerts to reach; plus settings pointing at them and a clock the test moves."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from arq.connections import ArqRedis
from fastapi import FastAPI, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from app.alerts.config import AlertConfig
from app.alerts.job import last_hook_check, run_alerts
from app.bridge import Bridge
from app.models import utcnow
from app.queue import Queue
from app.settings import Settings
from sandbox.runner import serve_app
from tests.conftest import make_settings
from tests.helpers import record_trigger, run_event
from tests.upstreams import upstreams

SMTP_USER = "bridge-mailer"
SMTP_PASSWORD = "smtp-pa$$word:with/odd@chars"
HOOK_SECRET = "whsec_" + base64.b64encode(b"alert-webhook-signing-key-0123456789").decode()
# Like a Slack incoming webhook URL: the path is a credential.
HOOK_PATH_TOKEN = "T0000/B0000/XXXXsecretpathtokenXXXX"
Maker = async_sessionmaker[AsyncSession]
SAGE_REFUSAL = "POST /sales_invoices → 422: RecordInvalid: Ledger account is not valid"


class Clock:
    """Starts at the real time (events carry real timestamps) and moves when told."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Mailbox:
    """What the SMTP server accepted, and a switch to make it refuse every recipient."""

    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    refuse: bool = False
    port: int = 0

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.refuse:
            return "550 5.7.1 Relaying denied"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == (SMTP_USER, SMTP_PASSWORD), handled=False)


@dataclass
class Receiver:
    """An HTTP endpoint that records each POST; it can answer an error or hold requests."""

    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 200
    release: asyncio.Event | None = None
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    app: FastAPI = field(default_factory=FastAPI)

    def __post_init__(self) -> None:
        self.app.add_api_route("/services/{path:path}", self._hook, methods=["POST"])

    async def _hook(self, request: Request) -> Response:
        self.requests.append((dict(request.headers), await request.body()))
        if self.release is not None:
            self.holding.set()
            await self.release.wait()
        return Response("ok", status_code=self.status)


@pytest.fixture
async def mailbox() -> AsyncIterator[Mailbox]:
    box = Mailbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            box,
            hostname="mail.test",
            authenticator=box.authenticate,
            auth_require_tls=False,
        ),
        host="127.0.0.1",
        port=0,
    )
    box.port = server.sockets[0].getsockname()[1]
    yield box
    server.close()
    await server.wait_closed()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    hook = Receiver()
    async with serve_app(hook.app) as base:
        yield hook, f"{base}/services/{HOOK_PATH_TOKEN}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


def alert_settings(database_url: str, redis_url: str, data_dir: Path, **overrides: Any) -> Settings:
    return make_settings(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=data_dir,
        alert_send_timeout_seconds=2,
        **overrides,
    )


@pytest.fixture
def channels_settings(
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    mailbox: Mailbox,
    receiver: tuple[Receiver, str],
) -> Settings:
    """Both channels on: email to two people through the local server, and the webhook."""
    return alert_settings(
        database_url,
        redis_url,
        tmp_path,
        alert_email_to=["ops@example.com", "oncall@example.com"],
        alert_email_from="bridge@example.com",
        smtp_url=f"smtp://{SMTP_USER}:{quote(SMTP_PASSWORD, safe='')}@127.0.0.1:{mailbox.port}"
        "?starttls=false",
        alert_webhook_url=receiver[1],
        alert_webhook_secret=HOOK_SECRET,
    )


@pytest.fixture
def hook_settings(
    database_url: str, redis_url: str, tmp_path: Path, receiver: tuple[Receiver, str]
) -> Settings:
    """The webhook alone."""
    return alert_settings(
        database_url,
        redis_url,
        tmp_path,
        alert_webhook_url=receiver[1],
        alert_webhook_secret=HOOK_SECRET,
    )


def received(hook: Receiver) -> list[dict[str, Any]]:
    """The payloads the receiver got, each signature checked."""
    return [Webhook(HOOK_SECRET).verify(body, headers) for headers, body in hook.requests]


AlertRun = Callable[..., Any]


@pytest.fixture
def run_alert_job(sessionmaker: Maker, queue: ArqRedis, clock: Clock) -> AlertRun:
    """What the worker's alerts job does, on the test's clock."""

    async def run(settings: Settings, *, budget: float = 20.0) -> int:
        return await run_alerts(
            sessionmaker,
            AlertConfig.from_settings(settings),
            hook=await last_hook_check(Queue(queue)),
            budget=budget,
            clock=clock,
        )

    return run


async def fail_deal(
    sessionmaker: Maker, settings: Settings, bridge: Bridge, deal_id: int, **moved: Any
) -> int:
    """A deal moved to the invoice stage whose invoice Sage refuses: the event ends failed."""
    async with upstreams() as (kommo, sage):
        kommo.add_lead(deal_id, products=[(102, 1)])
        sage.faults.refuse_next(
            "POST", "/v3.1/sales_invoices", status=422, message="Ledger account is not valid"
        )
        event_id = await record_trigger(sessionmaker, settings, deal_id, **moved)
        assert await run_event(sessionmaker, bridge, event_id) == "failed"
    return event_id
