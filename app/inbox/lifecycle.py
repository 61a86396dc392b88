"""Every change of an inbox event's state, and nothing else: no I/O, no commits.

The runner, the ops actions, the sweeper's resume and the repository's reopen all move an event
through these functions, so each transition (and what it resets) is written once. The diagram
is in `app.inbox`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog

from app import lineage
from app.connections.errors import ReauthorizationRequired
from app.errors import BadRequest
from app.inbox.models import (
    RESOLVED_STATES,
    TERMINAL_STATES,
    EventState,
    InboxEvent,
    TaskReason,
    TaskState,
)
from app.metrics import EVENTS_FINISHED, RETRIES, TASKS_OPENED
from app.models import utcnow

log = structlog.get_logger(__name__)

TASK_RETRY_DELAY = timedelta(seconds=60)
MAX_TASK_ATTEMPTS = 10
MAX_CRASHES = 3


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the state, what to show ops, and the manager's task if one is due."""

    state: EventState
    detail: str
    task_text: str | None = None
    task_reason: TaskReason = TaskReason.NOT_RAISED
    # Kept on the event: the products that had no mapping, so ops can replay once they do.
    unmapped: tuple[dict[str, str | None], ...] = ()


def arrived(state: EventState, now: datetime | None = None) -> dict[str, Any]:
    """An event entering the inbox: work is due at once; anything else is only recorded."""
    due = (now or utcnow()) if state == EventState.PENDING else None
    return {"state": state.value, "attempts": 0, "next_attempt_at": due}


def claimed(now: datetime, lease: timedelta) -> dict[str, Any]:
    """One worker holds the event until the lease ends. Every claim counts as a run, even one
    whose job then times out or dies, so an event that always kills its job ends."""
    return {"lease_until": now + lease, "runs": InboxEvent.runs + 1, "updated_at": now}


def finish(event: InboxEvent, outcome: Outcome) -> None:
    """A terminal state; a task to open makes the event due again for that alone."""
    EVENTS_FINISHED.labels(outcome.state.value).inc()
    event.state = outcome.state.value
    if outcome.unmapped:
        event.payload = {**event.payload, "unmapped": list(outcome.unmapped)}
    event.next_attempt_at = None
    event.last_error = None if outcome.state == EventState.INVOICED else outcome.detail
    if outcome.task_text is not None:
        event.task_state = TaskState.PENDING.value
        event.task_text = outcome.task_text
        event.task_reason = outcome.task_reason.value
        event.next_attempt_at = utcnow()


def tasks_to_close(event: InboxEvent) -> None:
    """Resolved, and the bridge has tasks open for the deal: completing them is due."""
    event.task_state = TaskState.PENDING.value
    event.next_attempt_at = utcnow()


def stopped_too_often(event: InboxEvent, retry_delays: tuple[timedelta, ...]) -> Outcome | None:
    """Claims allowed: every rung of the ladder plus a few crashes' worth; then it ends."""
    if event.state in TERMINAL_STATES or event.runs <= len(retry_delays) + MAX_CRASHES:
        return None
    detail = (
        f"the job stopped {event.runs - 1} times without finishing (a job timeout or a worker "
        "crash); the bridge has stopped trying"
    )
    return Outcome(EventState.FAILED, detail, _exhausted_task_text(event, detail))


def retry_or_give_up(
    event: InboxEvent,
    detail: str,
    retry_delays: tuple[timedelta, ...],
    retry_after: float | None = None,
) -> datetime | None:
    """The next rung of the ladder (when the retry is due), or None: retries are exhausted and
    the event is failed with a task."""
    event.attempts += 1
    event.last_error = detail
    if event.attempts > len(retry_delays):
        finish(event, Outcome(EventState.FAILED, detail, _exhausted_task_text(event, detail)))
        log.warning("event.retries_exhausted", attempts=event.attempts, error=detail)
        return None
    delay = retry_delays[event.attempts - 1]
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    event.state = EventState.RETRYING.value
    event.next_attempt_at = utcnow() + delay
    event.lease_until = None
    RETRIES.inc()
    log.warning(
        "event.retry_scheduled", attempt=event.attempts, delay_s=delay.total_seconds(), error=detail
    )
    return event.next_attempt_at


def park(event: InboxEvent, exc: ReauthorizationRequired) -> None:
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


def waiting_for(event: InboxEvent) -> tuple[str, str]:
    """(provider, account) of the connection a parked event waits for."""
    waiting = event.payload.get("waiting_for") or {}
    return str(waiting.get("provider")), str(waiting.get("account"))


def resume(event: InboxEvent) -> None:
    """The connection a parked event waited for is active again."""
    event.state = EventState.PENDING.value
    event.next_attempt_at = utcnow()


def fresh_start() -> dict[str, Any]:
    """The columns of an event that starts over, by replay or by reopening: due now, with no
    attempts, claims, task or error left from its earlier life."""
    return {
        "state": EventState.PENDING.value,
        "attempts": 0,
        "runs": 0,
        "next_attempt_at": utcnow(),
        "lease_until": None,
        "last_error": None,
        "task_state": None,
        "task_text": None,
        "task_id": None,
        "task_reason": None,
        "task_attempts": 0,
    }


def replay(event: InboxEvent, why: str) -> None:
    """Ops run the event again from the start."""
    for column, value in fresh_start().items():
        setattr(event, column, value)
    _record(event, "replay", why)


def reopened(
    *, changed_at: int, responsible_user_id: str | None, payload: dict[str, Any]
) -> dict[str, Any]:
    """A newer move of the deal into the trigger stage starts a finished event over (the
    repository applies these values in one UPDATE, guarded by the state and the lease)."""
    return {
        **fresh_start(),
        "changed_at": changed_at,
        "responsible_user_id": responsible_user_id,
        "payload": payload,
        "updated_at": utcnow(),
    }


def discard(event: InboxEvent, reason: str) -> None:
    """Ops end an event by hand (e.g. the deal was invoiced outside the bridge); a failed one
    may be discarded, one that ended otherwise may not."""
    if event.state in TERMINAL_STATES and event.state != EventState.FAILED:
        raise BadRequest(f"event {event.id} already ended as {event.state}")
    event.state = EventState.DISCARDED.value
    event.next_attempt_at = None
    event.last_error = f"discarded by ops: {reason}"
    _record(event, "discard", reason)


def release(event: InboxEvent) -> None:
    """The run is over: another worker may claim the event when it is next due."""
    event.lease_until = None


def task_attempted(event: InboxEvent) -> None:
    event.task_attempts += 1


def task_opened(event: InboxEvent, task_id: str, how: str = "created") -> None:
    """The manager has the task: `created`, or the deal's open one `reused` or `updated`."""
    event.task_state = TaskState.CREATED.value
    event.task_id = task_id
    event.next_attempt_at = None
    lineage.note("task", how, task_id=task_id, text=event.task_text)
    if how == "created":
        TASKS_OPENED.inc()
        log.info("task.created", task_id=task_id)
    else:
        log.info("task.reused", task_id=task_id, text_updated=how == "updated")


def tasks_closed(event: InboxEvent, task_ids: list[str]) -> None:
    event.task_state = TaskState.CLOSED.value
    event.next_attempt_at = None
    lineage.note("task", "completed", task_ids=task_ids)
    log.info("task.completed", task_ids=task_ids)


def task_failed(event: InboxEvent, error: str) -> None:
    """Offered again after a delay (the sweeper), a bounded number of times. An invoiced
    event's failure to complete its tasks is recorded the same way; the invoice stands."""
    verb = "completed" if event.state in RESOLVED_STATES else "opened"
    action = "complete_failed" if verb == "completed" else "create_failed"
    lineage.note("task", action, attempt=event.task_attempts, error=error)
    if event.task_attempts >= MAX_TASK_ATTEMPTS:
        event.task_state = TaskState.FAILED.value
        event.next_attempt_at = None
        problem = f"the CRM task could not be {verb}: {error}"
        event.last_error = f"{event.last_error}; {problem}" if event.last_error else problem
        log.error("task.given_up", attempts=event.task_attempts, error=error)
        return
    event.next_attempt_at = utcnow() + TASK_RETRY_DELAY
    if verb == "completed":
        log.error("task.complete_failed", attempt=event.task_attempts, error=error)
    else:
        log.error("task.create_failed", attempt=event.task_attempts, error=error)


def _record(event: InboxEvent, action: str, reason: str) -> None:
    """What ops did, kept on the event itself (`payload.ops`: what, when, why)."""
    entry = {"action": action, "at": utcnow().isoformat(), "reason": reason}
    event.payload = {**event.payload, "ops": [*event.payload.get("ops", []), entry]}


def _exhausted_task_text(event: InboxEvent, detail: str) -> str:
    return (
        f"Sage invoice NOT raised after {event.attempts} attempts; the last error was: {detail}. "
        f"The bridge has stopped retrying. When the service is reachable again, ask ops to "
        f"replay event {event.id} (POST /ops/events/{event.id}/replay)."
    )
