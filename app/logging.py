"""structlog configuration, in one place, with a processor that keeps secrets out of every event."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from sandbox.defaults import PUBLIC_TOKENS

_SECRET_KEYS = re.compile(
    r"(authorization|token|secret|password|client_secret|api_key|cookie)", re.IGNORECASE
)
_BEARER = re.compile(r"(?i)bearer\s+([A-Za-z0-9._~+/=-]+)")
# The webhook secret travels in the URL path; never let a logged URL carry it.
_WEBHOOK_PATH = re.compile(r"(/webhooks/kommo/)[^/?\s]+")
REDACTED = "[REDACTED]"


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _WEBHOOK_PATH.sub(r"\1" + REDACTED, _BEARER.sub(_bearer, value))
    if isinstance(value, Mapping):
        return {
            k: REDACTED if _SECRET_KEYS.search(str(k)) else _redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


def _bearer(match: re.Match[str]) -> str:
    """A bearer token in text, unless it is one the sandbox publishes (a command printed for a
    newcomer must work as printed)."""
    return match.group(0) if match.group(1) in PUBLIC_TOKENS else "Bearer " + REDACTED


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Blank secret-looking keys; scrub bearer tokens and webhook secrets out of strings."""
    for key in list(event_dict):
        if _SECRET_KEYS.search(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


def configure_logging(
    level: str = "INFO", *, json: bool = False, stream: TextIO | None = None
) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library; keep their chatter at WARNING and above.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
