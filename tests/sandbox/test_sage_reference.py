"""Sage reads: businesses, X-Business, the $items envelope, paging, attributes, filters."""

from __future__ import annotations

import httpx

from sandbox.sage import SageSandbox
from sandbox.sage.models import Business
from sandbox.seed import (
    LEDGER_SALES_A,
    LEDGER_SERVICES,
    LEDGER_SUBSCRIPTIONS,
    SAGE_BUSINESS_ID,
    SAGE_GRACE_CONTACT,
)
from tests.sandbox.helpers import START, sage_errors

OTHER_BUSINESS = "0123456789abcdef0123456789abcdef"


async def test_businesses_lists_the_lead_business(sage_client: httpx.AsyncClient) -> None:
    response = await sage_client.get("/businesses")

    assert response.status_code == 200
    assert response.json() == {
        "$total": 1,
        "$page": 1,
        "$next": None,
        "$back": None,
        "$items_per_page": 2147483647,
        "$items": [
            {
                "id": SAGE_BUSINESS_ID,
                "displayed_as": "Sandbox Trading Ltd",
                "$path": f"/businesses/{SAGE_BUSINESS_ID}",
            }
        ],
    }


async def test_x_business_selects_the_book(
    sage_client: httpx.AsyncClient, sage: SageSandbox
) -> None:
    sage.state.add_business(Business(OTHER_BUSINESS, "Second Ltd", "GBP", "GB", START))

    lead = await sage_client.get("/contacts")
    explicit = await sage_client.get("/contacts", headers={"X-Business": SAGE_BUSINESS_ID})
    other = await sage_client.get("/contacts", headers={"X-Business": OTHER_BUSINESS})

    assert lead.json()["$total"] == explicit.json()["$total"] == 1
    assert other.json()["$total"] == 0


async def test_x_business_unknown_is_404_and_not_granted_is_403(
    sage_client: httpx.AsyncClient, sage: SageSandbox
) -> None:
    sage.state.add_business(
        Business(OTHER_BUSINESS, "Not yours Ltd", "GBP", "GB", START), granted=False
    )

    unknown = await sage_client.get("/contacts", headers={"X-Business": "f" * 32})
    forbidden = await sage_client.get("/contacts", headers={"X-Business": OTHER_BUSINESS})

    assert unknown.status_code == 404
    assert sage_errors(unknown) == [("RecordNotFound", "X-Business")]
    assert forbidden.status_code == 403
    assert sage_errors(forbidden) == [("AccessDenied", "X-Business")]


async def test_ledger_accounts_visible_in_sales_paged(sage_client: httpx.AsyncClient) -> None:
    first = await sage_client.get(
        "/ledger_accounts", params={"visible_in": "sales", "items_per_page": 2}
    )
    assert first.json() == {
        "$total": 3,
        "$page": 1,
        "$next": "/ledger_accounts?visible_in=sales&page=2&items_per_page=2",
        "$back": None,
        "$itemsPerPage": 2,
        "$items": [
            {
                "id": LEDGER_SALES_A,
                "displayed_as": "Sales Type A (4000)",
                "$path": f"/ledger_accounts/{LEDGER_SALES_A}",
            },
            {
                "id": LEDGER_SERVICES,
                "displayed_as": "Services (4010)",
                "$path": f"/ledger_accounts/{LEDGER_SERVICES}",
            },
        ],
    }

    second = await sage_client.get(first.json()["$next"])

    assert [i["id"] for i in second.json()["$items"]] == [LEDGER_SUBSCRIPTIONS]
    assert second.json()["$next"] is None
    assert second.json()["$back"] == "/ledger_accounts?visible_in=sales&page=1&items_per_page=2"


async def test_page_past_the_end_returns_the_last_page(sage_client: httpx.AsyncClient) -> None:
    response = await sage_client.get("/tax_rates", params={"items_per_page": 2, "page": 9})
    assert (response.json()["$page"], len(response.json()["$items"])) == (3, 1)


async def test_items_per_page_is_capped_at_200(sage_client: httpx.AsyncClient) -> None:
    response = await sage_client.get("/tax_rates", params={"items_per_page": 500})
    assert response.json()["$itemsPerPage"] == 200


async def test_bad_page_parameter_is_400(sage_client: httpx.AsyncClient) -> None:
    response = await sage_client.get("/tax_rates", params={"page": "two"})
    assert (response.status_code, sage_errors(response)) == (400, [("InvalidParameter", "page")])


async def test_attributes_all_exposes_the_full_object(sage_client: httpx.AsyncClient) -> None:
    response = await sage_client.get("/ledger_accounts", params={"attributes": "all"})
    bank_charges = response.json()["$items"][3]

    assert bank_charges["nominal_code"] == 7900
    assert bank_charges["visible_in_sales"] is False
    assert bank_charges["ledger_account_type"]["id"] == "OVERHEADS"


async def test_attributes_list_adds_just_those(sage_client: httpx.AsyncClient) -> None:
    response = await sage_client.get("/tax_rates", params={"attributes": "percentage,name"})
    assert response.json()["$items"][0] == {
        "id": "GB_STANDARD",
        "displayed_as": "Standard 20.00%",
        "$path": "/tax_rates/GB_STANDARD",
        "name": "Standard",
        "percentage": "20.0",
    }


async def test_tax_rates_and_statuses(sage_client: httpx.AsyncClient) -> None:
    rates = await sage_client.get("/tax_rates")
    statuses = await sage_client.get("/artefact_statuses")

    assert [r["id"] for r in rates.json()["$items"]] == [
        "GB_STANDARD",
        "GB_LOWER",
        "GB_ZERO",
        "GB_EXEMPT",
        "GB_NO_TAX",
    ]
    assert [(s["id"], s["displayed_as"]) for s in statuses.json()["$items"]] == [
        ("DRAFT", "Draft"),
        ("UNPAID", "Unpaid"),
        ("PART_PAID", "Part Paid"),
        ("PAID", "Paid"),
        ("VOID", "Void"),
    ]


async def test_contacts_email_filter_is_exact_and_case_insensitive(
    sage_client: httpx.AsyncClient,
) -> None:
    hit = await sage_client.get("/contacts", params={"email": "Grace@Example.com"})
    miss = await sage_client.get("/contacts", params={"email": "grace@example.co"})

    assert [c["id"] for c in hit.json()["$items"]] == [SAGE_GRACE_CONTACT]
    assert miss.json()["$total"] == 0


async def test_contacts_search_and_type_filters(sage_client: httpx.AsyncClient) -> None:
    by_name = await sage_client.get("/contacts", params={"search": "hopper"})
    by_reference = await sage_client.get("/contacts", params={"search": "graceh0"})
    vendors = await sage_client.get("/contacts", params={"contact_type_id": "VENDOR"})

    assert by_name.json()["$total"] == by_reference.json()["$total"] == 1
    assert vendors.json()["$total"] == 0


async def test_create_contact_then_find_it_by_email(sage_client: httpx.AsyncClient) -> None:
    body = {
        "contact": {
            "name": "Ada Lovelace",
            "contact_type_ids": ["CUSTOMER"],
            "main_contact_person": {"name": "Ada Lovelace", "email": "ada@example.com"},
        }
    }

    created = await sage_client.post("/contacts", json=body)

    assert created.status_code == 201
    contact = created.json()
    assert (contact["reference"], contact["email"]) == ("ADALOV001", "ada@example.com")
    assert contact["contact_types"] == [
        {"id": "CUSTOMER", "displayed_as": "Customer", "$path": "/contact_types/CUSTOMER"}
    ]
    found = await sage_client.get("/contacts", params={"email": "ada@example.com"})
    assert [c["id"] for c in found.json()["$items"]] == [contact["id"]]
    single = await sage_client.get(f"/contacts/{contact['id']}")
    assert single.json() == contact


async def test_contact_validation(sage_client: httpx.AsyncClient) -> None:
    no_type = await sage_client.post("/contacts", json={"contact": {"name": "X"}})
    bad_type = await sage_client.post(
        "/contacts", json={"contact": {"name": "X", "contact_type_ids": ["FRIEND"]}}
    )
    duplicate = await sage_client.post(
        "/contacts",
        json={"contact": {"name": "X", "contact_type_ids": ["CUSTOMER"], "reference": "graceh001"}},
    )
    top_level_email = await sage_client.post(
        "/contacts",
        json={"contact": {"name": "X", "contact_type_ids": ["CUSTOMER"], "email": "x@y.z"}},
    )

    assert sage_errors(no_type) == [("RecordInvalid", "contact_type_ids")]
    assert sage_errors(bad_type) == [("RecordInvalid", "contact_type_ids")]
    assert sage_errors(duplicate) == [("RecordInvalid", "reference")]
    assert sage_errors(top_level_email) == [("RecordInvalid", "email")]
    assert {r.status_code for r in (no_type, bad_type, duplicate, top_level_email)} == {422}


async def test_unknown_ids_and_paths_are_404_with_sage_errors(
    sage_client: httpx.AsyncClient,
) -> None:
    for path in ("/contacts/" + "0" * 32, "/sales_invoices/" + "0" * 32, "/no_such_thing"):
        response = await sage_client.get(path)
        assert (response.status_code, sage_errors(response)) == (404, [("RecordNotFound", "")])


async def test_malformed_json_is_400(sage_client: httpx.AsyncClient) -> None:
    response = await sage_client.post(
        "/contacts", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert (response.status_code, sage_errors(response)) == (400, [("InvalidJSON", "")])
