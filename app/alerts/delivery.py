"""Sending the outbox: each due alert is claimed by one worker, sent on every channel that has
not taken it yet (each send bounded by ALERT_SEND_TIMEOUT_SECONDS), then retried on the
ALERT_RETRY_DELAYS_SECONDS ladder, and failed after its last rung."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerts.channels import Channel, DeliveryError
from app.alerts.config import AlertConfig
from app.alerts.models import Alert, AlertState
from app.alerts.repository import AlertRepository

log = structlog.get_logger(__name__)
Clock = Callable[[], datetime]


async def deliver_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    channels: Mapping[str, Channel],
    config: AlertConfig,
    *,
    clock: Clock,
    budget: float,
) -> int:
    """Send due alerts, oldest first, while one more fits in `budget` seconds; how many went."""
    loop = asyncio.get_running_loop()
    # The last alert started must finish in the budget even if every channel times out.
    last_start = loop.time() + budget - config.send_timeout * max(1, len(channels))
    sent = 0
    while loop.time() <= last_start:
        async with sessionmaker() as session:
            alert = await AlertRepository(session).claim_due(now=clock(), lease=config.lease)
            if alert is None:
                break
            await _deliver(alert, channels, config, clock)
            await session.commit()
        sent += alert.state == AlertState.SENT
    return sent


async def _deliver(
    alert: Alert, channels: Mapping[str, Channel], config: AlertConfig, clock: Clock
) -> None:
    if alert.attempts > len(config.retry_delays) + 1:
        # Earlier claims ended without a result (the job timed out or the worker died).
        errors = {"job": f"stopped while sending, {alert.attempts - 1} times"}
    else:
        errors = await _send(alert, channels, config)
    _settle(alert, errors, config, clock())


async def _send(
    alert: Alert, channels: Mapping[str, Channel], config: AlertConfig
) -> dict[str, str]:
    errors: dict[str, str] = {}
    for name in [c for c in alert.channels if c not in alert.delivered]:
        try:
            await _send_on(channels.get(name), name, alert, limit=config.send_timeout)
        except DeliveryError as exc:
            errors[name] = str(exc)
            continue
        alert.delivered = [*alert.delivered, name]
        log.info("alert.sent", alert_id=alert.id, cause=alert.cause, channel=name)
    return errors


async def _send_on(channel: Channel | None, name: str, alert: Alert, *, limit: float) -> None:
    if channel is None:
        raise DeliveryError(f"the {name} channel is no longer configured")
    try:
        async with asyncio.timeout(limit):
            await channel.send(alert)
    except TimeoutError as exc:
        raise DeliveryError(f"{name}: no answer within {limit:g} s") from exc
    except DeliveryError:
        raise
    except Exception as exc:  # a bug in one channel must not stop the others, nor the outbox
        log.exception("alert.channel_error", alert_id=alert.id, channel=name)
        raise DeliveryError(f"{name}: {type(exc).__name__}") from exc


def _settle(alert: Alert, errors: dict[str, str], config: AlertConfig, now: datetime) -> None:
    alert.lease_until = None
    if not errors:
        alert.state, alert.sent_at = AlertState.SENT.value, now
        alert.next_attempt_at, alert.last_error = None, None
        return
    alert.last_error = "; ".join(errors.values())
    fields = {"alert_id": alert.id, "cause": alert.cause, "attempt": alert.attempts}
    if alert.attempts > len(config.retry_delays):
        alert.state, alert.next_attempt_at = AlertState.FAILED.value, None
        log.error("alert.failed", **fields, error=alert.last_error, channels=sorted(errors))
        return
    alert.next_attempt_at = now + config.retry_delays[alert.attempts - 1]
    log.warning(
        "alert.retry_scheduled",
        **fields,
        error=alert.last_error,
        channels=sorted(errors),
        next_attempt_at=alert.next_attempt_at.isoformat(),
    )
