"""What ops can do to events by hand, shared by the /ops endpoints and the CLI.

Every action is recorded on the event itself (`payload.ops`: what, when, why)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain import LineItem
from app.errors import BadRequest, NotFound
from app.inbox import lifecycle
from app.inbox.models import EventState, InboxEvent
from app.inbox.repository import InboxRepository
from app.lineage import Entry
from app.mapping import LedgerMapping
from app.queue import Queue
from app.repositories import SyncLogRepository

# A status change (an invoice, a change check, a lost deal), a deletion, a Sage callback.
REPLAYABLE = ("leads.status", "leads.delete", "sales_invoice.status")


async def get_event(session: AsyncSession, event_id: int) -> InboxEvent:
    event = await InboxRepository(session).get(event_id)
    if event is None:
        raise NotFound(f"no event {event_id}")
    return event


async def replay(session: AsyncSession, queue: Queue, event_id: int) -> InboxEvent:
    """Run the event again from the start; a deal already invoiced is not invoiced twice."""
    event = await get_event(session, event_id)
    if event.action not in REPLAYABLE:
        raise BadRequest(f"event {event_id} is a {event.action} event; there is nothing to replay")
    lifecycle.replay(event, "replay")
    _log(session, event, "replayed")
    await session.commit()
    await queue.enqueue_event(event.id)
    return event


async def discard(session: AsyncSession, event_id: int, reason: str) -> InboxEvent:
    """End an event by hand (e.g. the deal was invoiced outside the bridge)."""
    event = await get_event(session, event_id)
    lifecycle.discard(event, reason)
    _log(session, event, "discarded", reason=reason)
    await session.commit()
    return event


def _log(session: AsyncSession, event: InboxEvent, action: str, **detail: str) -> None:
    """What ops did belongs to the deal's sync log: a discard is how its story ends."""
    entry = Entry("event", action, {"by": "ops", **detail})
    SyncLogRepository(session).add(event_id=event.id, deal_id=event.deal_id, entries=[entry])


async def replay_covered(
    session: AsyncSession, queue: Queue, mapping: LedgerMapping
) -> tuple[list[int], list[int]]:
    """Replay the needs-mapping events the mapping now covers: (replayed, still unmapped)."""
    rows, _ = await InboxRepository(session).list(
        states=[EventState.NEEDS_MAPPING.value], limit=10_000, offset=0
    )
    covered = [e for e in rows if _covered(e, mapping)]
    for event in covered:
        lifecycle.replay(event, "replay: the mapping now covers every product")
        _log(session, event, "replayed", reason="the mapping now covers every product")
    await session.commit()
    for event in covered:
        await queue.enqueue_event(event.id)
    return [e.id for e in covered], [e.id for e in rows if e not in covered]


def _covered(event: InboxEvent, mapping: LedgerMapping) -> bool:
    lines = [
        LineItem(
            element_id=str(item.get("element_id")),
            name=str(item.get("name")),
            quantity=Decimal(1),
            unit_price=Decimal(0),
            sku=item.get("sku"),
            product_type=item.get("product_type"),
        )
        for item in event.payload.get("unmapped") or []
    ]
    return bool(lines) and all(mapping.covers(line) for line in lines)
