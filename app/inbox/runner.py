"""Running one inbox event: claim it, do its work, and end it in a named state.

What the work's result or failure means for the event is decided here; the state changes
themselves are `app.inbox.lifecycle`'s. Transient failures are retried on the configured ladder
and then become a task for the deal's manager; permanent ones become a task at once. The task is
part of the event's durable state, so it is opened exactly once even if the CRM is down when the
event ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app import lineage
from app.bridge import Bridge
from app.cancellation import Kept, Voided, cancel_invoice
from app.connections.errors import ReauthorizationRequired
from app.errors import InvoiceBlocked, UpstreamPermanentError, UpstreamTransientError
from app.inbox import lifecycle, tasks
from app.inbox.intake import cancels
from app.inbox.lifecycle import Outcome
from app.inbox.models import (
    RESOLVED_STATES,
    TERMINAL_STATES,
    EventState,
    InboxEvent,
    TaskReason,
    TaskState,
)
from app.inbox.repository import InboxRepository
from app.invoice_changes import Changed, Reissued, ReissueRefused, Unchanged, invoice_deal
from app.invoicing import (
    Invoiced,
    InvoiceJob,
    Skipped,
    UnmappedLines,
    WriteBackRefused,
    unmapped_products,
)
from app.models import utcnow
from app.payment_status import apply_statuses, status_from_payload
from app.repositories import SyncLogRepository

log = structlog.get_logger(__name__)

ConnectionCheck = Callable[[str, str], Awaitable[bool]]


async def process_event(session: AsyncSession, bridge: Bridge, event_id: int) -> EventState | None:
    """Run one inbox event if it is due and nobody else holds it; return its state afterwards."""
    event = await InboxRepository(session).claim(event_id, lease=bridge.config.lease)
    if event is None:
        return None
    structlog.contextvars.bind_contextvars(event_id=event.id, deal_id=event.deal_id)
    lineage.begin()
    try:
        if stopped := lifecycle.stopped_too_often(event, bridge.config.retry_delays):
            lifecycle.finish(event, stopped)
        elif event.state not in TERMINAL_STATES:
            await _run(session, bridge, event)
        if event.task_state == TaskState.PENDING:
            await tasks.work(session, bridge, event)
        return EventState(event.state)
    finally:
        lifecycle.release(event)
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
    except ReauthorizationRequired as exc:
        lifecycle.park(event, exc)
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
    lifecycle.finish(event, outcome)
    log.info("event.finished", state=outcome.state.value, detail=outcome.detail)
    if outcome.state in RESOLVED_STATES:
        await tasks.after_resolved(session, bridge, event)


async def _recover(session: AsyncSession, event: InboxEvent) -> None:
    """After an unexpected error the session may be unusable: start clean, re-read the event."""
    await session.rollback()
    await session.refresh(event)


async def _handle(session: AsyncSession, bridge: Bridge, event: InboxEvent) -> Outcome:
    """The event's work, and what its result (or a failure nobody can retry away) means."""
    if event.source == "sage":
        status = status_from_payload(event.payload)
        written = await apply_statuses(session, bridge.crm, [status], today=utcnow().date())
        return Outcome(EventState.APPLIED, f"status {status.status_id}: {written} deal(s) updated")
    if cancels(event.action, event.status_id):
        return await _cancel(session, bridge, event)
    try:
        result = await _invoice(session, bridge, event)
    except UnmappedLines as exc:
        unmapped = unmapped_products(exc)
        reason = TaskReason.NEEDS_MAPPING
        return Outcome(EventState.NEEDS_MAPPING, str(exc), exc.task_text, reason, unmapped)
    except InvoiceBlocked as exc:
        lineage.note("invoice", "not_raised", detail=exc.detail)
        return Outcome(EventState.FAILED, exc.detail, exc.task_text)
    except WriteBackRefused as exc:
        reason = TaskReason.WRITE_BACK_REFUSED
        return Outcome(EventState.FAILED, exc.detail, _write_back_task_text(exc), reason)
    except ReissueRefused as exc:
        return Outcome(EventState.FAILED, exc.detail, exc.task_text, TaskReason.DEAL_CHANGED)
    except UpstreamPermanentError as exc:
        return Outcome(EventState.FAILED, exc.detail, _refused_task_text(exc))
    return _outcome(result)


Result = Invoiced | Skipped | Unchanged | Changed | Reissued


def _outcome(result: Result) -> Outcome:
    if isinstance(result, Changed):
        reason = TaskReason.DEAL_CHANGED
        return Outcome(EventState.CHANGED, result.detail, result.task_text, reason)
    state = {
        Invoiced: EventState.INVOICED,
        Skipped: EventState.SKIPPED,
        Unchanged: EventState.UNCHANGED,
        Reissued: EventState.REISSUED,
    }[type(result)]
    return Outcome(state, result.detail)


async def _invoice(session: AsyncSession, bridge: Bridge, event: InboxEvent) -> Result:
    job = _job(event)
    try:
        return await invoice_deal(session, bridge, job)
    finally:
        # Any task goes to whoever is responsible for the deal now, not when the hook was sent.
        event.responsible_user_id = job.responsible_user_id


async def _cancel(session: AsyncSession, bridge: Bridge, event: InboxEvent) -> Outcome:
    """A lost or deleted deal: its invoice voided or kept (CANCEL_POLICY)."""
    job = _job(event)
    try:
        result = await cancel_invoice(session, bridge, job, deleted=event.action == "leads.delete")
    except UpstreamPermanentError as exc:
        return Outcome(EventState.FAILED, exc.detail, _cancel_failed_text(exc))
    finally:
        event.responsible_user_id = job.responsible_user_id
    if isinstance(result, Kept):
        reason = TaskReason.INVOICE_KEPT
        return Outcome(EventState.KEPT, result.detail, result.task_text, reason)
    state = EventState.VOIDED if isinstance(result, Voided) else EventState.SKIPPED
    return Outcome(state, result.detail)


def _job(event: InboxEvent) -> InvoiceJob:
    return InvoiceJob(event.id, event.account_id, event.deal_id, event.responsible_user_id)


async def _retry_or_give_up(
    session: AsyncSession, bridge: Bridge, event: InboxEvent, exc: Exception
) -> None:
    detail = exc.detail if isinstance(exc, UpstreamTransientError) else repr(exc)
    retry_after = getattr(exc, "retry_after", None)
    due = lifecycle.retry_or_give_up(event, detail, bridge.config.retry_delays, retry_after)
    if due is None:
        return
    await session.commit()
    await bridge.schedule(event.id, event.attempts, due)


async def resume_waiting(session: AsyncSession, is_active: ConnectionCheck) -> list[int]:
    """Events parked on a connection that is active again become pending; returns their ids."""
    parked, _ = await InboxRepository(session).list(
        states=[EventState.WAITING_CONNECTION.value], limit=10_000, offset=0
    )
    resumed = []
    for event in parked:
        if await is_active(*lifecycle.waiting_for(event)):
            lifecycle.resume(event)
            resumed.append(event.id)
    await session.commit()
    if resumed:
        log.info("events.resumed", count=len(resumed))
    return resumed


def _write_back_task_text(exc: WriteBackRefused) -> str:
    return (
        f"Sage invoice {exc.invoice.number} WAS raised ({exc.invoice.url}), but "
        f"{exc.upstream.capitalize()} refused to show it on this deal: {exc.detail}. Do not "
        "raise it again; check the deal's invoice fields, or ask ops to replay the event."
    )


def _cancel_failed_text(exc: UpstreamPermanentError) -> str:
    return (
        f"This deal was lost or deleted, and the bridge could not settle its Sage invoice: "
        f"{exc.upstream.capitalize()} refused: {exc.detail}. Check the invoice in Sage, or ask "
        "ops to replay the event once it is fixed."
    )


def _refused_task_text(exc: UpstreamPermanentError) -> str:
    return (
        f"Sage invoice NOT raised: {exc.upstream.capitalize()} refused it: {exc.detail}. "
        "Correct what it names, then move the deal to the invoice stage again."
    )
