"""Kommo-side data for the benchmarks: extra deals in the sandbox, real status-hook bodies, and
moving deals as a manager does in Kommo's UI."""

from __future__ import annotations

import copy
import math
from urllib.parse import urlencode

from sandbox.kommo.models import ContactLink
from sandbox.kommo.sandbox import KommoSandbox
from sandbox.kommo.state import KommoState
from sandbox.kommo.webhooks import StatusChange, status_form
from sandbox.seed import (
    CONTACT_ADA,
    FIELD_CONTACT_EMAIL,
    LEAD_SAMPLE,
    PIPELINE_SALES,
    STATUS_NEGOTIATION,
    STATUS_RAISE_INVOICE,
    demo_kommo_state,
)

FIRST_DEAL_ID = 3_100_001
FIRST_CONTACT_ID = 5_100_001


def every_nth(index: int, share: float) -> bool:
    """True for `share` of indexes, spread evenly (0.25: indexes 3, 7, 11, …)."""
    return math.floor((index + 1) * share) > math.floor(index * share)


def add_deals(
    state: KommoState,
    count: int,
    *,
    new_customer_share: float,
    first_id: int = FIRST_DEAL_ID,
    status_id: int = STATUS_NEGOTIATION,
) -> list[int]:
    """`count` copies of the seeded Sample deal (two mapped lines, Ada as customer); a
    `new_customer_share` of them get a customer of their own that Sage does not know yet."""
    ids = list(range(first_id, first_id + count))
    with state.lock:
        template = state.leads[LEAD_SAMPLE]
        for index, lead_id in enumerate(ids):
            lead = copy.deepcopy(template)
            lead.id, lead.name, lead.fields = lead_id, f"Deal {lead_id}", {}
            lead.status_id = status_id
            if every_nth(index, new_customer_share):
                lead.contacts = [ContactLink(_new_contact(state, index), is_main=True)]
            state.leads[lead_id] = lead
    return ids


def _new_contact(state: KommoState, index: int) -> int:
    contact = copy.deepcopy(state.contacts[CONTACT_ADA])
    contact.id = FIRST_CONTACT_ID + index
    contact.first_name, contact.last_name = "Customer", str(index)
    contact.name = f"Customer {index}"
    email = dict(contact.fields[FIELD_CONTACT_EMAIL][0], value=f"customer{index}@bench.example")
    contact.fields[FIELD_CONTACT_EMAIL] = [email]
    state.contacts[contact.id] = contact
    return contact.id


def status_hook_bodies(
    first_id: int, count: int, *, trigger_share: float, site: str = "https://sandbox.kommo.com"
) -> list[bytes]:
    """One real Kommo `status_lead` hook body for each of `count` leads from `first_id`, exactly
    as the simulator sends them. A `trigger_share` of the leads moved into Raise Invoice (new
    work); the rest moved into Negotiation, which the bridge stores as skipped."""
    state = demo_kommo_state()
    lead_ids = add_deals(state, count, new_customer_share=0.0, first_id=first_id)
    bodies: list[bytes] = []
    for index, lead_id in enumerate(lead_ids):
        trigger = every_nth(index, trigger_share)
        state.leads[lead_id].status_id = STATUS_RAISE_INVOICE if trigger else STATUS_NEGOTIATION
        old = STATUS_NEGOTIATION if trigger else STATUS_RAISE_INVOICE
        change = [StatusChange(lead_id, old)]
        form = status_form(state, change, modified_by=state.admin_user_id, site=site)
        bodies.append(urlencode(form).encode())
    return bodies


def move_to_invoice_stage(kommo: KommoSandbox, lead_id: int, *, site: str) -> None:
    """What dragging the deal to Raise Invoice in Kommo's UI does (the sandbox's /move route),
    called in-process so the trigger time is exact; the status hook goes out in the background."""
    change = {"status_id": STATUS_RAISE_INVOICE, "pipeline_id": PIPELINE_SALES}
    kommo.patch_leads([change], user_id=kommo.state.admin_user_id, site=site, path_id=lead_id)
