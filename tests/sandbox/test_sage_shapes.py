"""The sandbox Sage answers in the shapes Sage documents (tests/contracts/sage/*.json): every key
of a fixture is in the sandbox's answer with the same JSON type; the sandbox may answer null only
where the fixture has null; list envelopes have exactly the fixture's keys (so `$itemsPerPage`
and `$items_per_page` are spelt as Sage spells them); an empty list matches any list. Where they
disagree the fixture wins: change the sandbox, not the fixture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox.seed import SAGE_GRACE_CONTACT
from tests.sandbox.helpers import invoice_body

FIXTURES = Path(__file__).resolve().parent.parent / "contracts" / "sage"
INVOICE_ATTRIBUTES = (
    "invoice_number,reference,date,due_date,net_amount,tax_amount,total_amount,currency,"
    "status,links"
)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())["body"]


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    if expected is None:
        return []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path or 'body'}: {type(actual).__name__}, expected an object"]
        if "$items" in expected and set(expected) != set(actual):
            return [f"{path or 'body'}: envelope keys {sorted(actual)} != {sorted(expected)}"]
        missing = [f"{path}.{key}: missing" for key in expected if key not in actual]
        nested = [
            problem
            for key in expected
            if key in actual
            for problem in differences(expected[key], actual[key], f"{path}.{key}")
        ]
        return missing + nested
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: {type(actual).__name__}, expected a list"]
        if not expected:
            return []
        return [p for item in actual for p in differences(expected[0], item, f"{path}[]")]
    if type(actual) is not type(expected):
        return [f"{path}: {type(actual).__name__} {actual!r}, expected {type(expected).__name__}"]
    return []


def test_the_comparison_catches_a_wrong_type_a_null_and_a_missing_key() -> None:
    expected = {"a": "1.0", "b": {"id": "X"}, "c": None, "d": [{"e": 1}]}
    actual = {"a": 1.0, "b": None, "c": 5, "d": [{"e": "1"}]}

    assert differences(expected, actual) == [
        ".a: float 1.0, expected str",
        ".b: NoneType, expected an object",
        ".d[].e: str '1', expected int",
    ]
    assert differences({"x": 1}, {}) == [".x: missing"]


async def _invoice(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post("/sales_invoices", json=invoice_body(notes="Deal", **overrides))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_created_and_listed_invoices_have_sages_shape(
    sage_client: httpx.AsyncClient,
) -> None:
    created = await _invoice(sage_client)
    by_reference = await sage_client.get(
        "/sales_invoices",
        params={"search": "KOMMO-LEAD-3000002", "attributes": INVOICE_ATTRIBUTES},
    )
    changed = await sage_client.get(
        "/sales_invoices",
        params={
            "updated_or_created_since": "2024-01-01T00:00:00+00:00",
            "attributes": "all",
            "sort": "updated_at",
            "items_per_page": 200,
        },
    )

    assert differences(fixture("sales_invoice_created.json"), created) == []
    assert differences(fixture("sales_invoices_by_reference.json"), by_reference.json()) == []
    assert differences(fixture("sales_invoices_changed.json"), changed.json()) == []


async def test_deleted_invoices_have_sages_shape(sage_client: httpx.AsyncClient) -> None:
    draft = await _invoice(sage_client, status_id="DRAFT")
    assert (await sage_client.delete(f"/sales_invoices/{draft['id']}")).status_code == 204

    deleted = await sage_client.get(
        "/sales_invoices",
        params={"deleted_since": "2024-01-01T00:00:00+00:00", "attributes": "all"},
    )

    assert [item["id"] for item in deleted.json()["$items"]] == [draft["id"]]
    assert differences(fixture("sales_invoices_deleted.json"), deleted.json()) == []


async def test_contacts_have_sages_shape(sage_client: httpx.AsyncClient) -> None:
    created = await sage_client.post(
        "/contacts",
        json={
            "contact": {
                "name": "Great Example Inc",
                "contact_type_ids": ["CUSTOMER"],
                "credit_days": 15,
                "main_contact_person": {"name": "Pat", "email": "person@greatexample.inc"},
            }
        },
    )
    found = await sage_client.get(
        "/contacts",
        params={
            "email": "person@greatexample.inc",
            "attributes": "contact_types,email,main_contact_person,currency,credit_days",
        },
    )

    assert differences(fixture("contact_created.json"), created.json()) == []
    assert differences(fixture("contacts_by_email.json"), found.json()) == []
    assert found.json()["$items"][0]["currency"]["id"] == "GBP"


@pytest.mark.parametrize(
    ("name", "path", "params"),
    [
        ("artefact_statuses.json", "/artefact_statuses", {}),
        ("ledger_accounts_sales.json", "/ledger_accounts", {"visible_in": "sales"}),
        ("tax_rates.json", "/tax_rates", {"attributes": "name,percentage"}),
        ("financial_settings.json", "/financial_settings", {}),
        ("businesses.json", "/businesses", {}),
    ],
)
async def test_reference_data_has_sages_shape(
    sage_client: httpx.AsyncClient, name: str, path: str, params: dict[str, str]
) -> None:
    response = await sage_client.get(path, params=params)

    assert response.status_code == 200
    assert differences(fixture(name), response.json()) == []


@pytest.mark.parametrize(
    ("name", "request_"),
    [
        ("error_401.json", ("GET", "/contacts", {"Authorization": "Bearer wrong"})),
        ("error_404.json", ("GET", f"/contacts/{'0' * 32}", {})),
        ("error_422.json", ("POST", "/sales_invoices", {})),
    ],
)
async def test_errors_have_sages_shape(
    sage_client: httpx.AsyncClient, name: str, request_: tuple[str, str, dict[str, str]]
) -> None:
    method, path, headers = request_
    body = invoice_body(contact_id=SAGE_GRACE_CONTACT, date="2024-13-45")
    response = await sage_client.request(
        method, path, headers=headers, json=body if method == "POST" else None
    )

    assert response.status_code == json.loads((FIXTURES / name).read_text())["status"]
    assert differences(fixture(name), response.json()) == []


async def _credited(client: httpx.AsyncClient) -> tuple[dict[str, Any], httpx.Response]:
    """An invoice, a standalone credit note and their allocation, as the bridge makes them."""
    invoice = await _invoice(client)
    note = await client.post(
        "/sales_credit_notes",
        json={
            "sales_credit_note": {
                "contact_id": invoice["contact"]["id"],
                "date": "2024-05-02",
                "original_invoice_date": invoice["date"],
                "reference": f"{invoice['reference']}-CN",
                "notes": "Deal changed",
                "credit_note_lines": invoice_body()["sales_invoice"]["invoice_lines"],
            }
        },
    )
    assert note.status_code == 201, note.text
    request = json.loads((FIXTURES / "contact_allocation_created.json").read_text())
    body = request["request_body"]
    body["contact_allocation"]["contact_id"] = invoice["contact"]["id"]
    sides = body["contact_allocation"]["allocated_artefacts"]
    sides[0].update(artefact_id=invoice["id"], amount=invoice["total_amount"])
    sides[1].update(artefact_id=note.json()["id"], amount=f"-{invoice['total_amount']}")
    allocation = await client.post("/contact_allocations", json=body)
    assert allocation.status_code == 201, allocation.text
    return note.json(), allocation


async def test_credit_notes_and_allocations_have_sages_shape(
    sage_client: httpx.AsyncClient,
) -> None:
    note, allocation = await _credited(sage_client)
    listed = await sage_client.get(
        "/sales_credit_notes",
        params={
            "search": note["reference"],
            "attributes": "credit_note_number,reference,total_amount,outstanding_amount,status,"
            "contact",
        },
    )

    assert differences(fixture("sales_credit_note_created.json"), note) == []
    assert differences(fixture("sales_credit_notes_by_reference.json"), listed.json()) == []
    assert differences(fixture("contact_allocation_created.json"), allocation.json()) == []


async def test_payments_and_allocations_on_an_invoice_have_sages_shape(
    sage_client: httpx.AsyncClient, sage_anonymous: httpx.AsyncClient
) -> None:
    invoice = await _invoice(sage_client)
    base = f"/sandbox/sales_invoices/{invoice['id']}"
    await sage_anonymous.post(f"{base}/payments", json={"amount": "100", "reference": "Cheque"})
    await sage_anonymous.post(f"{base}/credit_notes", json={"amount": "50"})

    read = (await sage_client.get(f"/sales_invoices/{invoice['id']}")).json()

    documented = fixture("sales_invoice_part_paid_and_credited.json")
    by_type = {item["type"]: item for item in documented.pop("payments_allocations")}
    entries = read.pop("payments_allocations")
    assert differences(documented, read) == []
    assert [entry["type"] for entry in entries] == ["CUSTOMER_RECEIPT", "CUSTOMER_ALLOCATION"]
    for entry in entries:
        assert set(entry) == set(by_type[entry["type"]])
        assert differences(by_type[entry["type"]], entry) == []


async def test_a_voided_invoice_has_sages_shape(sage_client: httpx.AsyncClient) -> None:
    invoice = await _invoice(sage_client)

    voided = await sage_client.delete(
        f"/sales_invoices/{invoice['id']}", params={"void_reason": "Deal lost"}
    )

    assert voided.status_code == 200
    assert differences(fixture("sales_invoice_voided.json"), voided.json()) == []
