"""Exactly one invoice per deal: concurrent jobs, a worker killed mid-job, a POST that timed out."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.bridge import Bridge
from app.domain import InvoiceDraft, InvoiceRef
from app.inbox.models import EventState, InboxEvent
from app.invoicing import idempotency_key
from app.models import DealInvoice
from app.settings import Settings
from tests.helpers import (
    Scheduled,
    bridge_for,
    load_event,
    make_due,
    record_trigger,
    run_event,
)
from tests.upstreams import Kommo, Sage, Upstreams

Maker = async_sessionmaker[AsyncSession]


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing after it in the job runs, and `except Exception` can't see it."""


INVOICES = "/v3.1/sales_invoices"


@pytest.fixture
def upstreams(upstreams: Upstreams) -> Upstreams:
    """Deal 1, two Widgets, in the invoice stage."""
    upstreams.kommo.add_lead(1, products=[(102, 2)])
    return upstreams


async def invoice_records(sessionmaker: Maker) -> list[DealInvoice]:
    async with sessionmaker() as session:
        return list((await session.scalars(select(DealInvoice))).all())


async def test_five_concurrent_jobs_for_one_event_raise_one_invoice(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Scheduled], upstreams: Upstreams
) -> None:
    kommo, sage = upstreams
    event_id = await record_trigger(sessionmaker, settings, 1)

    results = await asyncio.gather(
        *(run_event(sessionmaker, bridge[0], event_id) for _ in range(5))
    )

    assert sorted(str(r) for r in results) == ["None"] * 4 + ["invoiced"]
    assert len(sage.invoice_posts) == 1 and len(sage.invoices) == 1
    assert len(kommo.patches) == 1
    assert len(await invoice_records(sessionmaker)) == 1


async def test_worker_killed_between_sage_post_and_local_commit(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Scheduled], upstreams: Upstreams
) -> None:
    kommo, sage = upstreams
    event_id = await record_trigger(sessionmaker, settings, 1)
    real_create = bridge[0].accounting.create_invoice

    async def create_then_die(*, draft: InvoiceDraft) -> InvoiceRef:
        await real_create(draft=draft)
        raise WorkerKilled

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(bridge[0].accounting, "create_invoice", create_then_die)
        with pytest.raises(WorkerKilled):
            await run_event(sessionmaker, bridge[0], event_id)
    (record,) = await invoice_records(sessionmaker)
    assert (record.state, record.invoice_id) == ("posting", None)

    await make_due(sessionmaker, event_id)  # what arq + the sweeper do later
    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.INVOICED

    assert len(sage.invoices) == 1 and len(sage.invoice_posts) == 1  # found by reference
    (record,) = await invoice_records(sessionmaker)
    assert (record.state, record.invoice_number) == ("written_back", "SI-1")
    assert kommo.patches[0][1]["custom_fields_values"][0]["values"] == [{"value": "SI-1"}]


async def test_post_that_created_the_invoice_but_timed_out_is_not_repeated(
    sessionmaker: Maker, settings: Settings, kommo: Kommo, sage: Sage
) -> None:
    sage.faults.timeout_after_commit("POST", INVOICES, delay=60)
    event_id = await record_trigger(sessionmaker, settings, 1)
    impatient = settings.model_copy(update={"http_timeout_seconds": 2.0})

    async with bridge_for(impatient) as (built, _):
        assert await run_event(sessionmaker, built, event_id) == EventState.RETRYING
        assert "timed out" in ((await load_event(sessionmaker, event_id)).last_error or "")
        await make_due(sessionmaker, event_id)
        assert await run_event(sessionmaker, built, event_id) == EventState.INVOICED

    assert len(sage.invoices) == 1
    assert len(sage.invoice_posts) == 1  # the retry looked it up by reference instead
    assert len(kommo.patches) == 1 and kommo.tasks == []


async def test_a_post_that_never_reached_sage_is_sent_again_with_the_same_key(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Scheduled], upstreams: Upstreams
) -> None:
    kommo, sage = upstreams
    event_id = await record_trigger(sessionmaker, settings, 1)

    async def die_before_post(*, draft: InvoiceDraft) -> InvoiceRef:
        raise WorkerKilled

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(bridge[0].accounting, "create_invoice", die_before_post)
        with pytest.raises(WorkerKilled):
            await run_event(sessionmaker, bridge[0], event_id)

    await make_due(sessionmaker, event_id)
    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.INVOICED
    assert len(sage.invoices) == 1 and len(sage.invoice_posts) == 1


async def test_write_back_failure_retries_without_a_second_invoice(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Scheduled], upstreams: Upstreams
) -> None:
    kommo, sage = upstreams
    kommo.faults.fail_next("PATCH", "/api/v4/leads/{id}", status=504)
    event_id = await record_trigger(sessionmaker, settings, 1)

    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.RETRYING
    await make_due(sessionmaker, event_id)
    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.INVOICED

    assert len(sage.invoice_posts) == 1 and len(kommo.patches) == 1


async def test_replaying_an_invoiced_deal_does_not_invoice_it_again(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Scheduled], upstreams: Upstreams
) -> None:
    kommo, sage = upstreams
    event_id = await record_trigger(sessionmaker, settings, 1)
    await run_event(sessionmaker, bridge[0], event_id)
    async with sessionmaker() as session:
        await session.execute(
            update(InboxEvent).where(InboxEvent.id == event_id).values(state="pending")
        )
        await session.commit()

    # Run again, the invoiced deal is compared with its invoice (CHANGE_POLICY), not re-raised.
    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.UNCHANGED
    assert len(sage.invoice_posts) == 1


async def test_a_refused_post_closes_its_key_and_the_fixed_deal_gets_one_invoice(
    sessionmaker: Maker, settings: Settings, bridge: tuple[Bridge, Scheduled], upstreams: Upstreams
) -> None:
    kommo, sage = upstreams
    sage.faults.refuse_next("POST", INVOICES, status=422, message="Ledger account is archived")
    event_id = await record_trigger(sessionmaker, settings, 1)
    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.FAILED
    (record,) = await invoice_records(sessionmaker)
    assert (record.state, record.idempotency_generation) == ("posting", 1)

    # Ops fixed the account in Sage and replay the event (a later move of the deal does the same).
    async with sessionmaker() as session:
        await session.execute(
            update(InboxEvent).where(InboxEvent.id == event_id).values(state="pending")
        )
        await session.commit()
    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.INVOICED
    # ... and once more: the invoice exists, nothing is posted again (the deal is unchanged).
    async with sessionmaker() as session:
        await session.execute(
            update(InboxEvent).where(InboxEvent.id == event_id).values(state="pending")
        )
        await session.commit()
    assert await run_event(sessionmaker, bridge[0], event_id) == EventState.UNCHANGED

    keys = [a["sales_invoice"]["idempotency_id"] for a in sage.invoice_attempts]
    assert len(keys) == 2 and keys[0] != keys[1]
    assert keys[0] == idempotency_key("kommo", "29000001", "1")
    assert keys[1] == idempotency_key("kommo", "29000001", "1", "g1")
    assert len(sage.invoices) == 1 and len(kommo.patches) == 1
    (record,) = await invoice_records(sessionmaker)
    assert (record.state, record.idempotency_key) == ("written_back", keys[1])
