"""The sandbox Kommo and Sage as a process of their own, plus a small harness control app.

    python -m reliability.sandbox_server --kommo-token T --sage-token T

prints one JSON line ``{"sage_url", "kommo_url", "harness_url"}`` once all three listen on
127.0.0.1. The simulators are the project's own (sandbox), with their documented control
routes (faults, request log); rate limits are off because the bridge's limits are proven in
tests/clients/test_ratelimit.py and would otherwise set the pace of every scenario here.

The harness app adds what a scenario needs at volume and the simulators' routes do not offer:
create N deals, move deals (with or without Kommo's own webhook, the latter returning the exact
form Kommo would have sent), a summary of what the upstreams now hold, and a full dump for the
secrets scan.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from dataclasses import asdict, is_dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI
from pydantic import BaseModel

from app.logging import configure_logging
from sandbox.kommo import KommoSandbox, build_kommo
from sandbox.kommo.models import Contact, ElementLink, Lead
from sandbox.kommo.patching import apply_patches, validate_patches
from sandbox.kommo.webhooks import status_form
from sandbox.runner import serve_app
from sandbox.sage import SageSandbox, build_sage
from sandbox.seed import (
    CATALOG_PRODUCTS,
    ELEMENT_CONSULTING,
    ELEMENT_MYSTERY,
    ELEMENT_WIDGET,
    ENUM_EMAIL_WORK,
    FIELD_CONTACT_EMAIL,
    FIELD_INVOICE_LINK,
    FIELD_INVOICE_NUMBER,
    FIELD_PRICE,
    KOMMO_USER_ID,
    PIPELINE_SALES,
    SAGE_BUSINESS_ID,
    STATUS_NEGOTIATION,
    demo_kommo_config,
    demo_kommo_state,
    demo_sage_config,
    demo_sage_state,
    register_webhook,
)


class NewLeads(BaseModel):
    first_id: int
    count: int
    customers: int = 10
    unmapped: bool = False
    status_id: int = STATUS_NEGOTIATION


class StageMove(BaseModel):
    lead_ids: list[int]
    status_id: int
    pipeline_id: int = PIPELINE_SALES
    # True: Kommo sends its own webhook (fire and forget, as Kommo does). False: nothing is
    # sent and the answer carries the form body Kommo would have sent, for the harness to send.
    webhook: bool = False


class Destination(BaseModel):
    destination: str


def build_harness(kommo: KommoSandbox, sage: SageSandbox, kommo_url: str) -> FastAPI:
    app = FastAPI(title="reliability harness control")
    state = kommo.state

    @app.post("/leads")
    def add_leads(body: NewLeads) -> dict[str, int]:
        with state.lock:
            now = state.now()
            contacts = _add_contacts(kommo, body.first_id, body.customers, now)
            for i in range(body.count):
                lead_id = body.first_id + i
                state.leads[lead_id] = _lead(lead_id, contacts[i % len(contacts)], body, now)
        return {"created": body.count}

    @app.post("/stage")
    async def move(body: StageMove) -> dict[str, Any]:
        change = [
            {"id": i, "status_id": body.status_id, "pipeline_id": body.pipeline_id}
            for i in body.lead_ids
        ]
        if body.webhook:
            kommo.patch_leads(change, user_id=state.admin_user_id, site=kommo_url)
            return {"moved": len(body.lead_ids), "body": None}
        with state.lock:
            patches = validate_patches(state, change)
            changes = apply_patches(state, patches, now=state.now(), user_id=state.admin_user_id)
            form = status_form(state, changes, modified_by=state.admin_user_id, site=kommo_url)
        return {"moved": len(changes), "body": urlencode(form) if changes else None}

    @app.post("/webhook")
    def subscribe(body: Destination) -> dict[str, int]:
        return {"id": register_webhook(state, body.destination).id}

    @app.post("/sage/revoke_refresh_tokens")
    def revoke_sage_grants() -> dict[str, int]:
        """What a user revoking the app in Sage does: every refresh token dies. (The
        simulator's own route revokes one token by value, which only the bridge knows.)"""
        store = sage.oauth
        tokens = list(store._refresh)  # the simulator keeps no other index of live grants
        return {"revoked": sum(store.revoke_refresh_token(t) for t in tokens)}

    @app.get("/summary")
    def summary(first_id: int, count: int) -> dict[str, Any]:
        return _summary(kommo, sage, range(first_id, first_id + count))

    @app.get("/dump")
    async def dump() -> Any:
        await kommo.webhooks.wait_idle()
        return json.loads(json.dumps(_dump(kommo, sage), default=_plain))

    return app


def _add_contacts(kommo: KommoSandbox, first_id: int, customers: int, now: int) -> list[int]:
    """One Kommo contact per customer, each with its own email (so Sage contacts get created)."""
    ids = []
    for n in range(max(1, customers)):
        contact_id = 50_000_000 + first_id + n
        contact = Contact(
            contact_id,
            f"Customer {first_id}-{n}",
            "Customer",
            f"{first_id}-{n}",
            KOMMO_USER_ID,
            KOMMO_USER_ID,
            now,
            now,
        )
        email = f"customer-{first_id}-{n}@example.com"
        contact.fields[FIELD_CONTACT_EMAIL] = [
            {"value": email, "enum_id": ENUM_EMAIL_WORK, "enum_code": "WORK"}
        ]
        kommo.state.contacts[contact_id] = contact
        ids.append(contact_id)
    return ids


def _lead(lead_id: int, contact_id: int, body: NewLeads, now: int) -> Lead:
    elements = [
        ElementLink(ELEMENT_CONSULTING, CATALOG_PRODUCTS, Decimal("1.5"), FIELD_PRICE),
        ElementLink(ELEMENT_WIDGET, CATALOG_PRODUCTS, Decimal(1 + lead_id % 4)),
    ]
    if body.unmapped:
        elements.append(ElementLink(ELEMENT_MYSTERY, CATALOG_PRODUCTS, Decimal(1)))
    stage = (PIPELINE_SALES, body.status_id)
    name = f"Reliability deal {lead_id}"
    lead = Lead.created(lead_id, name, by=KOMMO_USER_ID, at=now, stage=stage, price=200)
    return lead.link(contact_id, elements)


def _summary(kommo: KommoSandbox, sage: SageSandbox, lead_ids: range) -> dict[str, Any]:
    state = kommo.state
    wanted = set(lead_ids)
    leads: dict[str, Any] = {}
    with state.lock:
        tasks: dict[int, list[dict[str, Any]]] = {}
        for task in state.tasks.values():
            if task.entity_id in wanted:
                tasks.setdefault(task.entity_id, []).append(
                    {"id": task.id, "created_at": task.created_at, "text": task.text}
                )
        for lead_id in lead_ids:
            lead = state.leads.get(lead_id)
            if lead is None:
                continue
            leads[str(lead_id)] = {
                "status_id": lead.status_id,
                "invoice_number": _field(lead, FIELD_INVOICE_NUMBER),
                "invoice_link": _field(lead, FIELD_INVOICE_LINK),
                "tasks": tasks.get(lead_id, []),
            }
    references = {f"KOMMO-{i}" for i in lead_ids}
    book = sage.state.book_for(SAGE_BUSINESS_ID)
    invoices: dict[str, list[dict[str, Any]]] = {}
    emails: dict[str, int] = {}
    with sage.state.lock:
        for inv in book.invoices.values():
            if inv.reference in references:
                invoices.setdefault(inv.reference, []).append(
                    {"id": inv.id, "number": inv.invoice_number, "at": inv.created_at.isoformat()}
                )
        for contact in book.contacts.values():
            if contact.email:
                emails[contact.email] = emails.get(contact.email, 0) + 1
    return {"leads": leads, "invoices": invoices, "contacts_by_email": emails}


def _field(lead: Lead, field_id: int) -> Any:
    values = lead.fields.get(field_id)
    return values[0].get("value") if values else None


def _dump(kommo: KommoSandbox, sage: SageSandbox) -> dict[str, Any]:
    """Everything the bridge sent or stored upstream: request logs, and the records it wrote."""
    with kommo.state.lock:
        kommo_records = {
            "leads": [asdict(lead) for lead in kommo.state.leads.values()],
            "tasks": [asdict(task) for task in kommo.state.tasks.values()],
        }
    book = sage.state.book_for(SAGE_BUSINESS_ID)
    with sage.state.lock:
        sage_records = {
            "contacts": [asdict(c) for c in book.contacts.values()],
            "invoices": [asdict(i) for i in book.invoices.values()],
        }
    return {
        "kommo_requests": [e.model_dump(mode="json") for e in kommo.requests.entries()],
        "sage_requests": [e.model_dump(mode="json") for e in sage.requests.entries()],
        # What the bridge answered to Kommo's own webhooks (status and body are recorded; the
        # destination is Kommo's copy of the hook URL, which necessarily holds the secret).
        "kommo_webhook_answers": [
            {k: v for k, v in d.model_dump(mode="json").items() if k != "destination"}
            for d in kommo.webhooks.deliveries()
        ],
        "kommo_records": kommo_records,
        "sage_records": sage_records,
    }


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)


async def serve(args: argparse.Namespace) -> None:
    kommo_cfg = demo_kommo_config(rate_limit=None, long_lived_tokens=[args.kommo_token])
    sage_cfg = demo_sage_config(rate_limit=None, static_tokens=[args.sage_token])
    kommo = build_kommo(kommo_cfg, demo_kommo_state())
    sage = build_sage(sage_cfg, demo_sage_state())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with (
        serve_app(sage.app) as sage_url,
        serve_app(kommo.app) as kommo_url,
    ):
        harness = build_harness(kommo, sage, kommo_url)
        async with serve_app(harness) as harness_url:
            urls = {"sage_url": sage_url, "kommo_url": kommo_url, "harness_url": harness_url}
            print(json.dumps(urls), flush=True)
            await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kommo-token", default="sandbox-kommo-token")
    parser.add_argument("--sage-token", default="sandbox-sage-token")
    args = parser.parse_args(argv)
    configure_logging("WARNING", stream=sys.stderr)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
