"""The sandbox Kommo answers in the shapes Kommo's docs publish (tests/contracts/kommo/): the same
keys at every level and the same JSON types, nulls only where the docs allow them. Where the
two disagree, the documented answer wins and the sandbox is what changes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sandbox.kommo import KommoSandbox
from sandbox.seed import (
    CATALOG_INVOICES,
    CATALOG_PRODUCTS,
    CATALOG_REGULAR,
    CONTACT_ADA,
    ELEMENT_WIDGET,
    FIELD_INVOICE_NUMBER,
    LEAD_SAMPLE,
    LEAD_SECOND,
    LEAD_WHOLESALE,
    PIPELINE_SALES,
    STATUS_NEGOTIATION,
    register_webhook,
)
from tests.contracts.kommo.shapes import load, shape_problems

IN_STAGE = (
    f"filter[statuses][0][pipeline_id]={PIPELINE_SALES}"
    f"&filter[statuses][0][status_id]={STATUS_NEGOTIATION}&filter[updated_at][from]=0"
)
WRITE = {"custom_fields_values": [{"field_id": FIELD_INVOICE_NUMBER, "values": [{"value": "1"}]}]}
# (fixture, method, path and query, JSON body): what the bridge sends, asked of the sandbox.
REQUESTS: list[tuple[str, str, str, Any]] = [
    ("lead_get.json", "GET", f"/leads/{LEAD_SAMPLE}?with=contacts,catalog_elements", None),
    ("lead_get.json", "GET", f"/leads/{LEAD_WHOLESALE}?with=contacts,catalog_elements", None),
    ("leads_list.json", "GET", f"/leads?{IN_STAGE}&page=1&limit=2", None),
    ("leads_list.json", "GET", f"/leads?{IN_STAGE}&page=2&limit=2", None),
    ("leads_list.json", "GET", f"/leads?filter[id][]={LEAD_SAMPLE}&limit=250", None),
    ("pipeline_get.json", "GET", f"/leads/pipelines/{PIPELINE_SALES}", None),
    ("lead_patch_one.json", "PATCH", f"/leads/{LEAD_SAMPLE}", WRITE),
    ("leads_patch.json", "PATCH", "/leads", [{"id": LEAD_SECOND, **WRITE}]),
    # The coalesced reads and write-backs of concurrent jobs (app/clients/kommo/coalesce.py).
    (
        "leads_list.json",
        "GET",
        f"/leads?filter[id][]={LEAD_SAMPLE}&filter[id][]={LEAD_SECOND}&limit=250",
        None,
    ),
    (
        "leads_patch.json",
        "PATCH",
        "/leads",
        [{"id": LEAD_SAMPLE, **WRITE}, {"id": LEAD_SECOND, **WRITE}],
    ),
    ("contact_get.json", "GET", f"/contacts/{CONTACT_ADA}", None),
    ("catalogs_list.json", "GET", "/catalogs?limit=250", None),
    ("catalog_elements_list.json", "GET", f"/catalogs/{CATALOG_PRODUCTS}/elements?page=1", None),
    ("catalog_elements_list.json", "GET", f"/catalogs/{CATALOG_INVOICES}/elements", None),
    ("catalog_elements_list.json", "GET", f"/catalogs/{CATALOG_REGULAR}/elements", None),
    (
        "catalog_elements_filtered.json",
        "GET",
        f"/catalogs/{CATALOG_PRODUCTS}/elements?filter[id][]={ELEMENT_WIDGET}&limit=250",
        None,
    ),
    ("tasks_post.json", "POST", "/tasks", [{"text": "t", "complete_till": 1}]),
    ("webhooks_list.json", "GET", "/webhooks", None),
    ("account_get.json", "GET", "/account", None),
    (
        "error_400_validation.json",
        "PATCH",
        f"/leads/{LEAD_SAMPLE}",
        {"custom_fields_values": [{"field_id": 1, "values": [{"value": "x"}]}]},
    ),
]


@pytest.mark.parametrize(
    ("name", "method", "target", "body"), REQUESTS, ids=[f"{r[0]} {r[2]}" for r in REQUESTS]
)
async def test_sandbox_answers_in_the_documented_shape(
    kommo: KommoSandbox,
    kommo_client: httpx.AsyncClient,
    name: str,
    method: str,
    target: str,
    body: Any,
) -> None:
    register_webhook(kommo.state, "https://bridge.example/webhooks/kommo/s3cret")
    fixture = load(name)

    response = await kommo_client.request(method, f"/api/v4{target}", json=body)

    assert response.status_code == fixture.status
    assert shape_problems(fixture, response.json()) == []


async def test_task_edits_and_reads_answer_in_the_documented_shape(
    kommo_client: httpx.AsyncClient,
) -> None:
    """The documented edit batch and completion, applied to two tasks the sandbox holds, then
    one of them read back: each answer in the shape of tasks_patch.json and task_get.json."""
    patch, read = load("tasks_patch.json"), load("task_get.json")
    opened = await kommo_client.post(
        "/api/v4/tasks",
        json=[
            {
                "text": f"Task {i}",
                "complete_till": 1,
                "entity_type": "leads",
                "entity_id": LEAD_SAMPLE,
            }
            for i in (1, 2)
        ],
    )
    ids = [task["id"] for task in opened.json()["_embedded"]["tasks"]]
    edits = [{**edit, "id": i} for edit, i in zip(patch.request_bodies["edit"], ids, strict=True)]

    edited = await kommo_client.patch("/api/v4/tasks", json=edits)
    completed = await kommo_client.patch(
        "/api/v4/tasks", json=[{**patch.request_bodies["complete"], "id": ids[0]}]
    )
    task = await kommo_client.get(f"/api/v4/tasks/{ids[0]}")

    assert (edited.status_code, completed.status_code) == (patch.status, patch.status)
    assert shape_problems(patch, edited.json()) == []
    assert shape_problems(patch, completed.json()) == []
    assert task.status_code == read.status
    assert shape_problems(read, task.json()) == []
    first = patch.request_bodies["edit"][0]
    assert {key: task.json()[key] for key in (*first, "is_completed", "result")} == {
        **first,
        "id": ids[0],
        "is_completed": True,
        "result": patch.request_bodies["complete"]["result"],
    }


async def test_token_answers_in_the_documented_shape(kommo_anonymous: httpx.AsyncClient) -> None:
    code = await kommo_anonymous.post("/sandbox/oauth/codes", json={})
    grant = {
        "client_id": "sandbox-kommo-client",
        "client_secret": "sandbox-kommo-secret",
        "redirect_uri": "https://bridge.example/cb",
    }
    token = await kommo_anonymous.post(
        "/oauth2/access_token",
        json={**grant, "grant_type": "authorization_code", "code": code.json()["code"]},
    )
    refresh = {
        **grant,
        "grant_type": "refresh_token",
        "refresh_token": token.json()["refresh_token"],
    }
    await kommo_anonymous.post("/oauth2/access_token", json=refresh)
    revoked = await kommo_anonymous.post("/oauth2/access_token", json=refresh)

    assert shape_problems(load("oauth_token.json"), token.json()) == []
    assert revoked.status_code == 401
    assert shape_problems(load("error_401_revoked.json"), revoked.json()) == []


async def test_nothing_found_is_204_without_a_body(kommo_client: httpx.AsyncClient) -> None:
    missing = await kommo_client.get("/api/v4/leads/1?with=contacts,catalog_elements")
    assert (missing.status_code, missing.content) == (load("empty_204.json").status, b"")


def test_the_shape_check_catches_drift() -> None:
    """The comparison itself: an invented key, a lost key, a changed type and an unexpected
    null are each reported."""
    fixture = load("catalog_elements_filtered.json")
    element = dict(fixture.body["_embedded"]["elements"][0])
    element.pop("account_id")
    element["invented"] = 1
    element["name"] = 5
    element["id"] = None

    problems = shape_problems(fixture, {**fixture.body, "_embedded": {"elements": [element]}})

    assert problems == [
        "_embedded.elements[].invented: not in the documented answer",
        "_embedded.elements[].account_id: missing (the documented answer has it)",
        "_embedded.elements[].id: null where the docs show ['number']",
        "_embedded.elements[].name: number where the docs show ['string']",
    ]
