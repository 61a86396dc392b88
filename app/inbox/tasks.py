"""One task per deal and reason, completed once the deal needs nothing more (it is invoiced,
found unchanged, reissued, or its invoice voided).

Before opening a task the bridge looks for its own still-open task for the same deal and reason
(the `deal_tasks` table, then the CRM itself, since the manager may have completed or deleted
it): that one is reused, its text updated if it changed. Once the deal is invoiced, its open
tasks are completed with a result naming the invoice. Either kind of task work is retried like
the other (`lifecycle.task_failed`) and never holds up an invoice.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app import lineage
from app.bridge import Bridge
from app.connections.errors import ReauthorizationRequired
from app.errors import UpstreamPermanentError, UpstreamTransientError
from app.inbox import lifecycle
from app.inbox.models import RESOLVED_STATES, DealTask, EventState, InboxEvent, TaskReason
from app.inbox.repository import DealTaskRepository
from app.models import utcnow
from app.repositories import InvoiceRepository

TASK_ERRORS = (UpstreamTransientError, UpstreamPermanentError, ReauthorizationRequired)


async def work(session: AsyncSession, bridge: Bridge, event: InboxEvent) -> None:
    """The task work the event owes: the manager's task, or completing the deal's tasks once
    invoiced. The attempt is committed before the CRM is asked."""
    lifecycle.task_attempted(event)
    await session.commit()
    try:
        if event.state in RESOLVED_STATES:
            await _complete(session, bridge, event)
        else:
            await _open(session, bridge, event)
    except TASK_ERRORS as exc:
        lifecycle.task_failed(event, getattr(exc, "detail", str(exc)))


async def after_resolved(session: AsyncSession, bridge: Bridge, event: InboxEvent) -> None:
    """A deal that needs nothing more, with tasks the bridge opened: completing them is due."""
    if await DealTaskRepository(session).open_for(**_deal(bridge, event)):
        lifecycle.tasks_to_close(event)


async def _open(session: AsyncSession, bridge: Bridge, event: InboxEvent) -> None:
    reason, text = _reason(event), event.task_text or ""
    tasks = DealTaskRepository(session)
    for row in await tasks.open_for(**_deal(bridge, event), reason=reason.value):
        if how := await _reuse(bridge, row, text):
            lifecycle.task_opened(event, row.task_id, how)
            return
    task_id = await bridge.crm.create_task(
        deal_id=event.deal_id,
        responsible_user_id=event.responsible_user_id,
        text=text,
        due=utcnow() + bridge.config.task_deadline,
    )
    tasks.add(
        DealTask(
            **_deal(bridge, event),
            reason=reason.value,
            task_id=task_id,
            text=text,
            event_id=event.id,
        )
    )
    lifecycle.task_opened(event, task_id)


async def _reuse(bridge: Bridge, row: DealTask, text: str) -> str | None:
    """`reused` or `updated` when the task is still open in the CRM; None when it is not."""
    if not await _still_open(bridge, row):
        return None
    if row.text == text:
        return "reused"
    await bridge.crm.update_task(task_id=row.task_id, text=text)
    row.text = text
    return "updated"


async def _complete(session: AsyncSession, bridge: Bridge, event: InboxEvent) -> None:
    rows = await DealTaskRepository(session).open_for(**_deal(bridge, event))
    still_open = [row for row in rows if await _still_open(bridge, row)]
    if still_open:
        result = await _result_text(session, bridge, event)
        await bridge.crm.complete_tasks(task_ids=[r.task_id for r in still_open], result=result)
        for row in still_open:
            row.completed_at = utcnow()
    lifecycle.tasks_closed(event, [r.task_id for r in still_open])


async def _still_open(bridge: Bridge, row: DealTask) -> bool:
    """Asks the CRM: a task the manager completed or deleted is closed here too."""
    found = await bridge.crm.get_task(task_id=row.task_id)
    if found is not None and not found.is_completed:
        return True
    row.completed_at = utcnow()
    closed = "deleted_in_crm" if found is None else "completed_in_crm"
    lineage.note("task", closed, task_id=row.task_id)
    return False


RESULTS = {
    EventState.VOIDED: "was voided: the deal was lost or deleted",
    EventState.REISSUED: "replaces the earlier one, credited in full",
}


async def _result_text(session: AsyncSession, bridge: Bridge, event: InboxEvent) -> str:
    record = await InvoiceRepository(session).get(**_deal(bridge, event))
    number = record.invoice_number if record else None
    invoice = f"Sage invoice {number}" if number else "The Sage invoice"
    link = f" ({record.invoice_url})" if record and record.invoice_url else ""
    what = RESULTS.get(EventState(event.state), "was raised for this deal")
    return f"{invoice} {what}{link}: the bridge needs nothing more here."


def _reason(event: InboxEvent) -> TaskReason:
    """Events that asked for a task before reasons were kept: their state says which."""
    if event.task_reason:
        return TaskReason(event.task_reason)
    if event.state == EventState.NEEDS_MAPPING:
        return TaskReason.NEEDS_MAPPING
    return TaskReason.NOT_RAISED


def _deal(bridge: Bridge, event: InboxEvent) -> dict[str, str]:
    return {"crm": bridge.crm.name, "account_id": event.account_id, "deal_id": event.deal_id}
