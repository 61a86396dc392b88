"""The deal's stage is read before anything else about it: a deal that has left the invoice
stage is skipped, whatever its products, contact or account would have said (issue 14, item 5
of the seams: a deal that left the stage could end `failed` because of a bad product)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.settings import Settings
from tests.helpers import Scheduled, load_event, record_trigger, run_event
from tests.upstreams import Upstreams

Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
def upstreams(upstreams: Upstreams) -> Upstreams:
    upstreams.kommo.add_element(110, "Discontinued", "5", is_deleted=True)
    return upstreams


async def test_a_deal_that_left_the_stage_is_skipped_before_its_products_are_read(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    upstreams: Upstreams,
) -> None:
    kommo, sage = upstreams
    kommo.add_lead(1, status_id=502, products=[(110, 1)])  # a deleted product would fail it
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == "skipped"

    event = await load_event(sessionmaker, event_id)
    assert event.last_error == ("the deal is now in pipeline 500 stage 502, not the invoice stage")
    assert kommo.requested == ["GET /api/v4/leads/1?with=contacts%2Ccatalog_elements"]
    assert kommo.tasks == [] and sage.invoice_posts == []


async def test_a_deal_in_the_stage_is_read_whole_with_one_read_of_the_lead(
    sessionmaker: Maker,
    settings: Settings,
    bridge: tuple[Bridge, Scheduled],
    upstreams: Upstreams,
) -> None:
    kommo, sage = upstreams
    kommo.add_lead(1, products=[(102, 1)])
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == "invoiced"

    reads = [r for r in kommo.requested if r.startswith("GET")]
    assert [r.split("?")[0].removeprefix("GET /api/v4") for r in reads] == [
        "/leads/1",
        "/contacts/7001",
        "/catalogs",
        "/catalogs/77/elements",
        "/account",
    ]
    assert len(sage.invoice_posts) == 1
