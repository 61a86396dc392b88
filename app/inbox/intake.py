"""Where events enter the inbox: every `NewEvent` is built here, from a CRM webhook, a signed
accounting callback or reconciliation, and says whether it is work or only recorded.

A Kommo lead entry is work when it is a move into the trigger stage (the invoice, or the change
check of an invoiced deal), or when it cancels a deal the bridge invoiced: a move to closed-lost
(143) or a deletion. Whether a deal was invoiced is the database's to say (`KommoBatch.decide`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.cancellation import NOT_INVOICED
from app.clients.kommo.webhook import KommoWebhook, WebhookEntry
from app.domain import DealInStage, InvoiceStatus
from app.errors import ServiceUnavailable
from app.inbox.models import EventState
from app.inbox.repository import InboxRepository, NewEvent
from app.payment_status import callback_payload
from app.queue import Queue
from app.repositories import InvoiceRepository

log = structlog.get_logger(__name__)
# Events, or how to build them when that needs the database (under the same 503 guard).
Events = Sequence[NewEvent] | Callable[[AsyncSession], Awaitable[Sequence[NewEvent]]]

SOURCE = "kommo"
# The entities the bridge acts on: every lead entry is stored (a status change into the trigger
# stage is work, and so is a lost or deleted deal that was invoiced; other entries are kept
# as skipped). Contacts, companies, tasks, catalogs… are only counted: storing them would let
# any body fill the inbox.
STORED_ENTITIES = frozenset({"leads"})
LOST_STATUS_ID = "143"  # "closed - lost", in every Kommo pipeline


def cancels(action: str, status_id: str | None) -> bool:
    """A lead deleted, or moved to closed-lost: what cancels the deal's invoice (CANCEL_POLICY)."""
    return action == "leads.delete" or (action == "leads.status" and status_id == LOST_STATUS_ID)


def kommo_events(
    hook: KommoWebhook, *, account_id: str, trigger_pipeline_id: str, trigger_status_id: str
) -> list[NewEvent]:
    """One event per lead entry. Only a status change into the trigger stage is PENDING work."""
    trigger = (trigger_pipeline_id, trigger_status_id)
    return [_event(e, account_id, trigger) for e in hook.entries if e.entity in STORED_ENTITIES]


def _event(entry: WebhookEntry, account_id: str, trigger: tuple[str, str]) -> NewEvent:
    pipeline_id = _id(entry, "pipeline_id")
    status_id = _id(entry, "status_id")
    is_trigger = entry.entity == "leads" and entry.action == "status"
    is_trigger = is_trigger and (pipeline_id, status_id) == trigger
    if is_trigger:
        # One row per (account, deal, trigger stage): duplicates and retries collapse into it.
        key = trigger_dedupe_key(account_id, entry.entity_id, *trigger)
        state, reason = EventState.PENDING, None
    else:
        key = (
            f"{SOURCE}:{account_id}:{entry.entity}:{entry.entity_id}:{entry.action}:"
            f"{pipeline_id}:{status_id}:{entry.changed_at}"
        )
        # Work until `KommoBatch.decide` finds the deal was never invoiced.
        if cancels(f"{entry.entity}.{entry.action}", status_id):
            state, reason = EventState.PENDING, None
        else:
            state, reason = EventState.SKIPPED, _skip_reason(entry)
    return NewEvent(
        source=SOURCE,
        dedupe_key=key,
        account_id=account_id,
        deal_id=entry.entity_id,
        action=f"{entry.entity}.{entry.action}",
        pipeline_id=pipeline_id,
        status_id=status_id,
        responsible_user_id=_id(entry, "responsible_user_id"),
        changed_at=entry.changed_at,
        state=state,
        payload=_payload(entry),
        last_error=reason,
    )


@dataclass
class KommoBatch:
    """One webhook's lead events. A lost or deleted deal is work only when the bridge invoiced
    it: `decide` asks the database, under `accept`'s 503 guard, and keeps what it decided."""

    events: list[NewEvent]

    @property
    def work(self) -> Events:
        """What to store: the events as they are, or, when one may cancel an invoice, `decide`
        (which needs the database)."""
        return self.decide if any(_is_cancellation(e) for e in self.events) else self.events

    async def decide(self, session: AsyncSession) -> list[NewEvent]:
        candidates = [e for e in self.events if _is_cancellation(e)]
        invoiced: set[tuple[str, str]] = set()
        for account_id in {e.account_id for e in candidates}:
            deals = [e.deal_id for e in candidates if e.account_id == account_id]
            found = await InvoiceRepository(session).has_invoice(
                crm=SOURCE, account_id=account_id, deal_ids=deals
            )
            invoiced |= {(account_id, deal_id) for deal_id in found}
        self.events = [
            _not_work(e) if _is_cancellation(e) and (e.account_id, e.deal_id) not in invoiced else e
            for e in self.events
        ]
        return self.events


def _payload(entry: WebhookEntry) -> dict[str, Any]:
    """`dataclasses.asdict(entry)` without its deep copy (the parsed fields are not changed
    after parsing): the copy was 4 % of a webhook's time."""
    return {
        "entity": entry.entity,
        "action": entry.action,
        "entity_id": entry.entity_id,
        "fields": entry.fields,
    }


def _is_cancellation(event: NewEvent) -> bool:
    return event.state == EventState.PENDING and cancels(event.action, event.status_id)


def _not_work(event: NewEvent) -> NewEvent:
    return replace(event, state=EventState.SKIPPED, last_error=NOT_INVOICED)


def trigger_dedupe_key(account_id: str, deal_id: str, pipeline_id: str, status_id: str) -> str:
    return f"{SOURCE}:{account_id}:lead:{deal_id}:trigger:{pipeline_id}:{status_id}"


def _id(entry: WebhookEntry, name: str) -> str | None:
    """Kommo's numeric id as text, read as a number first ("0503" is 503): the dedupe keys
    and the stored values are what they were when these columns held integers."""
    number = entry.int_field(name)
    return None if number is None else str(number)


def _skip_reason(entry: WebhookEntry) -> str:
    if entry.action == "status":
        return "moved to a stage that is not the invoice trigger"
    return f"{entry.entity}[{entry.action}] events do not raise invoices"


async def accept(
    session: AsyncSession, queue: Queue, events: Events, *, retry_hint: str
) -> list[int]:
    """Store the events and commit before anyone is told "yes"; then enqueue what is work.

    Returns the ids now due. A database that cannot store them is a 503 (`retry_hint` tells
    the sender what to do), never a 2xx: nothing accepted is lost. A Redis that cannot take
    the job is not an error: the sweeper delivers every due event from the database."""
    try:
        stored = events if isinstance(events, Sequence) else await events(session)
        due = await InboxRepository(session).record(list(stored))
        await session.commit()
    except (SQLAlchemyError, OSError) as exc:
        log.error("inbox.store_failed", error=type(exc).__name__)
        raise ServiceUnavailable(
            f"the event could not be stored (database unavailable); {retry_hint}"
        ) from exc
    for event_id in due:
        await queue.enqueue_event(event_id)
    return due


def sage_status_events(
    webhook_id: str, status: InvoiceStatus, *, business_id: str
) -> Callable[[AsyncSession], Awaitable[Sequence[NewEvent]]]:
    """A signed Sage status callback; recorded as skipped when the invoice is not ours."""

    async def build(session: AsyncSession) -> Sequence[NewEvent]:
        records = await InvoiceRepository(session).by_invoice_ids([status.invoice_id])
        record = records.get(status.invoice_id)
        return [_sage_event(webhook_id, status, business_id, record.deal_id if record else None)]

    return build


def _sage_event(
    webhook_id: str, status: InvoiceStatus, business_id: str, deal_id: str | None
) -> NewEvent:
    return NewEvent(
        source="sage",
        dedupe_key=f"sage:callback:{webhook_id}",
        account_id=business_id,
        deal_id=deal_id or "",
        action="sales_invoice.status",
        pipeline_id=None,
        status_id=None,
        responsible_user_id=None,
        changed_at=int(status.updated_at.timestamp()),
        state=EventState.PENDING if deal_id else EventState.SKIPPED,
        payload=callback_payload(status),
        last_error=None if deal_id else "not an invoice this bridge raised",
    )


def recovered_event(
    deal: DealInStage, *, trigger_pipeline_id: str, trigger_status_id: str
) -> NewEvent:
    """A deal reconciliation found in the stage: the trigger's own dedupe key, so a deal whose
    webhook did arrive already has this event."""
    return NewEvent(
        source=SOURCE,
        dedupe_key=trigger_dedupe_key(
            deal.account_id, deal.id, trigger_pipeline_id, trigger_status_id
        ),
        account_id=deal.account_id,
        deal_id=deal.id,
        action="leads.status",
        pipeline_id=deal.pipeline_id,
        status_id=deal.status_id,
        responsible_user_id=deal.responsible_user_id,
        changed_at=deal.updated_at,
        state=EventState.PENDING,
        payload={"recovered_by": "reconciliation", "updated_at": deal.updated_at},
    )
