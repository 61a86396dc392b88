"""One scan: findings become alerts in the outbox, at most one per cause per digest period.

The scan holds the scanner's lease (one worker at a time, across processes and hosts); the
marks, the cursor, the causes' state and the new alerts are committed together, so a scan that
dies changes nothing and the next one finds the same things again.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts import detect
from app.alerts.causes import Finding, Kind
from app.alerts.config import AlertConfig
from app.alerts.messages import MAX_LISTED, compose
from app.alerts.models import Alert, AlertCause, AlertState
from app.alerts.repository import AlertRepository, CauseRepository, ScanRepository, SignalRepository

log = structlog.get_logger(__name__)

SCANNER = "alerts"
# A first scan (a new install, or alerts just deployed) reports endings of the last day only.
FIRST_LOOKBACK = timedelta(days=1)


async def check(
    session: AsyncSession,
    config: AlertConfig,
    *,
    hook: Mapping[str, Any] | None,
    now: datetime,
) -> list[Alert]:
    """Scan once (unless another worker is scanning); return the alerts it raised."""
    scans = ScanRepository(session)
    scan = await scans.claim(SCANNER, now=now, lease=config.lease)
    if scan is None:
        log.info("alerts.scan_skipped", reason="another worker is scanning")
        return []
    signals = SignalRepository(session)
    since = scan.events_seen_until or now - FIRST_LOOKBACK
    found, newest = await detect.ended_events(
        signals, since=since, now=now, kommo_base_url=config.kommo_base_url
    )
    causes = CauseRepository(session)
    found += await _onsets(causes, await detect.conditions(signals, config, hook=hook, now=now))
    alerts = await _admit(causes, config, found, now) + await _digests(causes, config, now)
    AlertRepository(session).add_all(alerts)
    scan.events_seen_until = max(since, newest or since)
    scan.last_run_at = now
    scan.lease_until = None
    await session.commit()
    for alert in alerts:
        log.warning("alert.raised", alert_id=alert.id, cause=alert.cause, text=alert.text)
    return alerts


async def _onsets(causes: CauseRepository, holding: detect.Conditions) -> list[Finding]:
    """The conditions that hold now and did not at the last scan; those that stopped are reset,
    so they alert again if they return."""
    started: list[Finding] = []
    for kind, findings in holding.items():
        now_holding = {finding.cause: finding for finding in findings}
        rows = {row.cause: row for row in await causes.of_kind(kind.value)}
        for cause, row in rows.items():
            row.active = row.active and cause in now_holding
        for cause, finding in now_holding.items():
            row = rows.get(cause) or causes.add(cause=cause, kind=kind.value)
            if not row.active:
                row.active = True
                started.append(finding)
    return started


async def _admit(
    causes: CauseRepository, config: AlertConfig, found: list[Finding], now: datetime
) -> list[Alert]:
    """An alert per cause whose last one is a digest period old; the rest is held."""
    by_cause: dict[str, list[Finding]] = {}
    for finding in found:
        by_cause.setdefault(finding.cause, []).append(finding)
    alerts = []
    for cause, findings in by_cause.items():
        kind = findings[0].kind
        row = await causes.get(cause) or causes.add(cause=cause, kind=kind.value)
        held_over = row.held_count > 0
        _hold(row, [finding.item() for finding in findings])
        last = row.last_alert_at
        if last is None or now - last >= config.digest_every:
            alerts.append(_release(row, kind, config, now, digest=held_over))
    return alerts


async def _digests(causes: CauseRepository, config: AlertConfig, now: datetime) -> list[Alert]:
    """What was held for causes whose period is up and that saw nothing new this scan."""
    rows = await causes.digests_due(last_alert_before=now - config.digest_every)
    return [_release(row, Kind(row.kind), config, now, digest=True) for row in rows]


def _hold(row: AlertCause, items: list[dict[str, Any]]) -> None:
    row.held = [*row.held, *items][:MAX_LISTED]
    row.held_count += len(items)


def _release(
    row: AlertCause, kind: Kind, config: AlertConfig, now: datetime, *, digest: bool
) -> Alert:
    """Everything held becomes one alert; a digest when some of it waited for the period."""
    since = row.last_alert_at if digest else None
    message = compose(
        kind, row.held, count=row.held_count, digest_since=since, every=config.digest_every
    )
    alert = _outbox(row, kind, config, now, message.title, message.text)
    alert.digest = digest
    row.held, row.held_count, row.last_alert_at = [], 0, now
    return alert


def _outbox(
    row: AlertCause, kind: Kind, config: AlertConfig, now: datetime, title: str, text: str
) -> Alert:
    channels = config.channels
    return Alert(
        message_id=f"msg_{uuid.uuid4().hex}",
        cause=row.cause,
        kind=kind.value,
        count=row.held_count,
        title=title,
        text=text,
        items=list(row.held),
        channels=channels,
        delivered=[],
        state=(AlertState.PENDING if channels else AlertState.RECORDED).value,
        attempts=0,
        next_attempt_at=now if channels else None,
        created_at=now,
    )
