"""Sage credit notes, contact allocations and voids: as Sage's invoicing guide documents them
('From Unpaid To Part Paid Or Paid', 'From Unpaid To Void', 'Other Document Types')."""

from __future__ import annotations

from typing import Any

import httpx

from sandbox.seed import LEDGER_SALES_A, LEDGER_SERVICES, SAGE_BANK_ACCOUNT, SAGE_GRACE_CONTACT
from tests.sandbox.helpers import invoice_body, sage_errors

CONSULTING = {
    "description": "Consulting hour",
    "ledger_account_id": LEDGER_SERVICES,
    "quantity": "2.5",
    "unit_price": "120.00",
    "tax_rate_id": "GB_STANDARD",
    "tax_amount": "60.00",
}


async def _invoice(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.post("/sales_invoices", json=invoice_body())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _credit_note(client: httpx.AsyncClient, **overrides: Any) -> httpx.Response:
    note = {
        "contact_id": SAGE_GRACE_CONTACT,
        "date": "2024-05-02",
        "reference": "KOMMO-3000002-CN",
        "credit_note_lines": [CONSULTING],
        **overrides,
    }
    return await client.post("/sales_credit_notes", json={"sales_credit_note": note})


async def _allocate(
    client: httpx.AsyncClient, *sides: tuple[str, str], kind: str = "CUSTOMER_ALLOCATION"
) -> httpx.Response:
    body = {
        "contact_allocation": {
            "contact_id": SAGE_GRACE_CONTACT,
            "allocated_artefacts": [{"artefact_id": a, "amount": amount} for a, amount in sides],
            "transaction_type_id": kind,
        }
    }
    return await client.post("/contact_allocations", json=body)


async def test_a_credit_note_is_numbered_and_outstanding_until_allocated(
    sage_client: httpx.AsyncClient,
) -> None:
    created = await _credit_note(sage_client)

    note = created.json()
    assert created.status_code == 201
    assert (note["credit_note_number"], note["status"]["id"], note["total_amount"]) == (
        "SCN-1",
        "UNPAID",
        "360.0",
    )
    assert note["outstanding_amount"] == "360.0"
    assert note["transaction_type"]["id"] == "SALES_CREDIT_NOTE"
    assert note["credit_note_lines"][0]["tax_amount"] == "60.0"
    found = await sage_client.get(
        "/sales_credit_notes", params={"search": "KOMMO-3000002-CN", "attributes": "reference"}
    )
    assert [(i["id"], i["reference"]) for i in found.json()["$items"]] == [
        (note["id"], "KOMMO-3000002-CN")
    ]


async def test_credit_note_lines_follow_the_invoice_rules(sage_client: httpx.AsyncClient) -> None:
    wrong_tax = await _credit_note(
        sage_client, credit_note_lines=[{**CONSULTING, "tax_amount": "1"}]
    )
    unknown = await _credit_note(sage_client, credit_note_lines=[{**CONSULTING, "colour": "red"}])

    assert sage_errors(wrong_tax) == [("RecordInvalid", "credit_note_lines.0.tax_amount")]
    assert "Credit note line 1" in wrong_tax.json()[0]["$message"]
    assert sage_errors(unknown) == [("RecordInvalid", "credit_note_lines.0.colour")]


async def test_an_allocation_sets_a_credit_note_against_an_invoice(
    sage_client: httpx.AsyncClient,
) -> None:
    invoice = await _invoice(sage_client)
    note = (await _credit_note(sage_client)).json()

    allocated = await _allocate(sage_client, (invoice["id"], "360.0"), (note["id"], "-360.0"))

    assert allocated.status_code == 201
    sides = [(a["artefact"]["$path"], a["amount"]) for a in allocated.json()["allocated_artefacts"]]
    assert sides == [
        (f"/sales_invoices/{invoice['id']}", "360.0"),
        (f"/sales_credit_notes/{note['id']}", "-360.0"),
    ]
    after = (await sage_client.get(f"/sales_invoices/{invoice['id']}")).json()
    assert (after["status"]["id"], after["total_paid"], after["outstanding_amount"]) == (
        "PART_PAID",
        "360.0",
        "71.96",
    )
    (entry,) = after["payments_allocations"]
    assert (entry["type"], entry["amount"], entry["contact_payment"]) == (
        "CUSTOMER_ALLOCATION",
        "360.0",
        None,
    )
    assert entry["artefact"] == {
        "id": note["id"],
        "displayed_as": "SCN-1",
        "$path": f"/sales_credit_notes/{note['id']}",
    }
    assert entry["contact_allocation"]["id"] == allocated.json()["id"]
    settled = (await sage_client.get(f"/sales_credit_notes/{note['id']}")).json()
    assert (settled["status"]["id"], settled["outstanding_amount"]) == ("PAID", "0.0")


async def test_an_allocation_must_add_up_to_zero_with_signs_as_documented(
    sage_client: httpx.AsyncClient,
) -> None:
    invoice = await _invoice(sage_client)
    note = (await _credit_note(sage_client)).json()

    unbalanced = await _allocate(sage_client, (invoice["id"], "100.0"), (note["id"], "-90.0"))
    reversed_signs = await _allocate(sage_client, (invoice["id"], "-10.0"), (note["id"], "10.0"))
    too_much = await _allocate(sage_client, (invoice["id"], "500.0"), (note["id"], "-500.0"))
    receipt = await _allocate(
        sage_client, (invoice["id"], "1.0"), (note["id"], "-1.0"), kind="CUSTOMER_RECEIPT"
    )

    assert sage_errors(unbalanced) == [("RecordInvalid", "allocated_artefacts")]
    assert sage_errors(reversed_signs) == [
        ("RecordInvalid", "allocated_artefacts.0.amount"),
        ("RecordInvalid", "allocated_artefacts.1.amount"),
    ]
    assert sage_errors(too_much) == [
        ("RecordInvalid", "allocated_artefacts.0.amount"),
        ("RecordInvalid", "allocated_artefacts.1.amount"),
    ]
    assert sage_errors(receipt) == [("RecordInvalid", "transaction_type_id")]


async def test_void_takes_the_reason_from_the_query_or_a_json_body(
    sage_client: httpx.AsyncClient,
) -> None:
    by_query, by_body = await _invoice(sage_client), await _invoice(sage_client)

    first = await sage_client.delete(
        f"/sales_invoices/{by_query['id']}", params={"void_reason": "Deal lost"}
    )
    second = await sage_client.request(
        "DELETE", f"/sales_invoices/{by_body['id']}", json={"void_reason": "Deal deleted"}
    )

    assert (first.json()["status"]["id"], first.json()["void_reason"]) == ("VOID", "Deal lost")
    assert (second.json()["status"]["id"], second.json()["void_reason"]) == (
        "VOID",
        "Deal deleted",
    )


async def test_an_invoice_with_an_allocated_credit_note_cannot_be_voided(
    sage_client: httpx.AsyncClient, sage_anonymous: httpx.AsyncClient
) -> None:
    invoice = await _invoice(sage_client)
    await sage_anonymous.post(
        f"/sandbox/sales_invoices/{invoice['id']}/credit_notes", json={"amount": "12.00"}
    )

    void = await sage_client.delete(f"/sales_invoices/{invoice['id']}", params={"void_reason": "x"})

    assert (void.status_code, sage_errors(void)) == (422, [("RecordInvalid", "status")])


async def test_crediting_by_hand_copies_the_invoice_or_credits_an_amount(
    sage_client: httpx.AsyncClient, sage_anonymous: httpx.AsyncClient
) -> None:
    whole, part = await _invoice(sage_client), await _invoice(sage_client)

    full = await sage_anonymous.post(f"/sandbox/sales_invoices/{whole['id']}/credit_notes", json={})
    some = await sage_anonymous.post(
        f"/sandbox/sales_invoices/{part['id']}/credit_notes", json={"amount": "120.00"}
    )
    over = await sage_anonymous.post(
        f"/sandbox/sales_invoices/{part['id']}/credit_notes", json={"amount": "400.00"}
    )

    assert (full.status_code, full.json()["total_amount"]) == (201, "431.96")
    assert [ln["description"] for ln in full.json()["credit_note_lines"]] == [
        "Consulting hour",
        "Widget",
    ]
    whole_after = (await sage_client.get(f"/sales_invoices/{whole['id']}")).json()
    assert (whole_after["status"]["id"], whole_after["outstanding_amount"]) == ("PAID", "0.0")
    line = some.json()["credit_note_lines"][0]
    assert (line["ledger_account"]["id"], line["net_amount"], line["tax_amount"]) == (
        LEDGER_SERVICES,
        "100.0",
        "20.0",
    )
    part_after = (await sage_client.get(f"/sales_invoices/{part['id']}")).json()
    assert (part_after["status"]["id"], part_after["outstanding_amount"]) == ("PART_PAID", "311.96")
    assert over.status_code == 422


async def test_voiding_by_hand_needs_no_payments(
    sage_client: httpx.AsyncClient, sage_anonymous: httpx.AsyncClient
) -> None:
    invoice, paid = await _invoice(sage_client), await _invoice(sage_client)
    await sage_anonymous.post(
        f"/sandbox/sales_invoices/{paid['id']}/payments", json={"amount": "10.00"}
    )

    voided = await sage_anonymous.post(
        f"/sandbox/sales_invoices/{invoice['id']}/void", json={"void_reason": "Typo"}
    )
    refused = await sage_anonymous.post(
        f"/sandbox/sales_invoices/{paid['id']}/void", json={"void_reason": "Typo"}
    )

    assert (voided.json()["status"]["id"], voided.json()["void_reason"]) == ("VOID", "Typo")
    assert refused.status_code == 422


async def test_receipts_and_allocations_show_on_the_invoice_as_documented(
    sage_client: httpx.AsyncClient, sage_anonymous: httpx.AsyncClient
) -> None:
    invoice = await _invoice(sage_client)
    payment = {
        "contact_payment": {
            "transaction_type_id": "CUSTOMER_RECEIPT",
            "contact_id": SAGE_GRACE_CONTACT,
            "bank_account_id": SAGE_BANK_ACCOUNT,
            "date": "2024-05-03",
            "total_amount": "100.00",
            "reference": "Cheque 1001",
            "allocated_artefacts": [{"artefact_id": invoice["id"], "amount": "100.00"}],
        }
    }
    await sage_client.post("/contact_payments", json=payment)
    await sage_anonymous.post(
        f"/sandbox/sales_invoices/{invoice['id']}/credit_notes",
        json={"amount": "50.00", "date": "2024-05-04"},
    )

    after = (await sage_client.get(f"/sales_invoices/{invoice['id']}")).json()

    assert [(e["type"], e["amount"], e["displayed_as"]) for e in after["payments_allocations"]] == [
        ("CUSTOMER_RECEIPT", "100.0", "Cheque 1001"),
        ("CUSTOMER_ALLOCATION", "50.0", "SCN-1"),
    ]
    assert (after["total_paid"], after["outstanding_amount"], after["last_paid"]) == (
        "150.0",
        "281.96",
        "2024-05-03",
    )
    assert after["invoice_lines"][1]["ledger_account"]["id"] == LEDGER_SALES_A
