"""Kommo reads: HAL shapes, 204 for nothing, paging, filters, contacts, catalogs, pipelines."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from sandbox.seed import (
    CATALOG_INVOICES,
    CATALOG_PRODUCTS,
    CATALOG_REGULAR,
    CONTACT_ADA,
    ELEMENT_COURIER,
    ELEMENT_INVOICE,
    ELEMENT_MYSTERY,
    ELEMENT_WIDGET,
    FIELD_WHOLESALE_PRICE,
    LEAD_SAMPLE,
    LEAD_SECOND,
    LEAD_UNMAPPED,
    LEAD_WHOLESALE,
    PIPELINE_SALES,
    STATUS_NEGOTIATION,
)
from tests.sandbox.helpers import KOMMO_BASE, START

NOW = int(START.timestamp())
API = f"{KOMMO_BASE}/api/v4"


async def test_lead_with_contacts_and_catalog_elements(kommo_client: httpx.AsyncClient) -> None:
    response = await kommo_client.get(
        f"/api/v4/leads/{LEAD_SAMPLE}", params={"with": "contacts,catalog_elements"}
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/hal+json"
    assert response.json() == {
        "id": LEAD_SAMPLE,
        "name": "Sample deal",
        "price": 360,
        "responsible_user_id": 9000001,
        "group_id": 0,
        "status_id": STATUS_NEGOTIATION,
        "pipeline_id": PIPELINE_SALES,
        "loss_reason_id": None,
        "created_by": 9000001,
        "updated_by": 9000001,
        "created_at": NOW,
        "updated_at": NOW,
        "closed_at": None,
        "closest_task_at": None,
        "is_deleted": False,
        "custom_fields_values": None,
        "score": None,
        "account_id": 31000001,
        "_links": {"self": {"href": f"{API}/leads/{LEAD_SAMPLE}"}},
        "_embedded": {
            "tags": [],
            "companies": [],
            "contacts": [
                {
                    "id": CONTACT_ADA,
                    "is_main": True,
                    "_links": {"self": {"href": f"{API}/contacts/{CONTACT_ADA}"}},
                }
            ],
            "catalog_elements": [
                {
                    "id": 4200001,
                    "metadata": {"quantity": 2.5, "catalog_id": 4000001, "price_id": 4100001},
                },
                {
                    "id": 4200002,
                    "metadata": {"quantity": 3, "catalog_id": 4000001, "price_id": 4100001},
                },
            ],
        },
    }


async def test_links_without_price_id_and_without_with(kommo_client: httpx.AsyncClient) -> None:
    linked = await kommo_client.get(f"/api/v4/leads/{LEAD_UNMAPPED}?with=catalog_elements")
    plain = await kommo_client.get(f"/api/v4/leads/{LEAD_UNMAPPED}")

    assert linked.json()["_embedded"]["catalog_elements"] == [
        {"id": ELEMENT_WIDGET, "metadata": {"quantity": 1, "catalog_id": CATALOG_PRODUCTS}},
        {"id": ELEMENT_MYSTERY, "metadata": {"quantity": 2, "catalog_id": CATALOG_PRODUCTS}},
    ]
    assert plain.json()["_embedded"] == {"tags": [], "companies": []}


async def test_the_wholesale_deal_and_the_accounts_currency(
    kommo_client: httpx.AsyncClient,
) -> None:
    lead = await kommo_client.get(f"/api/v4/leads/{LEAD_WHOLESALE}?with=catalog_elements")
    account = await kommo_client.get("/api/v4/account")

    assert lead.json()["_embedded"]["catalog_elements"] == [
        {
            "id": ELEMENT_WIDGET,
            "metadata": {
                "quantity": 10,
                "catalog_id": CATALOG_PRODUCTS,
                "price_id": FIELD_WHOLESALE_PRICE,
            },
        },
        {"id": ELEMENT_INVOICE, "metadata": {"quantity": 1, "catalog_id": CATALOG_INVOICES}},
        {"id": ELEMENT_COURIER, "metadata": {"quantity": 1, "catalog_id": CATALOG_REGULAR}},
    ]
    assert (account.json()["currency"], account.json()["currency_symbol"]) == ("GBP", "£")


async def test_unknown_lead_is_204_with_no_body(kommo_client: httpx.AsyncClient) -> None:
    response = await kommo_client.get("/api/v4/leads/42")
    assert (response.status_code, response.content) == (204, b"")


async def test_no_token_is_401_problem_json(kommo_anonymous: httpx.AsyncClient) -> None:
    response = await kommo_anonymous.get("/api/v4/leads")

    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == {
        "title": "Unauthorized",
        "type": "https://httpstatus.es/401",
        "status": 401,
        "detail": "Authorization required",
    }


async def test_leads_paging_with_next_link_and_204_past_the_end(
    kommo_client: httpx.AsyncClient,
) -> None:
    first = await kommo_client.get("/api/v4/leads", params={"limit": 2})
    second = await kommo_client.get(first.json()["_links"]["next"]["href"])
    third = await kommo_client.get("/api/v4/leads", params={"limit": 2, "page": 3})

    assert first.json()["_page"] == 1
    assert first.json()["_links"] == {
        "self": {"href": f"{API}/leads?page=1&limit=2"},
        "next": {"href": f"{API}/leads?page=2&limit=2"},
    }
    assert [lead["id"] for lead in first.json()["_embedded"]["leads"]] == [LEAD_SAMPLE, LEAD_SECOND]
    assert [lead["id"] for lead in second.json()["_embedded"]["leads"]] == [
        LEAD_UNMAPPED,
        LEAD_WHOLESALE,
    ]
    assert second.json()["_links"] == {
        "self": {"href": f"{API}/leads?page=2&limit=2"},
        "first": {"href": f"{API}/leads?page=1&limit=2"},
        "prev": {"href": f"{API}/leads?page=1&limit=2"},
    }
    assert third.status_code == 204


async def test_limit_above_250_falls_back_to_the_default(kommo_client: httpx.AsyncClient) -> None:
    response = await kommo_client.get("/api/v4/leads", params={"limit": 500})
    assert response.json()["_links"]["self"]["href"].endswith("limit=50")


async def test_leads_filters(kommo_client: httpx.AsyncClient) -> None:
    async def ids(params: Mapping[str, str | int]) -> list[int] | int:
        response = await kommo_client.get("/api/v4/leads", params=params)
        if response.status_code == 204:
            return 204
        return [lead["id"] for lead in response.json()["_embedded"]["leads"]]

    in_stage = {
        "filter[statuses][0][pipeline_id]": PIPELINE_SALES,
        "filter[statuses][0][status_id]": STATUS_NEGOTIATION,
    }
    everyone = [LEAD_SAMPLE, LEAD_SECOND, LEAD_UNMAPPED, LEAD_WHOLESALE]
    assert await ids(in_stage) == everyone
    assert await ids({**in_stage, "filter[statuses][0][status_id]": 142}) == 204
    assert await ids({"filter[updated_at][from]": NOW}) == everyone
    assert await ids({"filter[updated_at][from]": NOW + 1}) == 204
    assert await ids({"filter[id][]": LEAD_SECOND}) == [LEAD_SECOND]


async def test_contact_email_and_phone_multitext(kommo_client: httpx.AsyncClient) -> None:
    response = await kommo_client.get(f"/api/v4/contacts/{CONTACT_ADA}")

    assert response.json()["custom_fields_values"] == [
        {
            "field_id": 6100002,
            "field_name": "Email",
            "field_code": "EMAIL",
            "field_type": "multitext",
            "values": [{"value": "ada@example.com", "enum_id": 6100201, "enum_code": "WORK"}],
        },
        {
            "field_id": 6100001,
            "field_name": "Phone",
            "field_code": "PHONE",
            "field_type": "multitext",
            "values": [{"value": "+441234567890", "enum_id": 6100101, "enum_code": "WORK"}],
        },
    ]
    assert (await kommo_client.get("/api/v4/contacts/1")).status_code == 204


async def test_catalog_fields_and_elements(kommo_client: httpx.AsyncClient) -> None:
    catalogs = await kommo_client.get("/api/v4/catalogs")
    fields = await kommo_client.get(f"/api/v4/catalogs/{CATALOG_PRODUCTS}/custom_fields")
    some = await kommo_client.get(
        f"/api/v4/catalogs/{CATALOG_PRODUCTS}/elements",
        params=[("filter[id][]", "4200002"), ("filter[id][]", "4200004")],
    )
    widget = await kommo_client.get(
        f"/api/v4/catalogs/{CATALOG_PRODUCTS}/elements/{ELEMENT_WIDGET}"
    )

    assert [(c["id"], c["name"], c["type"]) for c in catalogs.json()["_embedded"]["catalogs"]] == [
        (4000001, "Products", "products"),
        (4000002, "Invoices", "invoices"),
        (4000003, "Delivery options", "regular"),
    ]
    assert [
        (f["id"], f["code"], f["type"]) for f in fields.json()["_embedded"]["custom_fields"]
    ] == [
        (4100001, "PRICE", "price"),
        (4100002, "SKU", "text"),
        (4100003, "TYPE", "text"),
        (4100004, None, "price"),
    ]
    assert [(e["name"], e["is_deleted"]) for e in some.json()["_embedded"]["elements"]] == [
        ("Widget", None),
        ("Mystery box", False),
    ]
    # Custom field values are strings, as in Kommo's own element examples (PRICE "12").
    assert widget.json()["custom_fields_values"] == [
        {
            "field_id": 4100001,
            "field_name": "Price",
            "field_code": "PRICE",
            "field_type": "price",
            "values": [{"value": "19.99"}],
        },
        {
            "field_id": 4100002,
            "field_name": "SKU",
            "field_code": "SKU",
            "field_type": "text",
            "values": [{"value": "WID-01"}],
        },
        {
            "field_id": 4100003,
            "field_name": "Type",
            "field_code": "TYPE",
            "field_type": "text",
            "values": [{"value": "goods"}],
        },
        {
            "field_id": 4100004,
            "field_name": "Wholesale price",
            "field_code": None,
            "field_type": "price",
            "values": [{"value": "15.50"}],
        },
    ]
    missing = await kommo_client.get(f"/api/v4/catalogs/{CATALOG_PRODUCTS}/elements/1")
    assert missing.status_code == 204


async def test_pipelines_statuses_and_lead_fields(kommo_client: httpx.AsyncClient) -> None:
    pipelines = await kommo_client.get("/api/v4/leads/pipelines")
    statuses = await kommo_client.get(f"/api/v4/leads/pipelines/{PIPELINE_SALES}/statuses")
    fields = await kommo_client.get("/api/v4/leads/custom_fields")

    pipeline = pipelines.json()["_embedded"]["pipelines"][0]
    assert (pipeline["id"], pipeline["name"], pipeline["is_main"]) == (
        PIPELINE_SALES,
        "Sales",
        True,
    )
    assert [(s["id"], s["name"]) for s in statuses.json()["_embedded"]["statuses"]] == [
        (7100001, "New lead"),
        (7100002, "Negotiation"),
        (7100003, "Raise Invoice"),
        (142, "Closed - won"),
        (143, "Closed - lost"),
    ]
    by_id = {f["id"]: f for f in fields.json()["_embedded"]["custom_fields"]}
    assert [(f["name"], f["type"]) for f in by_id.values()] == [
        ("Invoice number", "text"),
        ("Invoice link", "url"),
        ("Payment status", "select"),
        ("Amount paid", "numeric"),
        ("Amount outstanding", "numeric"),
        ("Last payment", "date"),
        ("Credit notes", "text"),
        ("Amount credited", "numeric"),
    ]
    assert by_id[6000003]["enums"] == [
        {"id": 6000101, "value": "Unpaid", "sort": 10},
        {"id": 6000102, "value": "Part paid", "sort": 20},
        {"id": 6000103, "value": "Paid", "sort": 30},
        {"id": 6000104, "value": "Overdue", "sort": 40},
        {"id": 6000105, "value": "Void", "sort": 50},
        {"id": 6000106, "value": "Credited", "sort": 60},
    ]


async def test_account(kommo_client: httpx.AsyncClient) -> None:
    account = (await kommo_client.get("/api/v4/account")).json()
    assert (account["id"], account["subdomain"]) == (31000001, "sandbox")


async def test_unknown_api_path_is_problem_json(kommo_client: httpx.AsyncClient) -> None:
    response = await kommo_client.get("/api/v4/nothing")
    assert (response.status_code, response.headers["content-type"]) == (
        404,
        "application/problem+json",
    )
