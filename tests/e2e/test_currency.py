"""Currencies end to end over real HTTP: a Kommo account in EUR, a Sage business in GBP.

By default (CURRENCY_POLICY=task) no invoice is raised and the deal's manager gets a task naming
both currencies; with CURRENCY_POLICY=deal_currency the invoice is raised in EUR for a customer
created in EUR. The worker reads the account's currency once per process, so each policy gets a
worker started after the account changed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sandbox.kommo.models import Contact, ElementLink, Lead
from sandbox.seed import (
    CATALOG_PRODUCTS,
    ELEMENT_WIDGET,
    FIELD_CONTACT_EMAIL,
    FIELD_INVOICE_NUMBER,
    KOMMO_USER_ID,
    PIPELINE_SALES,
    STATUS_NEGOTIATION,
    STATUS_RAISE_INVOICE,
)
from tests.e2e.test_after_invoice import (
    Stack,
    eventually,
    invoices,
    move,
    shown,
    tasks,
)
from tests.e2e.test_after_invoice import stack as stack  # this module's own bridge and sandbox
from tests.e2e.test_end_to_end import e2e_database as e2e_database
from tests.e2e.test_end_to_end import settled

pytestmark = pytest.mark.asyncio(loop_scope="module")


def in_euros(stack: Stack) -> None:
    with stack.sandbox.kommo.state.lock:
        stack.sandbox.kommo.state.account.currency = "EUR"


def add_deal(stack: Stack, lead_id: int, email: str) -> None:
    """A deal in Negotiation for a customer of its own (so no earlier test's contact in Sage
    decides its currency), with 2 Widgets."""
    state = stack.sandbox.kommo.state
    with state.lock:
        now = state.now()
        contact = Contact(
            lead_id,
            f"Customer {lead_id}",
            "Customer",
            str(lead_id),
            KOMMO_USER_ID,
            KOMMO_USER_ID,
            now,
            now,
        )
        contact.fields[FIELD_CONTACT_EMAIL] = [{"value": email, "enum_code": "WORK"}]
        state.contacts[contact.id] = contact
        stage = (PIPELINE_SALES, STATUS_NEGOTIATION)
        lead = Lead.created(lead_id, f"Deal {lead_id}", by=KOMMO_USER_ID, at=now, stage=stage)
        state.leads[lead_id] = lead.link(
            contact.id, [ElementLink(ELEMENT_WIDGET, CATALOG_PRODUCTS, Decimal(2))]
        )


async def test_a_deal_in_another_currency_gets_a_task_and_no_invoice_by_default(
    stack: Stack,
) -> None:
    in_euros(stack)
    stack.start_worker()
    add_deal(stack, 3200001, "eur-one@example.com")

    await move(stack, 3200001, STATUS_RAISE_INVOICE)

    (task,) = await eventually(lambda: tasks(stack, 3200001), stack)
    assert "EUR" in task.text and "GBP" in task.text
    assert "CURRENCY_POLICY=deal_currency" in task.text
    assert "failed" in await settled(stack.database_url, 3200001)
    assert invoices(stack, 3200001) == []
    assert shown(stack, 3200001, FIELD_INVOICE_NUMBER) is None


async def test_the_deal_currency_policy_invoices_in_the_deals_currency(stack: Stack) -> None:
    in_euros(stack)
    with stack.sandbox.sage.state.lock:
        stack.book.business.multi_currency_enabled = True
        stack.book.business.exchange_rates["EUR"] = Decimal("1.17")
    stack.start_worker(CURRENCY_POLICY="deal_currency")
    add_deal(stack, 3200002, "eur-two@example.com")

    await move(stack, 3200002, STATUS_RAISE_INVOICE)

    number = await eventually(lambda: shown(stack, 3200002, FIELD_INVOICE_NUMBER), stack)
    (invoice,) = invoices(stack, 3200002)
    assert invoice.currency_id == "EUR"
    assert number == invoice.invoice_number
    with stack.sandbox.sage.state.lock:
        (customer,) = [c for c in stack.book.contacts.values() if c.email == "eur-two@example.com"]
    assert customer.currency_id == "EUR"
    assert "invoiced" in await settled(stack.database_url, 3200002)
    assert tasks(stack, 3200002) == []
