"""Kommo writes: lead PATCH (single, batch, validation), tasks, the webhooks API, OAuth."""

from __future__ import annotations

from typing import Any

import httpx

from sandbox.kommo import KommoSandbox
from sandbox.seed import (
    ENUM_PAID,
    FIELD_AMOUNT_PAID,
    FIELD_INVOICE_LINK,
    FIELD_INVOICE_NUMBER,
    FIELD_LAST_PAYMENT_DATE,
    FIELD_PAYMENT_STATUS,
    LEAD_SAMPLE,
    LEAD_SECOND,
    STATUS_NEGOTIATION,
    STATUS_RAISE_INVOICE,
)
from tests.sandbox.helpers import KOMMO_BASE, START, FakeClock

API = f"{KOMMO_BASE}/api/v4"
INVOICE_FIELDS = [
    {"field_id": FIELD_INVOICE_NUMBER, "values": [{"value": "SI-1"}]},
    {"field_id": FIELD_INVOICE_LINK, "values": [{"value": "http://sage.test/sandbox/ui/x"}]},
    {"field_id": FIELD_PAYMENT_STATUS, "values": [{"enum_id": ENUM_PAID}]},
]


def _problem(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["title"], body["status"], body["detail"]) == (
        "Bad Request",
        400,
        "Request validation failed",
    )
    errors: list[dict[str, Any]] = body["validation-errors"]
    return errors


async def test_patch_one_lead_custom_fields(
    kommo_client: httpx.AsyncClient, clock: FakeClock
) -> None:
    clock.advance(30)

    response = await kommo_client.patch(
        f"/api/v4/leads/{LEAD_SAMPLE}", json={"custom_fields_values": INVOICE_FIELDS}
    )
    lead = (await kommo_client.get(f"/api/v4/leads/{LEAD_SAMPLE}")).json()

    updated = int(START.timestamp()) + 30
    assert response.json() == {
        "id": LEAD_SAMPLE,
        "updated_at": updated,
        "_links": {"self": {"href": f"{API}/leads/{LEAD_SAMPLE}"}},
    }
    assert lead["updated_at"] == updated
    assert lead["custom_fields_values"] == [
        {
            "field_id": FIELD_INVOICE_NUMBER,
            "field_name": "Invoice number",
            "field_code": None,
            "field_type": "text",
            "values": [{"value": "SI-1"}],
        },
        {
            "field_id": FIELD_INVOICE_LINK,
            "field_name": "Invoice link",
            "field_code": None,
            "field_type": "url",
            "values": [{"value": "http://sage.test/sandbox/ui/x"}],
        },
        {
            "field_id": FIELD_PAYMENT_STATUS,
            "field_name": "Payment status",
            "field_code": None,
            "field_type": "select",
            "values": [{"value": "Paid", "enum_id": ENUM_PAID, "enum_code": None}],
        },
    ]


async def test_select_by_value_and_clearing_a_field(kommo_client: httpx.AsyncClient) -> None:
    by_value = [{"field_id": FIELD_PAYMENT_STATUS, "values": [{"value": "Overdue"}]}]
    await kommo_client.patch(
        f"/api/v4/leads/{LEAD_SAMPLE}", json={"custom_fields_values": by_value}
    )
    lead = (await kommo_client.get(f"/api/v4/leads/{LEAD_SAMPLE}")).json()
    assert lead["custom_fields_values"][0]["values"][0]["enum_id"] == 6000104

    cleared = [{"field_id": FIELD_PAYMENT_STATUS, "values": None}]
    await kommo_client.patch(f"/api/v4/leads/{LEAD_SAMPLE}", json={"custom_fields_values": cleared})
    lead = (await kommo_client.get(f"/api/v4/leads/{LEAD_SAMPLE}")).json()
    assert lead["custom_fields_values"] is None


async def test_batch_patch_moves_stages_and_echoes_request_ids(
    kommo_client: httpx.AsyncClient, kommo: KommoSandbox
) -> None:
    body = [
        {"id": LEAD_SAMPLE, "status_id": STATUS_RAISE_INVOICE, "request_id": "a"},
        {"id": LEAD_SECOND, "name": "Renamed", "custom_fields_values": INVOICE_FIELDS[:1]},
    ]

    response = await kommo_client.patch("/api/v4/leads", json=body)

    assert response.status_code == 200
    assert [(i["id"], i["request_id"]) for i in response.json()["_embedded"]["leads"]] == [
        (LEAD_SAMPLE, "a"),
        (LEAD_SECOND, "1"),
    ]
    assert kommo.state.leads[LEAD_SAMPLE].status_id == STATUS_RAISE_INVOICE
    assert kommo.state.leads[LEAD_SECOND].name == "Renamed"


async def test_batch_patch_is_all_or_nothing_with_validation_errors(
    kommo_client: httpx.AsyncClient, kommo: KommoSandbox
) -> None:
    body = [
        {"id": LEAD_SAMPLE, "status_id": STATUS_RAISE_INVOICE},
        {"id": LEAD_SECOND, "custom_fields_values": [{"field_id": 1, "values": [{"value": "x"}]}]},
        {
            "id": LEAD_SECOND,
            "request_id": "bad-enum",
            "custom_fields_values": [
                {"field_id": FIELD_PAYMENT_STATUS, "values": [{"enum_id": 1}]},
                {"field_id": FIELD_INVOICE_LINK, "values": [{"value": "not a url"}]},
            ],
        },
        {"id": 42, "status_id": 999},
        {"id": LEAD_SECOND, "status_id": 999},
    ]

    errors = _problem(await kommo_client.patch("/api/v4/leads", json=body))

    assert errors == [
        {
            "request_id": "1",
            "errors": [
                {
                    "code": "NotSupportedChoice",
                    "path": "custom_fields_values.0.field_id",
                    "detail": "The value you selected is not a valid choice.",
                }
            ],
        },
        {
            "request_id": "bad-enum",
            "errors": [
                {
                    "code": "NotSupportedChoice",
                    "path": "custom_fields_values.0.values.0.enum_id",
                    "detail": "The value you selected is not a valid choice.",
                },
                {
                    "code": "InvalidValue",
                    "path": "custom_fields_values.1.values.0.value",
                    "detail": "This value is not a valid URL.",
                },
            ],
        },
        {
            "request_id": "3",
            "errors": [{"code": "NotFound", "path": "id", "detail": "Entity not found"}],
        },
        {
            "request_id": "4",
            "errors": [
                {
                    "code": "NotSupportedChoice",
                    "path": "status_id",
                    "detail": "The value you selected is not a valid choice.",
                }
            ],
        },
    ]
    assert kommo.state.leads[LEAD_SAMPLE].status_id == STATUS_NEGOTIATION


async def test_field_code_addresses_a_field(
    kommo: KommoSandbox, kommo_client: httpx.AsyncClient
) -> None:
    kommo.state.lead_fields[FIELD_INVOICE_NUMBER].code = "INVOICE_NO"
    body = {"custom_fields_values": [{"field_code": "INVOICE_NO", "values": [{"value": "SI-9"}]}]}
    await kommo_client.patch(f"/api/v4/leads/{LEAD_SAMPLE}", json=body)
    assert kommo.state.leads[LEAD_SAMPLE].fields[FIELD_INVOICE_NUMBER] == [{"value": "SI-9"}]


async def test_tasks_are_created_and_listed(kommo_client: httpx.AsyncClient) -> None:
    task = {
        "text": "Map the Mystery box to a ledger account",
        "complete_till": 1714640400,
        "entity_id": LEAD_SAMPLE,
        "entity_type": "leads",
        "responsible_user_id": 9000001,
        "task_type_id": 1,
        "request_id": "lead-3000001",
    }

    created = await kommo_client.post("/api/v4/tasks", json=[task])
    listed = await kommo_client.get(
        "/api/v4/tasks", params={"filter[entity_type]": "leads", "filter[entity_id][]": LEAD_SAMPLE}
    )
    other = await kommo_client.get("/api/v4/tasks", params={"filter[entity_id][]": LEAD_SECOND})

    assert created.status_code == 200
    assert created.json() == {
        "_links": {"self": {"href": f"{API}/tasks"}},
        "_embedded": {
            "tasks": [
                {
                    "id": 8000001,
                    "request_id": "lead-3000001",
                    "_links": {"self": {"href": f"{API}/tasks/8000001"}},
                }
            ]
        },
    }
    found = listed.json()["_embedded"]["tasks"]
    assert [(t["id"], t["text"], t["is_completed"]) for t in found] == [
        (8000001, task["text"], False)
    ]
    assert other.status_code == 204


async def test_task_validation(kommo_client: httpx.AsyncClient, kommo: KommoSandbox) -> None:
    body = [
        {"text": "ok", "complete_till": 1714640400},
        {"complete_till": "tomorrow", "entity_type": "leads", "entity_id": 1},
        {"text": " ", "task_type_id": 9},
    ]

    errors = _problem(await kommo_client.post("/api/v4/tasks", json=body))

    assert [(e["request_id"], [(x["code"], x["path"]) for x in e["errors"]]) for e in errors] == [
        (
            "1",
            [
                ("NotBlank", "text"),
                ("InvalidType", "complete_till"),
                ("NotFound", "entity_id"),
            ],
        ),
        (
            "2",
            [
                ("NotBlank", "text"),
                ("NotBlank", "complete_till"),
                ("NotSupportedChoice", "task_type_id"),
            ],
        ),
    ]
    assert kommo.state.tasks == {}


async def test_webhooks_api_subscribe_list_update_unsubscribe(
    kommo_client: httpx.AsyncClient,
) -> None:
    hook = {"destination": "https://bridge.example/webhooks/kommo/s3cret", "settings": ["add_lead"]}
    created = await kommo_client.post("/api/v4/webhooks", json=hook)
    updated = await kommo_client.post(
        "/api/v4/webhooks", json={**hook, "settings": ["status_lead"]}
    )
    listed = await kommo_client.get("/api/v4/webhooks")

    start = int(START.timestamp())
    assert created.status_code == 201
    assert updated.json() == {
        "id": 1,
        "destination": hook["destination"],
        "created_at": start,
        "updated_at": start,
        "account_id": 31000001,
        "created_by": 9000001,
        "sort": 1,
        "disabled": False,
        "settings": ["status_lead"],
    }
    assert listed.json() == {"_total_items": 1, "_embedded": {"webhooks": [updated.json()]}}
    deleted = await kommo_client.request(
        "DELETE", "/api/v4/webhooks", json={"destination": hook["destination"]}
    )
    assert deleted.status_code == 204
    assert (await kommo_client.get("/api/v4/webhooks")).status_code == 204


async def test_webhook_subscription_is_validated(kommo_client: httpx.AsyncClient) -> None:
    errors = _problem(
        await kommo_client.post(
            "/api/v4/webhooks", json={"destination": "ftp://x", "settings": ["dance"]}
        )
    )
    assert [x["path"] for x in errors[0]["errors"]] == ["destination", "settings"]


async def test_control_route_disables_a_webhook(
    kommo_client: httpx.AsyncClient, kommo_anonymous: httpx.AsyncClient
) -> None:
    hook = {"destination": "https://bridge.example/hook", "settings": ["status_lead"]}
    created = (await kommo_client.post("/api/v4/webhooks", json=hook)).json()

    disabled = await kommo_anonymous.post(f"/sandbox/webhooks/{created['id']}/disable")

    assert disabled.json()["disabled"] is True
    assert (await kommo_client.get("/api/v4/webhooks")).json()["_embedded"]["webhooks"][0][
        "disabled"
    ]


CLIENT = {"client_id": "sandbox-kommo-client", "client_secret": "sandbox-kommo-secret"}


async def test_oauth_code_exchange_and_single_use_refresh(
    kommo_anonymous: httpx.AsyncClient,
) -> None:
    code = (await kommo_anonymous.post("/sandbox/oauth/codes")).json()["code"]
    first = await kommo_anonymous.post(
        "/oauth2/access_token",
        json={
            **CLIENT,
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "https://b.example",
        },
    )
    tokens = first.json()
    refresh = {**CLIENT, "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    second = await kommo_anonymous.post("/oauth2/access_token", json=refresh)
    reused = await kommo_anonymous.post("/oauth2/access_token", json=refresh)

    assert (first.status_code, tokens["token_type"], tokens["expires_in"]) == (200, "Bearer", 86400)
    assert second.status_code == 200
    leads = await kommo_anonymous.get(
        "/api/v4/leads", headers={"Authorization": f"Bearer {second.json()['access_token']}"}
    )
    assert leads.status_code == 200
    assert reused.status_code == 401
    assert reused.headers["content-type"] == "application/problem+json"
    assert reused.json()["hint"] == "Token has been revoked"
    assert reused.json()["type"] == "https://developers.amocrm.ru/v3/errors/OAuthProblemJson"


async def test_oauth_access_token_expiry(
    kommo_anonymous: httpx.AsyncClient, clock: FakeClock
) -> None:
    code = (await kommo_anonymous.post("/sandbox/oauth/codes")).json()["code"]
    tokens = (
        await kommo_anonymous.post(
            "/oauth2/access_token",
            json={**CLIENT, "grant_type": "authorization_code", "code": code},
        )
    ).json()
    clock.advance(86400)
    response = await kommo_anonymous.get(
        "/api/v4/account", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert (response.status_code, response.json()["detail"]) == (
        401,
        "The access token has expired",
    )


async def test_numeric_and_date_fields_take_what_kommo_documents(
    kommo_client: httpx.AsyncClient,
) -> None:
    """Kommo's custom fields page: numeric values as text ("1.5"), dates as a unix timestamp
    or RFC 3339 text."""
    good = [
        {"field_id": FIELD_AMOUNT_PAID, "values": [{"value": "120.50"}]},
        {"field_id": FIELD_LAST_PAYMENT_DATE, "values": [{"value": "2024-05-03T00:00:00+00:00"}]},
    ]
    accepted = await kommo_client.patch(
        f"/api/v4/leads/{LEAD_SAMPLE}", json={"custom_fields_values": good}
    )
    refused = await kommo_client.patch(
        f"/api/v4/leads/{LEAD_SAMPLE}",
        json={
            "custom_fields_values": [
                {"field_id": FIELD_AMOUNT_PAID, "values": [{"value": "120,50"}]},
                {"field_id": FIELD_LAST_PAYMENT_DATE, "values": [{"value": "3 May"}]},
            ]
        },
    )
    lead = (await kommo_client.get(f"/api/v4/leads/{LEAD_SAMPLE}")).json()

    assert accepted.status_code == 200
    values = {f["field_id"]: f["values"] for f in lead["custom_fields_values"]}
    assert values[FIELD_AMOUNT_PAID] == [{"value": "120.50"}]
    assert values[FIELD_LAST_PAYMENT_DATE] == [{"value": 1714694400}]
    assert [e["path"] for e in _problem(refused)[0]["errors"]] == [
        "custom_fields_values.0.values.0.value",
        "custom_fields_values.1.values.0.value",
    ]
