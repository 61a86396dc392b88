"""Durable state → findings. Event endings are occurrences (each alerted once, by its mark);
the rest are conditions that hold or not at each scan (alerted when they start to hold)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from app.alerts.causes import Finding, Kind
from app.alerts.config import AlertConfig
from app.alerts.repository import SignalRepository
from app.connections.models import Connection, ConnectionState, GrantKind
from app.inbox.models import EventState, InboxEvent

ENDINGS = {
    EventState.FAILED.value: Kind.EVENT_FAILED,
    EventState.NEEDS_MAPPING.value: Kind.EVENT_NEEDS_MAPPING,
}
# Looked at again behind the cursor: a transaction that stamped its updated_at before an
# earlier scan but committed after it is still found (its mark keeps it from alerting twice).
CURSOR_LAG = timedelta(minutes=10)
BATCH = 200
MAX_ERROR_CHARS = 500
Conditions = dict[Kind, list[Finding]]


async def ended_events(
    signals: SignalRepository, *, since: datetime, now: datetime, kommo_base_url: str | None
) -> tuple[list[Finding], datetime | None]:
    """Findings for endings not alerted yet (marked now), and the newest updated_at seen."""
    events = await signals.unmarked_endings(list(ENDINGS), since=since - CURSOR_LAG, limit=BATCH)
    signals.mark(events, now=now)
    newest = max((event.updated_at for event in events), default=None)
    return [_ending(event, kommo_base_url) for event in events], newest


def _ending(event: InboxEvent, kommo_base_url: str | None) -> Finding:
    error = (event.last_error or "no error recorded")[:MAX_ERROR_CHARS]
    url = _deal_url(event, kommo_base_url)
    text = f"Deal {event.deal_id} (event {event.id}): {error}" + (f" {url}" if url else "")
    data = {
        "event_id": event.id,
        "deal_id": event.deal_id,
        "state": event.state,
        "error": error,
        "deal_url": url,
    }
    return Finding(ENDINGS[event.state], "", text, data)


def _deal_url(event: InboxEvent, kommo_base_url: str | None) -> str | None:
    if not kommo_base_url or not event.deal_id or not event.action.startswith("leads."):
        return None
    return f"{kommo_base_url.rstrip('/')}/leads/detail/{event.deal_id}"


async def conditions(
    signals: SignalRepository,
    config: AlertConfig,
    *,
    hook: Mapping[str, Any] | None,
    now: datetime,
) -> Conditions:
    """What holds now, per kind; a kind left out could not be looked at (it keeps its state)."""
    rows = await signals.connections()
    found: Conditions = {
        Kind.CONNECTION_NEEDS_REAUTH: [_reauth(row) for row in rows if _needs_reauth(row)],
        Kind.TOKEN_EXPIRING: _expiring(rows, now, config.token_expiry_within),
        Kind.EVENTS_WAITING: await _waiting(signals, now, config.pending_after),
    }
    if hook is not None:
        found[Kind.KOMMO_WEBHOOK_DISABLED] = _hook(hook)
    return found


def _needs_reauth(row: Connection) -> bool:
    return row.state == ConnectionState.NEEDS_REAUTH.value


def _name(row: Connection) -> str:
    named = f" '{row.display_name}'" if row.display_name else ""
    return f"{row.provider.capitalize()} connection{named} (account {row.account})"


def _connection_data(row: Connection) -> dict[str, Any]:
    return {"provider": row.provider, "account": row.account, "name": row.display_name}


def _reauth(row: Connection) -> Finding:
    why = f": {row.last_error}" if row.last_error else ""
    text = f"{_name(row)} needs re-authorisation{why}"
    data = {**_connection_data(row), "error": row.last_error}
    return Finding(Kind.CONNECTION_NEEDS_REAUTH, f"{row.provider}:{row.account}", text, data)


def _expiring(rows: list[Connection], now: datetime, within: timedelta) -> list[Finding]:
    found = []
    for row in rows:
        expires = _grant_expiry(row)
        if row.state == ConnectionState.ACTIVE.value and expires and expires - now < within:
            found.append(_expiry(row, expires, now))
    return found


def _grant_expiry(row: Connection) -> datetime | None:
    """A long-lived Kommo token has no refresh token: the token itself is what expires."""
    return row.access_expires_at if row.kind == GrantKind.LONG_LIVED else row.refresh_expires_at


def _expiry(row: Connection, expires: datetime, now: datetime) -> Finding:
    what = "long-lived token" if row.kind == GrantKind.LONG_LIVED else "refresh token"
    days = (expires - now) / timedelta(days=1)
    when = f"{expires:%Y-%m-%d %H:%M} UTC"
    left = f"expires {when}, in {days:.1f} days" if days > 0 else f"expired {when}"
    text = f"{_name(row)}: the {what} {left}"
    data = {**_connection_data(row), "expires_at": expires.isoformat(), "days_left": days}
    return Finding(Kind.TOKEN_EXPIRING, f"{row.provider}:{row.account}", text, data)


async def _waiting(signals: SignalRepository, now: datetime, after: timedelta) -> list[Finding]:
    oldest, count = await signals.oldest_waiting(due_before=now - after)
    if oldest is None or oldest.next_attempt_at is None:
        return []
    minutes = int((now - oldest.next_attempt_at) / timedelta(minutes=1))
    text = (
        f"{count} event(s) due for over {int(after / timedelta(minutes=1))} minutes and not "
        f"run; the oldest, event {oldest.id} (deal {oldest.deal_id}), for {minutes} minutes"
    )
    data = {
        "count": count,
        "oldest_event_id": oldest.id,
        "deal_id": oldest.deal_id,
        "due_since": oldest.next_attempt_at.isoformat(),
        "minutes": minutes,
    }
    return [Finding(Kind.EVENTS_WAITING, "", text, data)]


def _hook(hook: Mapping[str, Any]) -> list[Finding]:
    if hook.get("state") != "disabled":
        return []
    checked = str(hook.get("checked_at") or "unknown")
    text = f"Kommo reports the bridge's webhook disabled (checked {checked})"
    return [Finding(Kind.KOMMO_WEBHOOK_DISABLED, "", text, {"checked_at": checked})]
