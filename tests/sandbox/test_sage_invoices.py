"""Sage sales invoices: creation rules, tax checks, idempotency, filters, void, payments."""

from __future__ import annotations

import re
from typing import Any

import httpx

from sandbox.sage import SageSandbox
from sandbox.seed import (
    LEDGER_BANK_CHARGES,
    LEDGER_SUBSCRIPTIONS,
    SAGE_BANK_ACCOUNT,
    SAGE_GRACE_CONTACT,
)
from tests.sandbox.helpers import FakeClock, invoice_body, sage_errors


async def _create(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/sales_invoices", json=invoice_body(**overrides))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _line(**fields: Any) -> dict[str, Any]:
    line = {
        "description": "Support plan",
        "ledger_account_id": LEDGER_SUBSCRIPTIONS,
        "quantity": 1,
        "unit_price": 499.00,
        "tax_rate_id": "GB_STANDARD",
        "tax_amount": 99.80,
    }
    return {**line, **fields}


async def test_create_computes_amounts_number_status_and_links(
    sage_client: httpx.AsyncClient,
) -> None:
    invoice = await _create(sage_client)

    assert re.fullmatch("[0-9a-f]{32}", invoice["id"])
    assert {k: invoice[k] for k in ("invoice_number", "displayed_as", "status")} == {
        "invoice_number": "SI-1",
        "displayed_as": "SI-1",
        "status": {"id": "UNPAID", "displayed_as": "Unpaid", "$path": "/artefact_statuses/UNPAID"},
    }
    amounts = ("net_amount", "tax_amount", "total_amount", "outstanding_amount", "total_paid")
    assert [invoice[k] for k in amounts] == ["359.97", "71.99", "431.96", "431.96", "0.0"]
    assert [
        (ln["net_amount"], ln["tax_amount"], ln["total_amount"]) for ln in invoice["invoice_lines"]
    ] == [
        ("300.0", "60.0", "360.0"),
        ("59.97", "11.99", "71.96"),
    ]
    assert (invoice["created_at"], invoice["updated_at"]) == ("2024-05-01T09:00:00Z",) * 2
    assert (invoice["date"], invoice["due_date"]) == ("2024-05-01", "2024-05-31")
    assert invoice["links"] == [
        {
            "href": f"http://sage.test/sandbox/ui/sales_invoices/{invoice['id']}",
            "rel": "alternate",
            "type": "text/html",
        }
    ]
    assert (await _create(sage_client))["invoice_number"] == "SI-2"


async def test_invoice_html_view(sage_client: httpx.AsyncClient) -> None:
    invoice = await _create(sage_client)

    page = await sage_client.get(invoice["links"][0]["href"])

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "SI-1" in page.text and "Grace Hopper" in page.text and "431.96" in page.text


async def test_get_returns_the_created_invoice(sage_client: httpx.AsyncClient) -> None:
    invoice = await _create(sage_client)
    assert (await sage_client.get(f"/sales_invoices/{invoice['id']}")).json() == invoice


async def test_schema_rejects_missing_and_unknown_attributes(
    sage_client: httpx.AsyncClient,
) -> None:
    body = invoice_body(invoice_lines=[{**_line(), "sku": "SUP-12"}], colour="blue")
    del body["sales_invoice"]["date"]

    response = await sage_client.post("/sales_invoices", json=body)

    assert response.status_code == 422
    assert sorted(sage_errors(response)) == [
        ("RecordInvalid", "colour"),
        ("RecordInvalid", "date"),
        ("RecordInvalid", "invoice_lines.0.sku"),
    ]


async def test_schema_checks_types_and_dates(sage_client: httpx.AsyncClient) -> None:
    body = invoice_body(date="01/05/2024", invoice_lines=[_line(unit_price="lots")])
    response = await sage_client.post("/sales_invoices", json=body)
    assert sorted(sage_errors(response)) == [
        ("RecordInvalid", "date"),
        ("RecordInvalid", "invoice_lines.0.unit_price"),
    ]


async def test_idempotency_id_is_a_32_character_hyphenless_guid(
    sage_client: httpx.AsyncClient,
) -> None:
    hyphens = await sage_client.post(
        "/sales_invoices", json=invoice_body(idempotency_id="9c3e1f0a-2b4d-4c6e-8f1a-3b5c7d9e0f12")
    )
    plain = await sage_client.post("/sales_invoices", json=invoice_body(idempotency_id="9C" * 16))

    assert (hyphens.status_code, sage_errors(hyphens)) == (
        422,
        [("RecordInvalid", "idempotency_id")],
    )
    assert plain.status_code == 201


async def test_namespace_is_required(sage_client: httpx.AsyncClient) -> None:
    response = await sage_client.post("/sales_invoices", json=invoice_body()["sales_invoice"])
    assert sage_errors(response) == [
        ("RecordInvalid", "sales_invoice"),
        *[("RecordInvalid", name) for name in ("contact_id", "date", "reference", "invoice_lines")],
    ]


async def test_tax_amount_required_unless_zero_exempt_or_no_tax(
    sage_client: httpx.AsyncClient,
) -> None:
    standard = _line()
    del standard["tax_amount"]
    missing = await sage_client.post("/sales_invoices", json=invoice_body(invoice_lines=[standard]))

    assert missing.status_code == 422
    assert missing.json()[0]["$message"] == (
        "Invoice line 1: tax_amount is required for tax rate GB_STANDARD (20.00%)"
    )
    zero_kinds = []
    for rate in ("GB_ZERO", "GB_EXEMPT", "GB_NO_TAX"):
        line = _line(tax_rate_id=rate)
        del line["tax_amount"]
        zero_kinds.append(await _create(sage_client, invoice_lines=[line]))
    assert [i["tax_amount"] for i in zero_kinds] == ["0.0", "0.0", "0.0"]


async def test_tax_amount_must_match_the_rate_within_a_penny(
    sage_client: httpx.AsyncClient,
) -> None:
    lines = [_line(), _line(tax_amount=99.81), _line(tax_amount=98.00)]

    response = await sage_client.post("/sales_invoices", json=invoice_body(invoice_lines=lines))

    assert (response.status_code, sage_errors(response)) == (
        422,
        [("RecordInvalid", "invoice_lines.2.tax_amount")],
    )
    assert response.json()[0]["$message"] == (
        "Invoice line 3: tax_amount 98.0 does not match GB_STANDARD (20.00%) of 499.00 "
        "(expected 99.80)"
    )


async def test_tax_rounds_half_up(sage_client: httpx.AsyncClient) -> None:
    # 0.125 × 20% = 0.025 → 0.03 half-up (banker's rounding would give 0.02).
    line = _line(quantity=1, unit_price=0.125, tax_amount=0.03)
    invoice = await _create(sage_client, invoice_lines=[line])
    assert (invoice["net_amount"], invoice["tax_amount"]) == ("0.13", "0.03")


async def test_reduced_rate_and_prices_including_tax(sage_client: httpx.AsyncClient) -> None:
    lower = _line(tax_rate_id="GB_LOWER", unit_price=100, tax_amount=5)
    gross = _line(unit_price=120, unit_price_includes_tax=True, tax_amount=20)

    invoice = await _create(sage_client, invoice_lines=[lower, gross])

    assert [(ln["net_amount"], ln["tax_amount"]) for ln in invoice["invoice_lines"]] == [
        ("100.0", "5.0"),
        ("100.0", "20.0"),
    ]


async def test_sent_net_amount_must_agree(sage_client: httpx.AsyncClient) -> None:
    body = invoice_body(invoice_lines=[_line(net_amount=500)])
    response = await sage_client.post("/sales_invoices", json=body)
    assert sage_errors(response) == [("RecordInvalid", "invoice_lines.0.net_amount")]


async def test_ledger_account_must_exist_and_be_visible_in_sales(
    sage_client: httpx.AsyncClient,
) -> None:
    lines = [
        _line(ledger_account_id="0" * 32),
        _line(),
        _line(ledger_account_id=LEDGER_BANK_CHARGES),
    ]

    response = await sage_client.post("/sales_invoices", json=invoice_body(invoice_lines=lines))

    assert response.status_code == 404
    assert sage_errors(response) == [
        ("RecordNotFound", "invoice_lines.0.ledger_account_id"),
        ("RecordNotFound", "invoice_lines.2.ledger_account_id"),
    ]
    assert response.json()[0]["$message"] == "Couldn't find record."


async def test_tax_rate_must_exist(sage_client: httpx.AsyncClient) -> None:
    body = invoice_body(invoice_lines=[_line(tax_rate_id="GB_LUXURY")])
    response = await sage_client.post("/sales_invoices", json=body)
    assert sage_errors(response) == [("RecordNotFound", "invoice_lines.0.tax_rate_id")]


async def test_contact_must_exist_and_be_a_customer(sage_client: httpx.AsyncClient) -> None:
    vendor = await sage_client.post(
        "/contacts", json={"contact": {"name": "Parts Co", "contact_type_ids": ["VENDOR"]}}
    )

    unknown = await sage_client.post("/sales_invoices", json=invoice_body(contact_id="0" * 32))
    wrong_type = await sage_client.post(
        "/sales_invoices", json=invoice_body(contact_id=vendor.json()["id"])
    )

    assert (unknown.status_code, sage_errors(unknown)) == (404, [("RecordNotFound", "contact_id")])
    assert (wrong_type.status_code, sage_errors(wrong_type)) == (
        422,
        [("RecordInvalid", "contact_id")],
    )
    assert wrong_type.json()[0]["$message"] == "Couldn't find Customer."


async def test_failed_posts_do_not_consume_invoice_numbers(sage_client: httpx.AsyncClient) -> None:
    await sage_client.post("/sales_invoices", json=invoice_body(contact_id="0" * 32))
    assert (await _create(sage_client))["invoice_number"] == "SI-1"


async def test_idempotency_id_replays_the_first_answer(
    sage_client: httpx.AsyncClient, sage: SageSandbox
) -> None:
    key = "4f2d0c1b9a8e7d6c5b4a39281706f5e4"
    first = await sage_client.post("/sales_invoices", json=invoice_body(idempotency_id=key))
    again = await sage_client.post(
        "/sales_invoices", json=invoice_body(idempotency_id=key, reference="changed")
    )

    assert (again.status_code, again.json()) == (first.status_code, first.json())
    listed = await sage_client.get("/sales_invoices")
    assert listed.json()["$total"] == 1


async def test_failed_attempt_is_not_remembered_by_idempotency(
    sage_client: httpx.AsyncClient,
) -> None:
    key = "0f" * 16
    bad = await sage_client.post(
        "/sales_invoices", json=invoice_body(idempotency_id=key, contact_id="0" * 32)
    )
    good = await sage_client.post("/sales_invoices", json=invoice_body(idempotency_id=key))
    assert (bad.status_code, good.status_code) == (404, 201)


async def test_idempotency_for_contacts(sage_client: httpx.AsyncClient) -> None:
    body = {
        "contact": {"name": "Ada", "contact_type_ids": ["CUSTOMER"], "idempotency_id": "1" * 32}
    }
    first, again = [await sage_client.post("/contacts", json=body) for _ in range(2)]
    assert again.json() == first.json()
    assert (await sage_client.get("/contacts", params={"search": "ada"})).json()["$total"] == 1


async def test_list_filters(sage_client: httpx.AsyncClient, clock: FakeClock) -> None:
    early = await _create(sage_client, reference="KOMMO-LEAD-3000001")
    clock.advance(3600)
    late = await _create(sage_client, reference="KOMMO-LEAD-3000002")

    async def ids(**params: str) -> list[str]:
        response = await sage_client.get("/sales_invoices", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["$items"]]

    assert await ids(updated_or_created_since="2024-05-01T10:00:00Z") == [late["id"]]
    assert await ids(updated_or_created_since="2024-05-01T11:00:00+01:00") == [late["id"]]
    assert await ids(updated_or_created_since="2024-05-01T10:00:01+00:00") == []
    assert await ids(search="lead-3000001") == [early["id"]]
    assert await ids(search="grace") == [early["id"], late["id"]]
    assert await ids(status_id="PAID") == []
    assert await ids(contact_id=SAGE_GRACE_CONTACT, sort="created_at:desc") == [
        late["id"],
        early["id"],
    ]


async def test_list_items_per_page_and_attributes(sage_client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await _create(sage_client)

    page = await sage_client.get(
        "/sales_invoices", params={"items_per_page": 2, "attributes": "status,total_amount"}
    )

    assert (
        page.json()["$next"]
        == "/sales_invoices?attributes=status%2Ctotal_amount&page=2&items_per_page=2"
    )
    assert set(page.json()["$items"][0]) == {
        "id",
        "displayed_as",
        "$path",
        "status",
        "total_amount",
    }


async def test_void_requires_a_reason_and_sets_void(
    sage_client: httpx.AsyncClient, clock: FakeClock
) -> None:
    invoice = await _create(sage_client)
    clock.advance(60)

    refused = await sage_client.delete(f"/sales_invoices/{invoice['id']}")
    voided = await sage_client.delete(
        f"/sales_invoices/{invoice['id']}", params={"void_reason": "Deal lost"}
    )
    again = await sage_client.delete(
        f"/sales_invoices/{invoice['id']}", params={"void_reason": "Deal lost"}
    )

    assert (refused.status_code, sage_errors(refused)) == (422, [("RecordInvalid", "void_reason")])
    assert voided.status_code == 200
    body = voided.json()
    assert (body["status"]["id"], body["void_reason"], body["outstanding_amount"]) == (
        "VOID",
        "Deal lost",
        "0.0",
    )
    assert body["updated_at"] == "2024-05-01T09:01:00Z"
    assert again.status_code == 422


async def test_deleting_a_draft_removes_it_and_deleted_since_lists_it(
    sage_client: httpx.AsyncClient, clock: FakeClock
) -> None:
    draft = await _create(sage_client, status_id="DRAFT")
    clock.advance(10)

    deleted = await sage_client.delete(f"/sales_invoices/{draft['id']}")

    assert deleted.status_code == 204
    assert (await sage_client.get(f"/sales_invoices/{draft['id']}")).status_code == 404
    gone = await sage_client.get(
        "/sales_invoices", params={"deleted_since": "2024-05-01T09:00:00Z"}
    )
    assert [i["id"] for i in gone.json()["$items"]] == [draft["id"]]
    assert (await sage_client.get("/sales_invoices")).json()["$total"] == 0


async def _pay(client: httpx.AsyncClient, invoice_id: str, amount: float) -> httpx.Response:
    body = {
        "contact_payment": {
            "transaction_type_id": "CUSTOMER_RECEIPT",
            "contact_id": SAGE_GRACE_CONTACT,
            "bank_account_id": SAGE_BANK_ACCOUNT,
            "date": "2024-05-10",
            "total_amount": amount,
            "allocated_artefacts": [{"artefact_id": invoice_id, "amount": amount}],
        }
    }
    return await client.post("/contact_payments", json=body)


async def test_payments_move_status_to_part_paid_then_paid(
    sage_client: httpx.AsyncClient, clock: FakeClock
) -> None:
    invoice = await _create(sage_client)
    clock.advance(120)

    first = await _pay(sage_client, invoice["id"], 100.00)
    part = (await sage_client.get(f"/sales_invoices/{invoice['id']}")).json()
    second = await _pay(sage_client, invoice["id"], 331.96)
    paid = (await sage_client.get(f"/sales_invoices/{invoice['id']}")).json()

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["allocated_artefacts"] == [
        {
            "artefact": {
                "id": invoice["id"],
                "displayed_as": "SI-1",
                "$path": f"/sales_invoices/{invoice['id']}",
            },
            "amount": "100.0",
        }
    ]
    assert (part["status"]["id"], part["total_paid"], part["outstanding_amount"]) == (
        "PART_PAID",
        "100.0",
        "331.96",
    )
    assert part["updated_at"] == "2024-05-01T09:02:00Z"
    assert (paid["status"]["id"], paid["outstanding_amount"], paid["last_paid"]) == (
        "PAID",
        "0.0",
        "2024-05-10",
    )
    since = await sage_client.get(
        "/sales_invoices", params={"updated_or_created_since": "2024-05-01T09:02:00Z"}
    )
    assert since.json()["$total"] == 1


async def test_payment_cannot_exceed_outstanding_or_void_paid_invoice(
    sage_client: httpx.AsyncClient,
) -> None:
    invoice = await _create(sage_client)

    too_much = await _pay(sage_client, invoice["id"], 500.00)
    await _pay(sage_client, invoice["id"], 10.00)
    void = await sage_client.delete(f"/sales_invoices/{invoice['id']}", params={"void_reason": "x"})

    assert sage_errors(too_much) == [("RecordInvalid", "allocated_artefacts.0.amount")]
    assert (void.status_code, sage_errors(void)) == (422, [("RecordInvalid", "status")])


async def test_payment_schema_is_checked(sage_client: httpx.AsyncClient) -> None:
    response = await sage_client.post("/contact_payments", json={"contact_payment": {}})
    assert {source for _, source in sage_errors(response)} == {
        "transaction_type_id",
        "contact_id",
        "bank_account_id",
        "date",
        "total_amount",
    }


async def test_control_route_records_a_payment(
    sage_client: httpx.AsyncClient, sage_anonymous: httpx.AsyncClient
) -> None:
    invoice = await _create(sage_client)

    response = await sage_anonymous.post(
        f"/sandbox/sales_invoices/{invoice['id']}/payments", json={"amount": "431.96"}
    )

    assert response.status_code == 201
    assert (response.json()["status"]["id"], response.json()["outstanding_amount"]) == (
        "PAID",
        "0.0",
    )


async def test_control_route_moves_the_due_date(
    sage_client: httpx.AsyncClient, sage_anonymous: httpx.AsyncClient
) -> None:
    invoice = await _create(sage_client)
    response = await sage_anonymous.patch(
        f"/sandbox/sales_invoices/{invoice['id']}", json={"due_date": "2024-04-01"}
    )
    assert response.json()["due_date"] == "2024-04-01"
