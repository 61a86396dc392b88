"""What can need a person, what each means, and what to do about it.

A cause is a kind and a subject ("connection_needs_reauth:sage:<business>"); kinds whose subject
is empty (failed events, the Kommo hook…) are one cause whatever they concern.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Kind(enum.StrEnum):
    EVENT_FAILED = "event_failed"
    EVENT_NEEDS_MAPPING = "event_needs_mapping"
    CONNECTION_NEEDS_REAUTH = "connection_needs_reauth"
    KOMMO_WEBHOOK_DISABLED = "kommo_webhook_disabled"
    TOKEN_EXPIRING = "token_expiring"  # noqa: S105 - a kind of alert, not a token
    EVENTS_WAITING = "events_waiting"


@dataclass(frozen=True)
class About:
    one: str  # the title of an alert about one occurrence
    many: str  # … about {n} of them
    advice: str


ABOUT: dict[Kind, About] = {
    Kind.EVENT_FAILED: About(
        "An event failed: its deal has no invoice",
        "{n} events failed: their deals have no invoice",
        "The deal's manager has a Kommo task saying why. Fix what the error names (or wait "
        "until Sage/Kommo answer again), then replay: POST /ops/events/{id}/replay or "
        "`sagebridge events replay ID`. The retry queue: GET /ops/retries.",
    ),
    Kind.EVENT_NEEDS_MAPPING: About(
        "A deal needs a ledger mapping: no invoice yet",
        "{n} deals need a ledger mapping: no invoice yet",
        "Add a rule for each product named to the mapping file (LEDGER_MAPPINGS_PATH; "
        "`sagebridge mappings suggest` proposes some), then replay them all: "
        "POST /ops/events/replay-needs-mapping.",
    ),
    Kind.CONNECTION_NEEDS_REAUTH: About(
        "A connection needs re-authorisation",
        "Connections needed re-authorisation {n} times",
        "Connect again: POST /ops/connections/{provider}/start (docs/OPERATIONS.md, "
        "Connecting real accounts). Events that need the connection wait (waiting_connection) "
        "and resume by themselves once it is active.",
    ),
    Kind.KOMMO_WEBHOOK_DISABLED: About(
        "Kommo has disabled the bridge's webhook",
        "Kommo disabled the bridge's webhook {n} times",
        "Re-enable it in Kommo: Settings > Integrations > Web hooks. Kommo disables a hook "
        "after too many answers other than 2xx: look for them in the log. Reconciliation keeps "
        "invoicing meanwhile (every RECONCILE_MINUTES), only later.",
    ),
    Kind.TOKEN_EXPIRING: About(
        "A connection's refresh token expires soon",
        "Refresh tokens were about to expire {n} times",
        "Sage: an idle grant is refreshed twice a day (KEEP_ALIVE_DAYS); if it still expires, "
        "look for connection.keep_alive_failed in the log. Kommo long-lived token: generate a "
        "new one and store it. Otherwise connect again before it expires: "
        "POST /ops/connections/{provider}/start.",
    ),
    Kind.EVENTS_WAITING: About(
        "Due events are waiting too long",
        "Due events waited too long {n} times",
        "Events are due but not run in time: a backlog (more work than the workers' "
        "WORKER_MAX_JOBS), jobs that hang, or Redis unreachable. GET /readyz, GET /metrics "
        "(sagebridge_queue_depth) and the worker log say which.",
    ),
}


@dataclass(frozen=True)
class Finding:
    """One thing that needs a person: `text` is its line in an alert, `data` its fields in the
    webhook payload."""

    kind: Kind
    subject: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def cause(self) -> str:
        return f"{self.kind.value}:{self.subject}" if self.subject else self.kind.value

    def item(self) -> dict[str, Any]:
        return {"text": self.text, **self.data}
