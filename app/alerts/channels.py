"""Where alerts go: email over SMTP, and a webhook signed as Standard Webhooks specify
(https://www.standardwebhooks.com/) whose `text` field is what Slack's incoming webhooks show."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Protocol

import aiosmtplib
import httpx
from standardwebhooks import Webhook

from app.alerts.config import EMAIL, WEBHOOK, AlertConfig, SmtpServer
from app.alerts.models import Alert


class DeliveryError(Exception):
    """A channel did not take the alert. The message says why and never carries a secret."""


class Channel(Protocol):
    async def send(self, alert: Alert) -> None: ...


class EmailChannel:
    def __init__(
        self, smtp: SmtpServer, *, sender: str, recipients: tuple[str, ...], timeout: float
    ) -> None:
        self._smtp = smtp
        self._sender = sender
        self._recipients = recipients
        self._timeout = timeout

    async def send(self, alert: Alert) -> None:
        smtp = self._smtp
        try:
            await aiosmtplib.send(
                self._message(alert),
                hostname=smtp.host,
                port=smtp.port,
                username=smtp.username,
                password=smtp.password,
                use_tls=smtp.use_tls,
                start_tls=smtp.start_tls,
                timeout=self._timeout,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP server {smtp.host}:{smtp.port}: {_describe(exc)}") from exc

    def _message(self, alert: Alert) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = ", ".join(self._recipients)
        message["Subject"] = f"[sagebridge] {alert.title}"
        message["Date"] = format_datetime(alert.created_at)
        # The same on every retry, so a mail system can drop a copy it already delivered.
        message["Message-ID"] = f"<{alert.message_id}@{self._sender.rsplit('@', 1)[-1]}>"
        message.set_content(
            f"{alert.text}\n\n-- \nsagebridge alert {alert.id} ({alert.cause}), "
            f"{alert.created_at:%Y-%m-%d %H:%M:%S} UTC. All alerts: GET /ops/alerts\n"
        )
        return message


class WebhookChannel:
    def __init__(self, http: httpx.AsyncClient, *, url: str, secret: str) -> None:
        self._http = http
        self._url = url
        self._signer = Webhook(secret)

    async def send(self, alert: Alert) -> None:
        body = json.dumps(webhook_payload(alert), separators=(",", ":"))
        # The receiver checks this against its own clock: the real time, whatever the caller's.
        at = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()), UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": alert.message_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": self._signer.sign(alert.message_id, at, body),
        }
        try:
            response = await self._http.post(self._url, content=body.encode(), headers=headers)
        except httpx.HTTPError as exc:
            # Never the URL: a Slack webhook URL is itself a credential.
            raise DeliveryError(f"webhook: {_describe(exc).replace(self._url, '<url>')}") from exc
        if not response.is_success:
            raise DeliveryError(f"webhook: the receiver answered HTTP {response.status_code}")


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """Standard Webhooks' payload shape (type, timestamp, data) plus Slack's `text`."""
    return {
        "type": f"alert.{alert.kind}",
        "timestamp": alert.created_at.isoformat(),
        "text": slack_escaped(alert.text),
        "data": {
            "id": alert.id,
            "cause": alert.cause,
            "kind": alert.kind,
            "title": alert.title,
            "digest": alert.digest,
            "count": alert.count,
            "items": alert.items,
            "created_at": alert.created_at.isoformat(),
        },
    }


@asynccontextmanager
async def open_channels(config: AlertConfig) -> AsyncIterator[dict[str, Channel]]:
    """The configured channels; the webhook's HTTP client lives as long as this block."""
    channels: dict[str, Channel] = {}
    async with AsyncExitStack() as stack:
        if config.smtp and config.email_from:
            channels[EMAIL] = EmailChannel(
                config.smtp,
                sender=config.email_from,
                recipients=config.email_to,
                timeout=config.send_timeout,
            )
        if config.webhook_url and config.webhook_secret:
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=config.send_timeout))
            channels[WEBHOOK] = WebhookChannel(
                http, url=config.webhook_url, secret=config.webhook_secret
            )
        yield channels


def slack_escaped(text: str) -> str:
    """Slack reads &, < and > as markup (a `<` starts a link): the three it asks to escape,
    and only those (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
