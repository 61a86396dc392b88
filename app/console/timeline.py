"""One deal's sync log as a timeline: each event (the webhook or callback that brought it), then
what each of its runs did, in order. The records are the ones `/ops/sync-log?deal_id=` lists."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from string import Formatter
from typing import Any

from app.inbox.models import InboxEvent
from app.models import SyncRecord

BODIES = ("request_body", "response_body")
# What each kind of record says, in words; the detail's keys fill the blanks.
TITLES: dict[tuple[str, str], str] = {
    ("request", "request"): "{api} {method} {path} → {status} ({ms} ms)",
    ("line", "priced"): "Line: element {element_id} priced {unit_price}, from its {source}",
    ("line", "mapped"): "Line: {name} → ledger account {ledger_account_id}, tax {tax_rate_id} "
    "(matched by {matched_by})",
    ("line", "ignored"): "Line left out: element {element_id} ({reason})",
    ("contact", "reused"): "Customer found in Sage: contact {contact_id}",
    ("contact", "created"): "Customer created in Sage: contact {contact_id}",
    ("invoice", "created"): "Invoice {invoice_number} created in Sage (total {total} {currency})",
    ("invoice", "adopted"): "Invoice {invoice_id} found in Sage by its reference {reference}",
    ("invoice", "skipped"): "No new invoice: {reason} ({invoice_id})",
    ("invoice", "not_raised"): "Invoice not raised: {detail}",
    ("invoice", "totals_differ"): "Sage's totals differ from the bridge's (invoice {invoice_id})",
    ("invoice", "key_closed"): "Idempotency key closed after a refusal (generation {generation})",
    ("invoice", "due_date_missing"): "Sage returned no due date for invoice {invoice_id}",
    ("deal", "updated"): "Written back to the deal",
    ("task", "created"): "Kommo task {task_id} opened for the manager",
    ("task", "reused"): "The deal's open Kommo task {task_id} reused",
    ("task", "updated"): "The deal's open Kommo task {task_id} reused, its text updated",
    ("task", "completed"): "Kommo tasks completed: {task_ids}",
    ("task", "create_failed"): "The Kommo task could not be opened (try {attempt}): {error}",
    ("task", "complete_failed"): "Kommo tasks could not be completed (try {attempt}): {error}",
}
TONES = {
    "failed": "bad",
    "not_raised": "bad",
    "create_failed": "bad",
    "complete_failed": "bad",
    "needs_mapping": "bad",
    "totals_differ": "warn",
    "retrying": "warn",
    "waiting_connection": "warn",
    "ignored": "warn",
    "invoiced": "ok",
    "created": "ok",
    "applied": "ok",
}


@dataclass(frozen=True)
class Step:
    at: datetime
    kind: str  # webhook, request, line, contact, invoice, deal, task, event
    title: str
    tone: str  # ok, warn, bad, or "" for neutral
    facts: list[tuple[str, str]]
    bodies: list[tuple[str, str]]  # folded: request and response bodies


@dataclass(frozen=True)
class EventBlock:
    event: InboxEvent
    steps: list[Step]


def timeline(events: Iterable[InboxEvent], records: Iterable[SyncRecord]) -> list[EventBlock]:
    """Events oldest first, each with its records and what ops did in the order it happened
    (a sort that keeps the order of records noted in the same instant)."""
    by_event: dict[int, list[SyncRecord]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.at, r.id)):
        by_event[record.event_id].append(record)
    return [
        EventBlock(
            event,
            sorted(
                [_arrival(event), *_by_ops(event), *(step(r) for r in by_event[event.id])],
                key=lambda s: s.at,
            ),
        )
        for event in sorted(events, key=lambda e: (e.received_at, e.id))
    ]


def step(record: SyncRecord) -> Step:
    detail = record.detail
    said = _named(record.record, record.action) | set(BODIES)
    return Step(
        at=record.at,
        kind=record.record,
        title=_title(record.record, record.action, detail),
        tone=_tone(record, detail),
        facts=[(k, _text(v)) for k, v in detail.items() if k not in said and v is not None],
        bodies=[(k.replace("_", " "), str(detail[k])) for k in BODIES if detail.get(k)],
    )


def _arrival(event: InboxEvent) -> Step:
    if event.source == "sage":
        title = f"Sage status callback received ({event.action})"
    else:
        title = f"Webhook received: {event.action} into stage {event.status_id} of pipeline "
        title += f"{event.pipeline_id}"
    return Step(event.received_at, "webhook", title, "", [("event", str(event.id))], [])


def _by_ops(event: InboxEvent) -> list[Step]:
    """What ops did to the event (replay, discard), as the event keeps it."""
    return [
        Step(
            at=datetime.fromisoformat(done["at"]),
            kind="ops",
            title=f"Ops: {done['action']}"
            + (f" ({done['reason']})" if done["reason"] != done["action"] else ""),
            tone="",
            facts=[],
            bodies=[],
        )
        for done in event.payload.get("ops", [])
    ]


def _title(record: str, action: str, detail: Mapping[str, Any]) -> str:
    if record == "event":
        why = detail.get("detail")
        return f"Run ended: {action.replace('_', ' ')}" + (f" ({why})" if why else "")
    template = TITLES.get((record, action))
    if template is None:
        return f"{record.capitalize()} {action.replace('_', ' ')}"
    return template.format_map(_Blanks({k: _text(v) for k, v in detail.items()}))


def _named(record: str, action: str) -> set[str]:
    """The detail's keys the title already says (the rest is listed under it)."""
    if record == "event":
        return {"detail"}
    template = TITLES.get((record, action), "")
    return {name for _, name, _, _ in Formatter().parse(template) if name}


def _tone(record: SyncRecord, detail: Mapping[str, Any]) -> str:
    if record.record == "request":
        status = str(detail.get("status", ""))
        return "" if status.isdigit() and int(status) < 400 else "bad"
    return TONES.get(record.action, "")


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return str(value)


class _Blanks(dict[str, str]):
    """A detail without a key the title names shows `?` there instead of failing."""

    def __missing__(self, key: str) -> str:
        return "?"
