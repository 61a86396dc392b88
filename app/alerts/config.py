"""What alerting is configured to do, checked whole when Settings load (a bad value stops every
command at start, naming the variable and never quoting it)."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import timedelta
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from app.settings import Settings

EMAIL = "email"
WEBHOOK = "webhook"
_STARTTLS = {"true": True, "false": False}
WHSEC = "whsec_"
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64


@dataclass(frozen=True)
class SmtpServer:
    """SMTP_URL taken apart: smtp://user:pass@host:587?starttls=true, or smtps://… (TLS from
    the first byte). Without `starttls`, STARTTLS is used when the server offers it."""

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    use_tls: bool
    start_tls: bool | None

    @classmethod
    def parse(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:password@host:587 or smtps://…")
        start_tls = _starttls(parts.query)
        use_tls = parts.scheme == "smtps"
        if use_tls and start_tls:
            raise ValueError("SMTP_URL: smtps:// is TLS already; drop ?starttls=true")
        try:
            port = parts.port or (465 if use_tls else 587 if start_tls else 25)
        except ValueError:
            raise ValueError("SMTP_URL: the port is not a number from 1 to 65535") from None
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=start_tls,
        )


def _starttls(query: str) -> bool | None:
    values = parse_qs(query).get("starttls")
    if values is None:
        return None
    if values[-1].lower() not in _STARTTLS:
        raise ValueError("SMTP_URL: starttls must be true or false")
    return _STARTTLS[values[-1].lower()]


@dataclass(frozen=True)
class AlertConfig:
    email_to: tuple[str, ...]
    email_from: str | None
    smtp: SmtpServer | None
    webhook_url: str | None = field(repr=False)
    webhook_secret: str | None = field(repr=False)
    pending_after: timedelta
    token_expiry_within: timedelta
    digest_every: timedelta
    retry_delays: tuple[timedelta, ...]
    send_timeout: float
    # A claimed alert whose worker died is offered again after this.
    lease: timedelta
    kommo_base_url: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertConfig:
        email = bool(settings.alert_email_to)
        _all_or_none(
            "email alerts",
            {
                "ALERT_EMAIL_TO": email,
                "ALERT_EMAIL_FROM": settings.alert_email_from is not None,
                "SMTP_URL": settings.smtp_url is not None,
            },
        )
        _all_or_none(
            "webhook alerts",
            {
                "ALERT_WEBHOOK_URL": settings.alert_webhook_url is not None,
                "ALERT_WEBHOOK_SECRET": settings.alert_webhook_secret is not None,
            },
        )
        smtp_url = settings.smtp_url.get_secret_value() if settings.smtp_url else None
        hook_url = settings.alert_webhook_url
        hook_secret = settings.alert_webhook_secret
        return cls(
            email_to=tuple(_address("ALERT_EMAIL_TO", a) for a in settings.alert_email_to),
            email_from=_address("ALERT_EMAIL_FROM", settings.alert_email_from)
            if settings.alert_email_from
            else None,
            smtp=SmtpServer.parse(smtp_url) if smtp_url else None,
            webhook_url=_webhook_url(hook_url.get_secret_value()) if hook_url else None,
            webhook_secret=_webhook_secret(hook_secret.get_secret_value()) if hook_secret else None,
            pending_after=timedelta(minutes=settings.alert_pending_minutes),
            token_expiry_within=timedelta(days=settings.alert_token_expiry_days),
            digest_every=timedelta(minutes=settings.alert_digest_minutes),
            retry_delays=tuple(timedelta(seconds=s) for s in settings.alert_retry_delays_seconds),
            send_timeout=settings.alert_send_timeout_seconds,
            lease=timedelta(seconds=settings.job_timeout_seconds + 10),
            kommo_base_url=settings.kommo_base_url,
        )

    @property
    def channels(self) -> list[str]:
        return [name for name, on in ((EMAIL, self.smtp), (WEBHOOK, self.webhook_url)) if on]


def _all_or_none(what: str, given: dict[str, bool]) -> None:
    missing = [name for name, present in given.items() if not present]
    if missing and len(missing) < len(given):
        raise ValueError(f"{what} are partly configured; also set: {', '.join(missing)}")


def _address(variable: str, value: str) -> str:
    try:
        address = Address(addr_spec=value.strip())
    except (HeaderParseError, ValueError, IndexError):
        address = None
    if address is None or not address.username or not address.domain:
        raise ValueError(f"{variable}: not an email address (name@example.com)")
    return address.addr_spec


def _webhook_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("ALERT_WEBHOOK_URL must be an http:// or https:// URL")
    return url


def _webhook_secret(secret: str) -> str:
    """The spec's form: whsec_ and base64 of 24 to 64 random bytes (Standard Webhooks,
    "Symmetric signature"); the library itself accepts anything that decodes."""
    try:
        key = base64.b64decode(secret.removeprefix(WHSEC), validate=True)
    except binascii.Error:
        key = b""
    if not secret.startswith(WHSEC) or not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            "ALERT_WEBHOOK_SECRET must be whsec_ followed by the base64 of 24 to 64 random bytes"
            " (python3 -c 'import base64, secrets; "
            'print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())\')'
        )
    return secret
