"""Alert settings are checked whole at start: each refusal names the variable, never a value."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import ValidationError

from app.alerts.config import AlertConfig, SmtpServer
from app.settings import Settings, describe_errors
from tests.alerts.conftest import HOOK_SECRET

PASSWORD = "hunter2-do-not-print"


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        (
            "smtp://mailer:p%40ss%3Aword@mail.example.com:587?starttls=true",
            ("mail.example.com", 587, "mailer", "p@ss:word", False, True),
        ),
        (
            "smtps://mailer:pw@mail.example.com",
            ("mail.example.com", 465, "mailer", "pw", True, None),
        ),
        ("smtp://mail.example.com", ("mail.example.com", 25, None, None, False, None)),
        (
            "smtp://mail.example.com?starttls=true",
            ("mail.example.com", 587, None, None, False, True),
        ),
        ("smtp://127.0.0.1:2525?starttls=false", ("127.0.0.1", 2525, None, None, False, False)),
    ],
)
def test_smtp_url_gives_host_port_login_and_tls(url: str, parsed: tuple[Any, ...]) -> None:
    smtp = SmtpServer.parse(url)
    assert (smtp.host, smtp.port, smtp.username, smtp.password, smtp.use_tls, smtp.start_tls) == (
        parsed
    )


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (
            {"smtp_url": f"http://mailer:{PASSWORD}@mail.example.com"},
            "SMTP_URL must look like smtp://user:password@host:587 or smtps://…",
        ),
        (
            {"smtp_url": f"smtps://mailer:{PASSWORD}@mail.example.com?starttls=true"},
            "SMTP_URL: smtps:// is TLS already; drop ?starttls=true",
        ),
        (
            {"smtp_url": f"smtp://mailer:{PASSWORD}@mail.example.com?starttls=maybe"},
            "SMTP_URL: starttls must be true or false",
        ),
        (
            {"smtp_url": f"smtp://mailer:{PASSWORD}@mail.example.com:99999"},
            "SMTP_URL: the port is not a number from 1 to 65535",
        ),
        (
            {"alert_email_to": [f"ops@example.com\r\nBcc: {PASSWORD}@evil.test"]},
            "ALERT_EMAIL_TO: not an email address (name@example.com)",
        ),
        (
            {"alert_email_from": "the bridge"},
            "ALERT_EMAIL_FROM: not an email address (name@example.com)",
        ),
    ],
)
def test_a_bad_email_setting_is_refused_by_name(values: dict[str, Any], problem: str) -> None:
    email = {
        "alert_email_to": ["ops@example.com"],
        "alert_email_from": "bridge@example.com",
        "smtp_url": "smtp://mail.example.com",
    }
    assert _refusal({**email, **values}) == problem


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (
            {"alert_email_to": ["ops@example.com"]},
            "email alerts are partly configured; also set: ALERT_EMAIL_FROM, SMTP_URL",
        ),
        (
            {"smtp_url": f"smtp://mailer:{PASSWORD}@mail.example.com"},
            "email alerts are partly configured; also set: ALERT_EMAIL_TO, ALERT_EMAIL_FROM",
        ),
        (
            {"alert_webhook_url": f"https://hooks.example.com/{PASSWORD}"},
            "webhook alerts are partly configured; also set: ALERT_WEBHOOK_SECRET",
        ),
        (
            {
                "alert_webhook_url": f"ftp://hooks.example.com/{PASSWORD}",
                "alert_webhook_secret": HOOK_SECRET,
            },
            "ALERT_WEBHOOK_URL must be an http:// or https:// URL",
        ),
    ],
)
def test_a_partial_or_bad_channel_is_refused_by_name(values: dict[str, Any], problem: str) -> None:
    assert _refusal(values) == problem


@pytest.mark.parametrize(
    "secret",
    [
        PASSWORD,
        "whsec_" + base64.b64encode(b"too short").decode(),
        "whsec_" + PASSWORD,  # not base64
        "whsec_" + base64.b64encode(b"x" * 65).decode(),
    ],
)
def test_a_webhook_secret_not_in_the_standard_form_is_refused(secret: str) -> None:
    problem = _refusal(
        {"alert_webhook_url": "https://hooks.example.com/x", "alert_webhook_secret": secret}
    )
    assert problem.startswith(
        "ALERT_WEBHOOK_SECRET must be whsec_ followed by the base64 of 24 to 64 random bytes"
    )


def test_the_parsed_config_shows_no_secret() -> None:
    settings = Settings(
        alert_email_to=["ops@example.com"],
        alert_email_from="bridge@example.com",
        smtp_url=f"smtp://mailer:{PASSWORD}@mail.example.com",
        alert_webhook_url="https://hooks.example.com/T000/B000/path-credential",
        alert_webhook_secret=HOOK_SECRET,
    )
    shown = repr(AlertConfig.from_settings(settings)) + repr(settings)
    for secret in (PASSWORD, "path-credential", HOOK_SECRET):
        assert secret not in shown
    assert AlertConfig.from_settings(settings).channels == ["email", "webhook"]


def _refusal(values: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as refused:
        Settings(**values)
    problem = describe_errors(refused.value)
    assert PASSWORD not in problem
    return problem
