"""Kommo's answers as its docs publish them (tests/contracts/kommo/*.json), through the bridge's
own clients: every endpoint the bridge calls, each answer as published, with every field the
docs do not promise null and then absent, with documented-but-unshown keys, and with unknown
keys everywhere. Errors come out as the error classes the worker acts on."""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx

from app.clients.kommo.adapter import KommoConfig, KommoCrm
from app.clients.kommo.client import KommoClient
from app.clients.kommo.errors import (
    KommoNotFound,
    KommoRequestError,
    KommoTransientError,
    KommoUnreadable,
)
from app.clients.kommo.schemas import (
    CustomFieldUpdate,
    FieldValueOut,
    LeadPatch,
    LeadUpdate,
    TaskPatch,
)
from app.clients.kommo.schemas import TaskCreate as Task
from app.connections.errors import InvalidGrant
from app.connections.oauth import KommoAccount, KommoOAuth, KommoOAuthConfig
from app.domain import CrmTask
from tests.contracts.kommo.shapes import Fixture, all_names, edit, load, variants

BASE = "https://example.amocrm.ru"
NOW = datetime(2025, 7, 4, 12, 0, tzinfo=UTC)
UPDATE = LeadUpdate(
    custom_fields_values=[CustomFieldUpdate(field_id=1, values=[FieldValueOut(value="SI-1")])]
)
Reader = Callable[[KommoClient], Awaitable[Any]]


@dataclass(frozen=True)
class Reads:
    """How the bridge calls the endpoint, and what it must find in the published body."""

    call: Reader
    found: Callable[[Any], Any]
    expected: Any


async def _leads_page(client: KommoClient) -> Any:
    return await client.leads_in_stages(pipeline_id=1300, status_ids=[142], updated_from=0, page=2)


def _element_summary(elements: Any) -> Any:
    return [(e.id, e.name, e.is_deleted, e.field_value("PRICE")) for e in elements]


READS: dict[str, Reads] = {
    "lead_get.json": Reads(
        lambda c: c.get_lead(lead_id=3912171),
        lambda lead: (
            lead.id,
            lead.status_id,
            lead.pipeline_id,
            [(r.id, r.is_main) for r in lead.embedded.contacts],
            [
                (r.id, r.metadata.catalog_id, r.metadata.quantity)
                for r in lead.embedded.catalog_elements
            ],
        ),
        (3912171, 143, 3104455, [(10971465, True)], [(525439, 4521, Decimal(1))]),
    ),
    "leads_list.json": Reads(
        _leads_page,
        lambda page: ([lead.id for lead in page.embedded.leads], page.links.next is not None),
        ([19619, 14460], True),
    ),
    "leads_patch.json": Reads(
        lambda c: c.update_leads(patches=[LeadPatch(id=54886, **UPDATE.model_dump())]),
        lambda result: result,
        None,
    ),
    "lead_patch_one.json": Reads(
        lambda c: c.update_lead(lead_id=54886, update=UPDATE), lambda result: result, None
    ),
    "contact_get.json": Reads(
        lambda c: c.get_contact(contact_id=3),
        lambda contact: (contact.id, contact.name, contact.field_value("PHONE")),
        (3, "Иван Иванов", "+79123"),
    ),
    "catalogs_list.json": Reads(
        lambda c: c.list_catalogs(),
        lambda lists: [(c.id, c.type) for c in lists],
        [(4589, "regular"), (4521, "products"), (4517, "invoices")],
    ),
    "catalog_elements_list.json": Reads(
        lambda c: c.catalog_elements_page(catalog_id=4521, page=1),
        lambda page: _element_summary(page.embedded.elements),
        [(525439, "Элемент", False, "12")],
    ),
    "catalog_elements_filtered.json": Reads(
        lambda c: c.get_catalog_elements(catalog_id=4521, element_ids=[525439]),
        _element_summary,
        [(525439, "Элемент", False, "12")],
    ),
    "tasks_post.json": Reads(
        lambda c: c.create_tasks(tasks=[Task(text="Check", complete_till=1, entity_id=1)]),
        lambda tasks: [t.id for t in tasks],
        [4745251],
    ),
    "task_get.json": Reads(
        lambda c: c.get_task(task_id=56981),
        lambda task: (task.id, task.is_completed, task.text),
        (56981, True, "Назначить встречу с клиентом"),
    ),
    "tasks_patch.json": Reads(
        lambda c: c.update_tasks(
            patches=[TaskPatch(id=4745251, text="New"), TaskPatch(id=4747929, text="New")]
        ),
        lambda tasks: [t.id for t in tasks],
        [4745251, 4747929],
    ),
    "webhooks_list.json": Reads(
        lambda c: c.list_webhooks(),
        lambda hooks: [(h.destination, h.disabled) for h in hooks],
        [("https://webhook-uri.com", False), ("https://api.test.ru/amoWebHook", True)],
    ),
    "account_get.json": Reads(lambda c: c.get_account(), lambda a: a.currency, "USD"),
    "pipeline_get.json": Reads(
        lambda c: c.get_pipeline(pipeline_id=3177727),
        lambda pipeline: [(s.id, s.sort) for s in pipeline.embedded.statuses],
        [(32392156, 10), (32392159, 20), (32392165, 30), (142, 10000), (143, 11000)],
    ),
}


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as mock:
        yield mock


async def answer_with(router: respx.MockRouter, fixture: Fixture, body: Any) -> None:
    router.route(method=fixture.method, url__startswith=BASE + fixture.path).mock(
        return_value=httpx.Response(fixture.status, json=body)
    )


async def call(reads: Reads) -> Any:
    async with httpx.AsyncClient(base_url=BASE) as http:
        return await reads.call(KommoClient(http))


def test_every_fixture_names_its_source_and_is_exercised() -> None:
    errors_and_oauth = {n for n in all_names() if n.startswith(("error_", "empty_", "oauth_"))}
    assert set(all_names()) == set(READS) | errors_and_oauth
    for name in all_names():
        fixture = load(name)
        assert fixture.source.count("http") >= 1, name
        assert fixture.body is not None or fixture.body_text is not None, name


# Every KommoClient call and the documented answers it is tested against.
ANSWERS_BY_CALL = {
    "get_lead": ["lead_get.json", "empty_204.json", "error_403_nginx.json"],
    "get_contact": ["contact_get.json"],
    "get_account": ["account_get.json"],
    "get_catalog_elements": ["catalog_elements_filtered.json"],
    "list_catalogs": ["catalogs_list.json"],
    "catalog_elements_page": ["catalog_elements_list.json"],
    "update_lead": ["lead_patch_one.json", "error_400_validation.json"],
    "leads_in_stages": ["leads_list.json", "empty_204.json"],
    "leads_by_ids": ["leads_list.json", "empty_204.json"],
    "get_pipeline": ["pipeline_get.json"],
    "update_leads": ["leads_patch.json"],
    "list_webhooks": ["webhooks_list.json"],
    "create_tasks": ["tasks_post.json"],
    "get_task": ["task_get.json", "empty_204.json"],
    "update_tasks": ["tasks_patch.json"],
}


def test_every_client_call_has_a_documented_answer() -> None:
    """A new KommoClient method needs a fixture of what Kommo answers it."""
    calls = {
        name
        for name, _ in inspect.getmembers(KommoClient, inspect.iscoroutinefunction)
        if not name.startswith("_")
    }
    assert set(ANSWERS_BY_CALL) == calls
    assert {n for names in ANSWERS_BY_CALL.values() for n in names} <= set(all_names())


@pytest.mark.parametrize("name", sorted(READS))
async def test_the_bridge_reads_each_documented_answer_and_its_variants(
    router: respx.MockRouter, name: str
) -> None:
    fixture, reads = load(name), READS[name]
    failures = []
    async with httpx.AsyncClient(base_url=BASE) as http:
        for variant, body in variants(fixture):
            router.routes.clear()
            await answer_with(router, fixture, body)
            try:
                result = await reads.call(KommoClient(http))
            except Exception as exc:  # collected: the assertion lists every variant that failed
                failures.append(f"{variant}: {type(exc).__name__}: {exc}")
                continue
            if variant == "as published":
                assert reads.found(result) == reads.expected
    assert failures == []


@pytest.mark.parametrize(
    ("name", "path", "detail"),
    [
        ("lead_get.json", "status_id", "Kommo lead 3912171 has no status_id"),
        ("lead_get.json", "id", "Kommo lead has no id"),
        (
            "lead_get.json",
            "_embedded.catalog_elements[].metadata",
            "Kommo lead 3912171, linked element 525439 has no metadata",
        ),
        ("leads_list.json", "_embedded.leads[].pipeline_id", "Kommo lead 19619 has no pipeline_id"),
        (
            "catalog_elements_list.json",
            "_embedded.elements[].name",
            "Kommo catalog element 525439 has no name",
        ),
        ("catalogs_list.json", "_embedded.catalogs[].id", "Kommo list has no id"),
        ("tasks_post.json", "_embedded.tasks[].id", "Kommo task has no id"),
        ("task_get.json", "is_completed", "Kommo task 56981 has no is_completed"),
        ("tasks_patch.json", "_embedded.tasks[].id", "Kommo task has no id"),
    ],
)
async def test_what_the_bridge_needs_missing_names_entity_and_field(
    router: respx.MockRouter, name: str, path: str, detail: str
) -> None:
    fixture = load(name)
    await answer_with(router, fixture, edit(fixture.body, path, lambda _: None))

    with pytest.raises(KommoUnreadable) as caught:
        await call(READS[name])

    assert caught.value.detail.startswith(f"{detail} ({fixture.method} {fixture.path})")


async def test_the_documented_validation_error_is_quoted(router: respx.MockRouter) -> None:
    fixture = load("error_400_validation.json")
    await answer_with(router, fixture, fixture.body)

    with pytest.raises(KommoRequestError) as caught:
        await call(READS["lead_patch_one.json"])

    assert not isinstance(caught.value, KommoTransientError)
    assert caught.value.detail == (
        "PATCH /api/v4/leads/54886 → 400: Request validation failed; "
        "custom_fields_values.0.field_id: The value you selected is not a valid choice. "
        "(NotSupportedChoice)"
    )


async def test_an_nginx_403_page_is_a_block_not_a_retry(router: respx.MockRouter) -> None:
    fixture = load("error_403_nginx.json")
    assert fixture.body_text is not None
    router.get(url__startswith=f"{BASE}/api/v4/leads/").mock(
        return_value=httpx.Response(
            403, text=fixture.body_text, headers={"Content-Type": "text/html"}
        )
    )

    with pytest.raises(KommoRequestError) as caught:
        await call(READS["lead_get.json"])

    assert caught.value.detail == (
        "GET /api/v4/leads/3912171 → 403: Kommo refused access (HTML 403: the account or IP "
        "may be blocked; contact Kommo)"
    )


async def test_204_means_no_such_lead_and_an_empty_list(router: respx.MockRouter) -> None:
    fixture = load("empty_204.json")
    router.get(url__startswith=f"{BASE}/api/v4/").mock(
        return_value=httpx.Response(fixture.status, content=b"")
    )

    with pytest.raises(KommoNotFound):
        await call(READS["lead_get.json"])
    page = await call(Reads(_leads_page, lambda p: p, None))
    lists = await call(READS["catalogs_list.json"])

    assert (page.embedded.leads, lists) == ([], [])


def kommo_oauth(http: httpx.AsyncClient) -> KommoOAuth:
    config = KommoOAuthConfig(
        client_id="client", client_secret="secret", redirect_uri="https://bridge/cb"
    )
    return KommoOAuth(config, http, clock=lambda: NOW)


async def test_the_documented_token_answer_and_a_revoked_refresh_token(
    router: respx.MockRouter,
) -> None:
    token, revoked = load("oauth_token.json"), load("error_401_revoked.json")
    url = f"{BASE}/oauth2/access_token"
    router.post(url).mock(
        side_effect=[
            httpx.Response(token.status, json=token.body),
            httpx.Response(revoked.status, json=revoked.body),
        ]
    )

    async with httpx.AsyncClient() as http:
        tokens = await kommo_oauth(http).refresh(refresh_token="r1", base_url=BASE)
        with pytest.raises(InvalidGrant) as caught:
            await kommo_oauth(http).refresh(refresh_token="r1", base_url=BASE)

    assert (tokens.access_token, tokens.refresh_token) == ("xxxxxx", "xxxxx")
    assert tokens.access_expires_at == NOW + timedelta(seconds=86400)
    assert "Token has been revoked" in caught.value.detail


async def test_a_401_on_an_api_call_is_retried_not_given_to_a_manager(
    router: respx.MockRouter,
) -> None:
    revoked = load("error_401_revoked.json")
    router.get(url__startswith=f"{BASE}/api/v4/").mock(
        return_value=httpx.Response(revoked.status, json=revoked.body)
    )

    with pytest.raises(KommoTransientError):
        await call(READS["lead_get.json"])


def test_the_account_answer_is_what_the_oauth_connect_flow_reads() -> None:
    account = KommoAccount.model_validate(load("account_get.json").body)
    assert (account.id, account.subdomain) == (30896271, "devteam")


async def test_a_2xx_body_that_is_not_json_is_transient(router: respx.MockRouter) -> None:
    router.get(url__startswith=f"{BASE}/api/v4/").mock(
        return_value=httpx.Response(200, text="<html>maintenance</html>")
    )

    with pytest.raises(KommoTransientError) as caught:
        await call(READS["lead_get.json"])

    assert caught.value.detail.startswith(
        "GET /api/v4/leads/3912171 answered 200 with a body that is not JSON"
    )


def kommo_crm(http: httpx.AsyncClient) -> KommoCrm:
    config = KommoConfig(
        base_url=BASE, account_id="1", invoice_number_field_id=1, invoice_link_field_id=2
    )
    return KommoCrm(KommoClient(http), config)


async def test_the_bridge_edits_and_completes_tasks_with_the_documented_request_bodies(
    router: respx.MockRouter,
) -> None:
    """Each item the bridge PATCHes has the keys and JSON types of the documented edit and
    completion examples (plus the id a batch item names its task by)."""
    fixture = load("tasks_patch.json")
    documented = fixture.request_bodies
    route = router.patch(f"{BASE}/api/v4/tasks").mock(
        return_value=httpx.Response(fixture.status, json=fixture.body)
    )

    async with httpx.AsyncClient(base_url=BASE) as http:
        crm = kommo_crm(http)
        await crm.update_task(task_id="4745251", text="Sage invoice NOT raised: …")
        await crm.complete_tasks(task_ids=["4745251", "4747929"], result="Invoiced as SI-1")

    edit_body, complete_body = (json.loads(call.request.content) for call in route.calls)
    assert edit_body == [{"id": 4745251, "text": "Sage invoice NOT raised: …"}]
    assert complete_body == [
        {"id": 4745251, "is_completed": True, "result": {"text": "Invoiced as SI-1"}},
        {"id": 4747929, "is_completed": True, "result": {"text": "Invoiced as SI-1"}},
    ]
    edit_shape = {k: type(v) for k, v in documented["edit"][0].items()}
    assert {k: type(v) for k, v in edit_body[0].items()}.items() <= edit_shape.items()
    for item in complete_body:
        assert {k: v for k, v in item.items() if k != "id"}.keys() == documented["complete"].keys()
        assert type(item["result"]["text"]) is type(documented["complete"]["result"]["text"])


async def test_the_stages_from_the_trigger_and_the_deals_still_there(
    router: respx.MockRouter,
) -> None:
    """The documented pipeline: its stages by `sort`, lost (143) left out; the documented list
    answers which leads exist, 204 when none of them does."""
    pipeline, leads = load("pipeline_get.json"), load("leads_list.json")
    router.get(f"{BASE}/api/v4/leads/pipelines/3177727").mock(
        return_value=httpx.Response(200, json=pipeline.body)
    )
    listed = router.get(f"{BASE}/api/v4/leads").mock(
        side_effect=[httpx.Response(200, json=leads.body), httpx.Response(204)]
    )

    async with httpx.AsyncClient(base_url=BASE) as http:
        crm = kommo_crm(http)
        stages = await crm.stages_from(pipeline_id="3177727", status_id="32392159")
        found = await crm.existing_deals(deal_ids=["19619", "14460", "7"])
        none = await crm.existing_deals(deal_ids=["7"])

    assert stages == ["32392159", "32392165", "142"]
    assert (found, none) == ({"19619", "14460"}, set())
    assert listed.calls[0].request.url.params.get_list("filter[id][]") == ["19619", "14460", "7"]


async def test_a_task_without_a_result_and_a_task_that_is_gone(router: respx.MockRouter) -> None:
    """The list example shows `"result": []` for a task with none; a deleted task is 204."""
    fixture = load("task_get.json")
    body = {**fixture.body, "is_completed": False, "result": []}
    router.get(f"{BASE}/api/v4/tasks/56981").mock(return_value=httpx.Response(200, json=body))
    router.get(f"{BASE}/api/v4/tasks/1").mock(return_value=httpx.Response(204))

    async with httpx.AsyncClient(base_url=BASE) as http:
        crm = kommo_crm(http)
        found = await crm.get_task(task_id="56981")
        gone = await crm.get_task(task_id="1")

    assert found == CrmTask(id="56981", text="Назначить встречу с клиентом", is_completed=False)
    assert gone is None
