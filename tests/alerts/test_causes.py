"""Each cause, brought about as it happens in the bridge, reaches a person: one email through a
real SMTP server and one signed webhook to a real HTTP receiver, with the whole text."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from arq.connections import ArqRedis
from standardwebhooks import Webhook

from app.bridge import Bridge
from app.connections.crypto import TokenCipher, generate_key
from app.connections.models import GrantKind, Provider
from app.connections.store import ConnectionKey, ConnectionStore, NewConnection, TokenSet
from app.queue import Queue
from app.settings import Settings
from tests.alerts.conftest import (
    HOOK_SECRET,
    SAGE_REFUSAL,
    SMTP_PASSWORD,
    SMTP_USER,
    AlertRun,
    Clock,
    Mailbox,
    Receiver,
    fail_deal,
)
from tests.helpers import Maker, Scheduled, load_event, record_trigger, run_event
from tests.upstreams import upstreams

SAGE_KEY = ConnectionKey(Provider.SAGE, "b" * 32)
ADVICE = {
    "event_failed": "The deal's manager has a Kommo task saying why. Fix what the error names (or "
    "wait until Sage/Kommo answer again), then replay: POST /ops/events/{id}/replay or "
    "`sagebridge events replay ID`. The retry queue: GET /ops/retries.",
    "event_needs_mapping": "Add a rule for each product named to the mapping file "
    "(LEDGER_MAPPINGS_PATH; `sagebridge mappings suggest` proposes some), then replay them "
    "all: POST /ops/events/replay-needs-mapping.",
    "connection_needs_reauth": "Connect again: POST /ops/connections/{provider}/start "
    "(docs/OPERATIONS.md, Connecting real accounts). Events that need the connection wait "
    "(waiting_connection) and resume by themselves once it is active.",
    "kommo_webhook_disabled": "Re-enable it in Kommo: Settings > Integrations > Web hooks. Kommo "
    "disables a hook after too many answers other than 2xx: look for them in the log. "
    "Reconciliation keeps invoicing meanwhile (every RECONCILE_MINUTES), only later.",
    "token_expiring": "Sage: an idle grant is refreshed twice a day (KEEP_ALIVE_DAYS); if it "
    "still expires, look for connection.keep_alive_failed in the log. Kommo long-lived token: "
    "generate a new one and store it. Otherwise connect again before it expires: "
    "POST /ops/connections/{provider}/start.",
    "events_waiting": "Events are due but not run in time: a backlog (more work than the "
    "workers' WORKER_MAX_JOBS), jobs that hang, or Redis unreachable. GET /readyz, GET /metrics "
    "(sagebridge_queue_depth) and the worker log say which.",
}


@dataclass
class World:
    sessionmaker: Maker
    settings: Settings
    bridge: Bridge
    queue: ArqRedis
    clock: Clock


@dataclass(frozen=True)
class Expected:
    kind: str
    cause: str
    title: str
    item: dict[str, Any]


async def failed_event(world: World) -> Expected:
    event_id = await fail_deal(world.sessionmaker, world.settings, world.bridge, 11)
    return Expected(
        "event_failed",
        "event_failed",
        "An event failed: its deal has no invoice",
        {
            "text": f"Deal 11 (event {event_id}): {SAGE_REFUSAL} "
            "https://testco.kommo.com/leads/detail/11",
            "event_id": event_id,
            "deal_id": "11",
            "state": "failed",
            "error": SAGE_REFUSAL,
            "deal_url": "https://testco.kommo.com/leads/detail/11",
        },
    )


async def needs_mapping(world: World) -> Expected:
    async with upstreams() as (kommo, _sage):
        kommo.add_lead(12, products=[(104, 1)])
        event_id = await record_trigger(world.sessionmaker, world.settings, 12)
        assert await run_event(world.sessionmaker, world.bridge, event_id) == "needs_mapping"
    error = "no ledger mapping for 'Mystery box' (element 104, SKU MYST-1, type other)"
    return Expected(
        "event_needs_mapping",
        "event_needs_mapping",
        "A deal needs a ledger mapping: no invoice yet",
        {
            "text": f"Deal 12 (event {event_id}): {error} https://testco.kommo.com/leads/detail/12",
            "event_id": event_id,
            "deal_id": "12",
            "state": "needs_mapping",
            "error": error,
            "deal_url": "https://testco.kommo.com/leads/detail/12",
        },
    )


async def _connect(world: World, refresh_expires_in: timedelta) -> ConnectionStore:
    tokens = TokenSet(
        access_token="sage-access-0001",
        refresh_token="sage-refresh-0001",
        access_expires_at=world.clock() + timedelta(minutes=5),
        refresh_expires_at=world.clock() + refresh_expires_in,
    )
    new = NewConnection(SAGE_KEY, GrantKind.OAUTH, tokens, "Acme Ltd", None)
    async with world.sessionmaker() as session:
        store = ConnectionStore(session, TokenCipher([generate_key()]))
        await store.save_connected(new)
        await session.commit()
        return store


async def needs_reauth(world: World) -> Expected:
    await _connect(world, timedelta(days=31))
    async with world.sessionmaker() as session:
        refused = "Sage refused the refresh token (invalid_grant)"
        assert await ConnectionStore(session, None).mark_needs_reauth(
            SAGE_KEY, refused, seen_generation=1
        )
        await session.commit()
    return Expected(
        "connection_needs_reauth",
        f"connection_needs_reauth:sage:{'b' * 32}",
        "A connection needs re-authorisation",
        {
            "text": f"Sage connection 'Acme Ltd' (account {'b' * 32}) needs re-authorisation: "
            "Sage refused the refresh token (invalid_grant)",
            "provider": "sage",
            "account": "b" * 32,
            "name": "Acme Ltd",
            "error": "Sage refused the refresh token (invalid_grant)",
        },
    )


async def token_expiring(world: World) -> Expected:
    await _connect(world, timedelta(days=3))
    expires = world.clock() + timedelta(days=3)
    return Expected(
        "token_expiring",
        f"token_expiring:sage:{'b' * 32}",
        "A connection's refresh token expires soon",
        {
            "text": f"Sage connection 'Acme Ltd' (account {'b' * 32}): the refresh token "
            f"expires {expires:%Y-%m-%d %H:%M} UTC, in 3.0 days",
            "provider": "sage",
            "account": "b" * 32,
            "name": "Acme Ltd",
            "expires_at": expires.isoformat(),
            "days_left": 3.0,
        },
    )


async def hook_disabled(world: World) -> Expected:
    await Queue(world.queue).record_webhook_state("disabled")  # as the reconciliation job does
    checked = (await world.queue.get("sagebridge:kommo_webhook_state") or b"").decode()
    checked_at = checked.split('"checked_at": "')[1].split('"')[0]
    return Expected(
        "kommo_webhook_disabled",
        "kommo_webhook_disabled",
        "Kommo has disabled the bridge's webhook",
        {
            "text": f"Kommo reports the bridge's webhook disabled (checked {checked_at})",
            "checked_at": checked_at,
        },
    )


async def events_waiting(world: World) -> Expected:
    event_id = await record_trigger(world.sessionmaker, world.settings, 13)
    due_since = (await load_event(world.sessionmaker, event_id)).next_attempt_at
    assert due_since is not None
    world.clock.advance(minutes=31, seconds=5)  # due since it came, and no worker runs it
    return Expected(
        "events_waiting",
        "events_waiting",
        "Due events are waiting too long",
        {
            "text": f"1 event(s) due for over 30 minutes and not run; the oldest, event "
            f"{event_id} (deal 13), for 31 minutes",
            "count": 1,
            "oldest_event_id": event_id,
            "deal_id": "13",
            "due_since": due_since.isoformat(),
            "minutes": 31,
        },
    )


CAUSES: dict[str, Callable[[World], Awaitable[Expected]]] = {
    "event_failed": failed_event,
    "event_needs_mapping": needs_mapping,
    "connection_needs_reauth": needs_reauth,
    "token_expiring": token_expiring,
    "kommo_webhook_disabled": hook_disabled,
    "events_waiting": events_waiting,
}


@pytest.mark.parametrize("cause", list(CAUSES))
async def test_each_cause_arrives_by_email_and_by_signed_webhook(
    cause: str,
    channels_settings: Settings,
    sessionmaker: Maker,
    bridge: tuple[Bridge, Scheduled],
    queue: ArqRedis,
    clock: Clock,
    mailbox: Mailbox,
    receiver: tuple[Receiver, str],
    run_alert_job: AlertRun,
) -> None:
    world = World(sessionmaker, channels_settings, bridge[0], queue, clock)
    expected = await CAUSES[cause](world)

    assert await run_alert_job(channels_settings) == 1

    text = f"sagebridge: {expected.title}\n- {expected.item['text']}\nWhat to do: {ADVICE[cause]}"
    [mail] = mailbox.messages
    assert (mail["From"], mail["To"], mail["Subject"]) == (
        "bridge@example.com",
        "ops@example.com, oncall@example.com",
        f"[sagebridge] {expected.title}",
    )
    assert mail.get_content().replace("\r\n", "\n") == (
        f"{text}\n\n-- \nsagebridge alert 1 ({expected.cause}), "
        f"{clock():%Y-%m-%d %H:%M:%S} UTC. All alerts: GET /ops/alerts\n"
    )
    assert mailbox.logins == [(SMTP_USER, SMTP_PASSWORD)]

    [(headers, body)] = receiver[0].requests
    payload = Webhook(HOOK_SECRET).verify(body, headers)
    if cause == "kommo_webhook_disabled":  # Slack's markup characters, escaped as it asks
        assert "Settings &gt; Integrations &gt; Web hooks" in payload["text"]
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"].startswith("msg_")
    assert payload == {
        "type": f"alert.{expected.kind}",
        "timestamp": clock().isoformat(),
        "text": text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
        "data": {
            "id": 1,
            "cause": expected.cause,
            "kind": expected.kind,
            "title": expected.title,
            "digest": False,
            "count": 1,
            "items": [expected.item],
            "created_at": clock().isoformat(),
        },
    }
