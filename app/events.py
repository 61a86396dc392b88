"""Running one inbox event: claim it, do its work, and end it in a named state.

Transient failures are retried on the configured ladder and then become a task for the deal's
manager; permanent ones become a task at once. The task is part of the event's durable state,
so it is opened exactly once even if the CRM is down when the event ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app import lineage
from app.connections.errors import ReauthorizationRequired
from app.errors import UpstreamPermanentError, UpstreamTransientError
from app.invoicing import Bridge, Outcome, WriteBackRefused, raise_invoice
from app.metrics import EVENTS_FINISHED, RETRIES, TASKS_OPENED
from app.models import TERMINAL_STATES, EventState, InboxEvent, TaskState, utcnow
from app.payment_status import apply_statuses, status_from_payload
from app.repositories import InboxRepository, SyncLogRepository

log = structlog.get_logger(__name__)

TASK_RETRY_DELAY = timedelta(seconds=60)
MAX_TASK_ATTEMPTS = 10
MAX_CRASHES = 3
ConnectionCheck = Callable[[str, str], Awaitable[bool]]


async def process_event(session: AsyncSession, bridge: Bridge, event_id: int) -> EventState | None:
    """Run one inbox event if it is due and nobody else holds it; return its state afterwards."""
    inbox = InboxRepository(session)
    event = await inbox.claim(event_id, lease=bridge.config.lease)
    if event is None:
        return None
    structlog.contextvars.bind_contextvars(event_id=event.id, deal_id=event.deal_id)
    lineage.begin()
    try:
        if event.state not in TERMINAL_STATES and event.runs > _max_runs(bridge):
            _finish(event, _stopped_too_often(event))
        elif event.state not in TERMINAL_STATES:
            await _run(session, bridge, event)
        if event.task_state == TaskState.PENDING:
            await _open_task(session, bridge, event)
        return EventState(event.state)
    finally:
        event.lease_until = None
        lineage.note("event", event.state, detail=event.last_error, attempt=event.attempts)
        SyncLogRepository(session).add(
            event_id=event.id, deal_id=event.deal_id, entries=lineage.drain()
        )
        await session.commit()
        structlog.contextvars.unbind_contextvars("event_id", "deal_id")


async def _run(session: AsyncSession, bridge: Bridge, event: InboxEvent) -> None:
    try:
        outcome = await _handle(session, bridge, event)
    except UpstreamTransientError as exc:
        await _retry_or_give_up(session, bridge, event, exc)
        return
    except UpstreamPermanentError as exc:
        outcome = Outcome(EventState.FAILED, exc.detail, _permanent_task_text(exc))
    except ReauthorizationRequired as exc:
        _park(event, exc)
        return
    except asyncio.CancelledError:
        # arq's job timeout: count it as an attempt on the ladder, then let the cancel go on.
        await _recover(session, event)
        await _retry_or_give_up(session, bridge, event, TimeoutError("the job timed out"))
        raise
    except Exception as exc:  # a bug must not lose the event: retry it like a transient error
        log.exception("event.unexpected_error")
        await _recover(session, event)
        await _retry_or_give_up(session, bridge, event, exc)
        return
    _finish(event, outcome)
    log.info("event.finished", state=outcome.state.value, detail=outcome.detail)


async def _recover(session: AsyncSession, event: InboxEvent) -> None:
    """After an unexpected error the session may be unusable: start clean, re-read the event."""
    await session.rollback()
    await session.refresh(event)


def _max_runs(bridge: Bridge) -> int:
    """Claims allowed before giving up: every rung of the ladder plus a few crashes' worth."""
    return len(bridge.config.retry_delays) + MAX_CRASHES


def _stopped_too_often(event: InboxEvent) -> Outcome:
    detail = (
        f"the job stopped {event.runs - 1} times without finishing (a job timeout or a worker "
        "crash); the bridge has stopped trying"
    )
    return Outcome(EventState.FAILED, detail, _exhausted_task_text(event, detail))


async def _handle(session: AsyncSession, bridge: Bridge, event: InboxEvent) -> Outcome:
    if event.source == "sage":
        status = status_from_payload(event.payload)
        written = await apply_statuses(session, bridge.crm, [status], today=utcnow().date())
        return Outcome(EventState.APPLIED, f"status {status.status_id}: {written} deal(s) updated")
    return await raise_invoice(session, bridge, event)


async def _retry_or_give_up(
    session: AsyncSession, bridge: Bridge, event: InboxEvent, exc: Exception
) -> None:
    event.attempts += 1
    detail = exc.detail if isinstance(exc, UpstreamTransientError) else repr(exc)
    event.last_error = detail
    delays = bridge.config.retry_delays
    if event.attempts > len(delays):
        _finish(event, Outcome(EventState.FAILED, detail, _exhausted_task_text(event, detail)))
        log.warning("event.retries_exhausted", attempts=event.attempts, error=detail)
        return
    delay = delays[event.attempts - 1]
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    event.state = EventState.RETRYING.value
    RETRIES.inc()
    event.next_attempt_at = utcnow() + delay
    event.lease_until = None
    await session.commit()
    log.warning(
        "event.retry_scheduled", attempt=event.attempts, delay_s=delay.total_seconds(), error=detail
    )
    await bridge.schedule(event.id, event.attempts, event.next_attempt_at)


def _park(event: InboxEvent, exc: ReauthorizationRequired) -> None:
    """No retries burnt and no task: no deal's manager can fix a dead grant, ops can."""
    event.state = EventState.WAITING_CONNECTION.value
    event.next_attempt_at = None
    event.last_error = (
        f"{exc}. Connect again (POST /ops/connections/{exc.provider}/start); the event resumes "
        "by itself once the connection is active."
    )
    event.payload = {
        **event.payload,
        "waiting_for": {"provider": exc.provider, "account": exc.account},
    }
    log.warning("event.waiting_connection", provider=exc.provider, account=exc.account)


async def resume_waiting(session: AsyncSession, is_active: ConnectionCheck) -> list[int]:
    """Events parked on a connection that is active again become pending; returns their ids."""
    parked, _ = await InboxRepository(session).list(
        states=[EventState.WAITING_CONNECTION.value], limit=10_000, offset=0
    )
    resumed = []
    for event in parked:
        waiting = event.payload.get("waiting_for") or {}
        if await is_active(str(waiting.get("provider")), str(waiting.get("account"))):
            event.state = EventState.PENDING.value
            event.next_attempt_at = utcnow()
            resumed.append(event.id)
    await session.commit()
    if resumed:
        log.info("events.resumed", count=len(resumed))
    return resumed


def _finish(event: InboxEvent, outcome: Outcome) -> None:
    EVENTS_FINISHED.labels(outcome.state.value).inc()
    event.state = outcome.state.value
    if outcome.unmapped:
        event.payload = {**event.payload, "unmapped": list(outcome.unmapped)}
    event.next_attempt_at = None
    event.last_error = None if outcome.state == EventState.INVOICED else outcome.detail
    if outcome.task_text is not None:
        event.task_state = TaskState.PENDING.value
        event.task_text = outcome.task_text
        event.next_attempt_at = utcnow()


def _task_failed(event: InboxEvent, error: str) -> None:
    """Offered again after a delay (the sweeper), a bounded number of times."""
    if event.task_attempts >= MAX_TASK_ATTEMPTS:
        event.task_state = TaskState.FAILED.value
        event.next_attempt_at = None
        event.last_error = f"{event.last_error}; the CRM task could not be opened: {error}"
        log.error("task.given_up", attempts=event.task_attempts, error=error)
        return
    event.next_attempt_at = utcnow() + TASK_RETRY_DELAY
    log.error("task.create_failed", attempt=event.task_attempts, error=error)


async def _open_task(session: AsyncSession, bridge: Bridge, event: InboxEvent) -> None:
    """Exactly one task per finished event: the state is committed before the CRM call."""
    event.task_attempts += 1
    await session.commit()
    due = utcnow() + bridge.config.task_deadline
    try:
        task_id = await bridge.crm.create_task(
            deal_id=event.deal_id,
            responsible_user_id=event.responsible_user_id,
            text=event.task_text or "",
            due=due,
        )
    except (UpstreamTransientError, UpstreamPermanentError, ReauthorizationRequired) as exc:
        _task_failed(event, getattr(exc, "detail", str(exc)))
        return
    event.task_state = TaskState.CREATED.value
    lineage.note("task", "created", task_id=task_id, text=event.task_text)
    TASKS_OPENED.inc()
    event.task_id = task_id
    event.next_attempt_at = None
    log.info("task.created", task_id=task_id)


def _permanent_task_text(exc: UpstreamPermanentError) -> str:
    if isinstance(exc, WriteBackRefused):
        return (
            f"Sage invoice {exc.invoice.number} WAS raised ({exc.invoice.url}), but "
            f"{exc.upstream.capitalize()} refused to show it on this deal: {exc.detail}. Do not "
            "raise it again; check the deal's invoice fields, or ask ops to replay the event."
        )
    return (
        f"Sage invoice NOT raised: {exc.upstream.capitalize()} refused it: {exc.detail}. "
        "Correct what it names, then move the deal to the invoice stage again."
    )


def _exhausted_task_text(event: InboxEvent, detail: str) -> str:
    return (
        f"Sage invoice NOT raised after {event.attempts} attempts; the last error was: {detail}. "
        f"The bridge has stopped retrying. When the service is reachable again, ask ops to "
        f"replay event {event.id} (POST /ops/events/{event.id}/replay)."
    )
