"""Coalesced Kommo calls: concurrent reads and write-backs share one request, yet each caller
gets its own result or its own error (respx stands in for Kommo; the shapes are the docs')."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import httpx
import pytest
import respx
from redis.exceptions import ConnectionError as RedisConnectionError

from app.clients.kommo.client import KommoClient
from app.clients.kommo.errors import (
    KommoNotFound,
    KommoRequestError,
    KommoTransientError,
    KommoUnreadable,
)
from app.clients.kommo.schemas import CustomFieldUpdate, FieldValueOut, Lead, LeadUpdate

BASE = "https://testco.kommo.com"
T = TypeVar("T")


class Gate:
    """The rate limit's next slot, opened by the test once every caller is waiting."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def ready(self) -> None:
        await self.event.wait()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=BASE) as client:
        yield client


async def together(gate: Gate, *calls: Awaitable[T]) -> list[T | BaseException]:
    """Start every call, let them queue behind the closed gate, then open it."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    for _ in range(3):
        await asyncio.sleep(0)
    gate.event.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


def lead(lead_id: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": lead_id,
        "name": f"Deal {lead_id}",
        "status_id": 503,
        "pipeline_id": 500,
        "_embedded": {
            "contacts": [{"id": 7001, "is_main": True}],
            "catalog_elements": [{"id": 101, "metadata": {"quantity": 1, "catalog_id": 77}}],
        },
        **extra,
    }


def page(key: str, items: list[Any]) -> httpx.Response:
    return httpx.Response(200, json={"_page": 1, "_embedded": {key: items}})


def ids_of(request: httpx.Request) -> list[str]:
    return request.url.params.get_list("filter[id][]")


def update(number: str) -> LeadUpdate:
    field = CustomFieldUpdate(field_id=900, values=[FieldValueOut(value=number)])
    return LeadUpdate(custom_fields_values=[field])


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_concurrent_lead_reads_are_one_request_and_each_caller_gets_its_own_answer(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    unreadable = {"id": 3, "name": "No stage", "pipeline_id": 500}
    route = respx_mock.get("/api/v4/leads").mock(
        return_value=page("leads", [lead(1), lead(2), unreadable])
    )
    gate = Gate()
    client = KommoClient(http, ready=gate.ready)

    one, two, three, four = await together(
        gate, *(client.get_lead(lead_id=i) for i in (1, 2, 3, 4))
    )

    assert route.call_count == 1
    request = route.calls.last.request
    assert ids_of(request) == ["1", "2", "3", "4"]
    assert request.url.params["with"] == "contacts,catalog_elements"
    assert isinstance(one, Lead) and one.id == 1 and one.embedded.contacts[0].id == 7001
    assert isinstance(two, Lead) and two.id == 2
    assert isinstance(three, KommoUnreadable)
    assert three.detail == "Kommo lead 3 has no status_id (GET /api/v4/leads)"
    assert isinstance(four, KommoNotFound)  # not in the answer: that deal only is gone


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_a_lone_read_goes_out_at_once_on_the_single_lead_route(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    single = respx_mock.get("/api/v4/leads/5").mock(return_value=httpx.Response(200, json=lead(5)))
    client = KommoClient(http)

    found = await client.get_lead(lead_id=5)

    assert found.id == 5
    assert single.calls.last.request.url.params["with"] == "contacts,catalog_elements"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (503, KommoTransientError),  # a batch read that fails fails every caller in it
        (204, KommoNotFound),  # an empty batch answer: none of the deals exists
    ],
    ids=["failed batch: every caller's error", "empty batch: every deal not found"],
)
@respx.mock(base_url=BASE, assert_all_called=False)
async def test_a_batch_read_answers_each_caller_in_it_alike(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient, status: int, error: type[Exception]
) -> None:
    respx_mock.get("/api/v4/leads").mock(return_value=httpx.Response(status))
    gate = Gate()
    client = KommoClient(http, ready=gate.ready)

    results = await together(gate, client.get_lead(lead_id=1), client.get_lead(lead_id=2))

    assert [type(r) for r in results] == [error, error]


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_concurrent_contact_reads_are_one_list_read(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    contacts = [{"id": 7001, "name": "Ada"}, {"id": 7002, "name": "Grace"}]
    route = respx_mock.get("/api/v4/contacts").mock(return_value=page("contacts", contacts))
    gate = Gate()
    client = KommoClient(http, ready=gate.ready)

    ada, ada_again, grace = await together(
        gate, *(client.get_contact(contact_id=i) for i in (7001, 7001, 7002))
    )

    assert route.call_count == 1
    assert ids_of(route.calls.last.request) == ["7001", "7002"]
    assert [getattr(c, "name", c) for c in (ada, ada_again, grace)] == ["Ada", "Ada", "Grace"]


async def write_two_back(gate: Gate, client: KommoClient) -> list[BaseException | None]:
    """Invoice numbers SI-1 and SI-2 written back to leads 1 and 2 at the same moment."""
    return await together(
        gate,
        client.update_lead(lead_id=1, update=update("SI-1")),
        client.update_lead(lead_id=2, update=update("SI-2")),
    )


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_write_backs_go_out_as_one_batch_patch(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    answer = page("leads", [{"id": 1, "updated_at": 1}, {"id": 2, "updated_at": 1}])
    batch = respx_mock.patch("/api/v4/leads").mock(return_value=answer)
    gate = Gate()
    client = KommoClient(http, ready=gate.ready)

    results = await write_two_back(gate, client)

    assert results == [None, None]
    assert batch.call_count == 1
    assert json.loads(batch.calls.last.request.content) == [
        {"id": 1, "custom_fields_values": [{"field_id": 900, "values": [{"value": "SI-1"}]}]},
        {"id": 2, "custom_fields_values": [{"field_id": 900, "values": [{"value": "SI-2"}]}]},
    ]


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_a_refused_batch_patch_is_sent_lead_by_lead_so_one_bad_lead_fails_alone(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    refusal = {
        "title": "Bad Request",
        "status": 400,
        "detail": "Request validation failed",
        "validation-errors": [
            {"request_id": "1", "errors": [{"code": "NotFound", "path": "id", "detail": "x"}]}
        ],
    }
    batch = respx_mock.patch("/api/v4/leads").mock(return_value=httpx.Response(400, json=refusal))
    good = respx_mock.patch("/api/v4/leads/1").mock(return_value=httpx.Response(200, json={}))
    bad = respx_mock.patch("/api/v4/leads/2").mock(return_value=httpx.Response(400, json=refusal))
    gate = Gate()
    client = KommoClient(http, ready=gate.ready)

    first, second = await write_two_back(gate, client)

    assert batch.call_count == good.call_count == bad.call_count == 1
    assert first is None
    assert isinstance(second, KommoRequestError) and second.status == 400
    assert json.loads(good.calls.last.request.content) == {
        "custom_fields_values": [{"field_id": 900, "values": [{"value": "SI-1"}]}]
    }


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_a_lead_the_batch_answer_does_not_confirm_is_written_alone(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    respx_mock.patch("/api/v4/leads").mock(return_value=page("leads", [{"id": 1}]))
    alone = respx_mock.patch("/api/v4/leads/2").mock(return_value=httpx.Response(200, json={}))
    gate = Gate()
    client = KommoClient(http, ready=gate.ready)

    results = await write_two_back(gate, client)

    assert results == [None, None]
    assert alone.call_count == 1


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_two_changes_to_one_lead_never_share_a_batch(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    single = respx_mock.patch("/api/v4/leads/1").mock(return_value=httpx.Response(200, json={}))
    gate = Gate()
    client = KommoClient(http, ready=gate.ready)

    await together(
        gate,
        client.update_lead(lead_id=1, update=update("SI-1")),
        client.update_lead(lead_id=1, update=update("SI-1b")),
    )

    bodies = [json.loads(c.request.content) for c in single.calls]
    assert [b["custom_fields_values"][0]["values"][0]["value"] for b in bodies] == [
        "SI-1",
        "SI-1b",
    ]


def value_of(body: dict[str, Any]) -> str:
    return str(body["custom_fields_values"][0]["values"][0]["value"])


class Kommo:
    """Lead writes as Kommo would apply them, in the order they arrive (each takes a moment)."""

    def __init__(self, *, batch_status: int, refused: frozenset[int] = frozenset()) -> None:
        self.values: dict[int, str] = {}
        self.arrived: list[str] = []
        self.batch_status = batch_status
        self.refused = refused
        self.batch_in_flight = False

    async def batch(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.arrived.append("batch " + ",".join(f"{b['id']}={value_of(b)}" for b in body))
        self.batch_in_flight = True
        await asyncio.sleep(0.02)
        self.batch_in_flight = False
        if self.batch_status != 200:
            return httpx.Response(self.batch_status, json={"title": "Bad Request"})
        self.values.update({b["id"]: value_of(b) for b in body})
        return page("leads", [{"id": b["id"]} for b in body])

    async def one(self, request: httpx.Request) -> httpx.Response:
        lead_id = int(request.url.path.rsplit("/", 1)[1])
        value = value_of(json.loads(request.content))
        overlap = " during the batch" if self.batch_in_flight else ""
        self.arrived.append(f"{lead_id}={value}{overlap}")
        await asyncio.sleep(0.01)
        if lead_id in self.refused:
            return httpx.Response(400, json={"title": "Bad Request"})
        self.values[lead_id] = value
        return httpx.Response(200, json={"id": lead_id})


@pytest.mark.parametrize(
    ("batch_status", "arrived"),
    [
        (200, ["batch 1=SI-1,2=SI-2", "1=SI-1b"]),
        # Refused: the batch's leads go one by one, and the later change to lead 1 after them.
        (400, ["batch 1=SI-1,2=SI-2", "1=SI-1", "2=SI-2", "1=SI-1b"]),
    ],
)
@respx.mock(base_url=BASE, assert_all_called=False)
async def test_a_later_change_to_a_lead_waits_for_the_earlier_one_being_answered(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient, batch_status: int, arrived: list[str]
) -> None:
    kommo = Kommo(batch_status=batch_status, refused=frozenset({2}))
    respx_mock.patch("/api/v4/leads").mock(side_effect=kommo.batch)
    respx_mock.patch(url__regex=r"/api/v4/leads/\d+$").mock(side_effect=kommo.one)
    gate = Gate()
    client = KommoClient(http, ready=gate.ready)

    first, _, later = await together(
        gate,
        client.update_lead(lead_id=1, update=update("SI-1")),
        client.update_lead(lead_id=2, update=update("SI-2")),
        client.update_lead(lead_id=1, update=update("SI-1b")),
    )

    assert (first, later) == (None, None)
    assert kommo.arrived == arrived
    assert kommo.values[1] == "SI-1b"


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_a_lead_kommo_confirmed_is_not_failed_by_another_leads_write_failing_otherwise(
    respx_mock: respx.MockRouter,
) -> None:
    """Lead 2's own write fails outside Kommo (the limiter's Redis, say): lead 1, confirmed by
    the batch, is still done, and only lead 2's caller hears the error."""

    async def limiter(request: httpx.Request) -> None:
        if request.url.path == "/api/v4/leads/2":
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379")

    respx_mock.patch("/api/v4/leads").mock(return_value=page("leads", [{"id": 1}]))
    respx_mock.patch("/api/v4/leads/2").mock(return_value=httpx.Response(200, json={}))
    async with httpx.AsyncClient(base_url=BASE, event_hooks={"request": [limiter]}) as http:
        gate = Gate()
        client = KommoClient(http, ready=gate.ready)
        first, second = await write_two_back(gate, client)

    assert first is None
    assert isinstance(second, RedisConnectionError)


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_an_unreadable_list_element_fails_only_the_deals_that_link_it(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    elements = [{"id": 101, "name": "Consulting hour"}, {"id": 102}]
    route = respx_mock.get("/api/v4/catalogs/77/elements").mock(
        return_value=page("elements", elements)
    )
    gate = Gate()
    client = KommoClient(http, ready=gate.ready)

    deal_a, deal_b = await together(
        gate,
        client.get_catalog_elements(catalog_id=77, element_ids=[101]),
        client.get_catalog_elements(catalog_id=77, element_ids=[102]),
    )
    again = await client.get_catalog_elements(catalog_id=77, element_ids=[101])

    assert isinstance(deal_a, list) and [e.id for e in deal_a] == [101]
    assert isinstance(deal_b, KommoUnreadable)
    assert "catalog element 102 has no name" in str(deal_b)
    assert [e.id for e in again] == [101] and route.call_count == 1  # the readable one kept


@respx.mock(base_url=BASE, assert_all_called=False)
async def test_list_elements_are_read_together_and_then_kept_briefly(
    respx_mock: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    elements = [{"id": 101, "name": "Consulting hour"}, {"id": 102, "name": "Widget"}]
    route = respx_mock.get("/api/v4/catalogs/77/elements").mock(
        return_value=page("elements", elements)
    )
    gate = Gate()
    client = KommoClient(http, ready=gate.ready)

    async def read(ids: list[int]) -> list[int]:
        return [e.id for e in await client.get_catalog_elements(catalog_id=77, element_ids=ids)]

    first, second = await together(gate, read([101]), read([101, 102, 109]))
    again = await read([102, 101])

    assert route.call_count == 1
    assert ids_of(route.calls.last.request) == ["101", "102", "109"]
    assert (first, second, again) == ([101], [101, 102], [102, 101])
