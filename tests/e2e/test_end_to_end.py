"""End to end over real HTTP on 127.0.0.1: the bridge's API and worker as real processes,
the sandbox Kommo and Sage serving in this process, Kommo sending real webhooks."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import select, text

from app.cli import migrate_database
from app.db import create_engine
from app.inbox.models import EventState, InboxEvent
from app.models import SyncRecord
from app.settings import Settings
from sandbox.kommo.models import ElementLink, Lead
from sandbox.runner import RunningSandbox, run_sandbox
from sandbox.seed import (
    CATALOG_INVOICES,
    CATALOG_PRODUCTS,
    CATALOG_REGULAR,
    CONTACT_ADA,
    ELEMENT_COURIER,
    ELEMENT_INVOICE,
    ELEMENT_WIDGET,
    FIELD_INVOICE_LINK,
    FIELD_INVOICE_NUMBER,
    FIELD_WHOLESALE_PRICE,
    KOMMO_USER_ID,
    LEAD_SAMPLE,
    LEAD_SECOND,
    LEAD_UNMAPPED,
    LEAD_WHOLESALE,
    LEDGER_SALES_A,
    PIPELINE_SALES,
    SAGE_BUSINESS_ID,
    SAGE_GRACE_CONTACT,
    STATUS_NEGOTIATION,
    STATUS_RAISE_INVOICE,
    register_webhook,
)
from tests.conftest import TABLES
from tests.helpers import lead_entry, status_webhook

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-webhook-secret"
# One bridge (API + worker processes) and one sandbox serve every test in this module.
pytestmark = pytest.mark.asyncio(loop_scope="module")
# An event in one of these states may still post to Sage.
AT_WORK = {EventState.PENDING.value, EventState.RETRYING.value, EventState.WAITING_CONNECTION.value}


@dataclass
class Stack:
    sandbox: RunningSandbox
    api_url: str
    logs: Path
    api_pid: int


API_WORKERS = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def e2e_database(tmp_path_factory: pytest.TempPathFactory, postgres_url: str | None) -> str:
    if postgres_url:
        return postgres_url
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('e2e') / 'bridge.db'}"
    migrate_database(Settings(database_url=url))
    return url


async def _truncate(url: str) -> None:
    if url.startswith("postgresql"):
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
        await engine.dispose()


def _env(sb: RunningSandbox, database_url: str, redis_url: str, api_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KOMMO_", "SAGE_"))}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        API_PORT=str(api_port),
        KOMMO_BASE_URL=sb.kommo_url,
        KOMMO_ACCESS_TOKEN="sandbox-kommo-token",
        KOMMO_ACCOUNT_ID="31000001",
        KOMMO_SUBDOMAIN="sandbox",
        KOMMO_WEBHOOK_SECRET=SECRET,
        KOMMO_TRIGGER_PIPELINE_ID="7000001",
        KOMMO_TRIGGER_STATUS_ID=str(STATUS_RAISE_INVOICE),
        KOMMO_INVOICE_NUMBER_FIELD_ID=str(FIELD_INVOICE_NUMBER),
        KOMMO_INVOICE_LINK_FIELD_ID=str(FIELD_INVOICE_LINK),
        SAGE_BASE_URL=sb.sage_api_url,
        SAGE_ACCESS_TOKEN="sandbox-sage-token",
        SAGE_BUSINESS_ID=SAGE_BUSINESS_ID,
        RETRY_DELAYS_SECONDS="[1,1]",
        SWEEPER_INTERVAL_SECONDS="2",
        HTTP_TIMEOUT_SECONDS="2",
        LOG_LEVEL="INFO",
        # Two API processes behind one port, as a busy production runs it.
        API_WORKERS=str(API_WORKERS),
    )
    return env


async def _wait_healthy(url: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a bridge process exited during start-up")
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError("the bridge API did not come up")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    e2e_database: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    await _truncate(e2e_database)
    import redis.asyncio as aioredis

    async with aioredis.Redis.from_url(redis_url) as r:
        await r.flushdb()
    logs = tmp_path_factory.mktemp("e2e-logs")
    async with run_sandbox() as sb:
        api_port = _free_port()
        env = _env(sb, e2e_database, redis_url, api_port)
        register_webhook(sb.kommo.state, f"http://127.0.0.1:{api_port}/webhooks/kommo/{SECRET}")
        procs = [
            subprocess.Popen(  # noqa: ASYNC220 - started once per module
                [sys.executable, "-m", "app.cli", role],
                cwd=ROOT,
                env=env,
                stdout=(logs / f"{role}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
            for role in ("api", "worker")
        ]
        try:
            await _wait_healthy(f"http://127.0.0.1:{api_port}", procs)
            yield Stack(sb, f"http://127.0.0.1:{api_port}", logs, procs[0].pid)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def move(stack: Stack, lead_id: int) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{stack.sandbox.kommo_url}/sandbox/leads/{lead_id}/move",
            json={"status_id": STATUS_RAISE_INVOICE},
        )
    response.raise_for_status()


def invoice_field(stack: Stack, lead_id: int) -> Any:
    with stack.sandbox.kommo.state.lock:
        values = stack.sandbox.kommo.state.leads[lead_id].fields.get(FIELD_INVOICE_NUMBER)
    return values[0]["value"] if values else None


def sage_invoices(stack: Stack) -> list[Any]:
    book = stack.sandbox.sage.state.book_for(SAGE_BUSINESS_ID)
    with stack.sandbox.sage.state.lock:
        return list(book.invoices.values())


def tasks_for(stack: Stack, lead_id: int) -> list[Any]:
    with stack.sandbox.kommo.state.lock:
        return [t for t in stack.sandbox.kommo.state.tasks.values() if t.entity_id == lead_id]


async def eventually(check: Any, stack: Stack, timeout: float = 25.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        await asyncio.sleep(0.2)
    logs = "\n".join(p.read_text()[-3000:] for p in stack.logs.iterdir())
    sent = [
        (d.lead_ids, d.outcome, d.status_code) for d in stack.sandbox.kommo.webhooks.deliveries()
    ]
    raise AssertionError(
        f"condition not met within {timeout}s; webhooks sent: {sent}; bridge logs:\n{logs}"
    )


def add_lead(stack: Stack, lead_id: int, element_id: int = ELEMENT_WIDGET) -> None:
    """A deal of the test's own in Negotiation: Ada's, one product from the products list."""
    state = stack.sandbox.kommo.state
    with state.lock:
        stage = (PIPELINE_SALES, STATUS_NEGOTIATION)
        lead = Lead.created(
            lead_id, f"Deal {lead_id}", by=KOMMO_USER_ID, at=state.now(), stage=stage
        )
        product = ElementLink(element_id, CATALOG_PRODUCTS, Decimal(1))
        state.leads[lead_id] = lead.link(CONTACT_ADA, [product])


def invoice_posts(stack: Stack, lead_id: int) -> list[int]:
    """The status of each POST /sales_invoices Sage received for this deal."""
    posts = stack.sandbox.sage.requests.entries(method="POST", path_prefix="/v3.1/sales_invoices")
    reference = f"KOMMO-{lead_id}"
    return [p.status for p in posts if p.body["sales_invoice"]["reference"] == reference]


async def settled(database_url: str, lead_id: int) -> list[str]:
    """Wait until no event of this deal is left to work on; return their states."""
    engine = create_engine(database_url)
    deadline = time.monotonic() + 25
    try:
        while True:
            async with engine.connect() as conn:
                states = list(
                    await conn.scalars(
                        select(InboxEvent.state).where(InboxEvent.deal_id == str(lead_id))
                    )
                )
            if states and not set(states) & AT_WORK:
                return states
            assert time.monotonic() < deadline, f"deal {lead_id}'s events never settled: {states}"
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


async def test_happy_path_invoice_created_and_written_back(stack: Stack) -> None:
    await move(stack, LEAD_SAMPLE)

    number = await eventually(lambda: invoice_field(stack, LEAD_SAMPLE), stack)

    (invoice,) = [i for i in sage_invoices(stack) if i.reference == f"KOMMO-{LEAD_SAMPLE}"]
    assert number == invoice.invoice_number
    with stack.sandbox.kommo.state.lock:
        link = stack.sandbox.kommo.state.leads[LEAD_SAMPLE].fields[FIELD_INVOICE_LINK][0]["value"]
    assert link.endswith(f"/sandbox/ui/sales_invoices/{invoice.id}")
    # 2.5 × 120.00 (Services, 20 %) + 3 × 19.99 (Sales Type A, 20 %)
    assert [str(line.tax_amount) for line in invoice.lines] == ["60.00", "11.99"]
    assert str(invoice.total_amount) == "431.96"
    deliveries = stack.sandbox.kommo.webhooks.deliveries()
    assert deliveries and all(d.status_code == 200 for d in deliveries)


async def test_existing_customer_is_reused(stack: Stack) -> None:
    book = stack.sandbox.sage.state.book_for(SAGE_BUSINESS_ID)
    contacts_before = len(book.contacts)

    await move(stack, LEAD_SECOND)
    await eventually(lambda: invoice_field(stack, LEAD_SECOND), stack)

    (invoice,) = [i for i in sage_invoices(stack) if i.reference == f"KOMMO-{LEAD_SECOND}"]
    assert invoice.contact_id == SAGE_GRACE_CONTACT
    assert len(book.contacts) == contacts_before


async def test_unmapped_line_gets_a_task_and_no_invoice(stack: Stack) -> None:
    await move(stack, LEAD_UNMAPPED)

    (task,) = await eventually(lambda: tasks_for(stack, LEAD_UNMAPPED), stack)

    assert "'Mystery box' (element 4200004, SKU MYST-1, type other)" in task.text
    assert not [i for i in sage_invoices(stack) if i.reference == f"KOMMO-{LEAD_UNMAPPED}"]
    assert invoice_field(stack, LEAD_UNMAPPED) is None


async def test_transient_sage_failure_then_success(stack: Stack) -> None:
    add_lead(stack, 3000010)
    stack.sandbox.sage.faults.fail_next("POST", "/v3.1/sales_invoices", status=503, count=1)

    await move(stack, 3000010)
    await eventually(lambda: invoice_field(stack, 3000010), stack)

    assert invoice_posts(stack, 3000010) == [503, 201]
    assert len([i for i in sage_invoices(stack) if i.reference == "KOMMO-3000010"]) == 1
    assert tasks_for(stack, 3000010) == []


async def test_sage_timeout_after_commit_gives_one_invoice(stack: Stack) -> None:
    add_lead(stack, 3000011)
    stack.sandbox.sage.faults.timeout_after_commit("POST", "/v3.1/sales_invoices", delay=5)

    await move(stack, 3000011)
    await eventually(lambda: invoice_field(stack, 3000011), stack, timeout=40)

    assert len([i for i in sage_invoices(stack) if i.reference == "KOMMO-3000011"]) == 1


async def test_duplicate_webhooks_make_one_invoice(stack: Stack, e2e_database: str) -> None:
    add_lead(stack, 3000012)
    with stack.sandbox.kommo.state.lock:
        stack.sandbox.kommo.state.leads[3000012].status_id = STATUS_RAISE_INVOICE
    body = status_webhook(
        lead_entry(3000012, status_id=STATUS_RAISE_INVOICE, pipeline_id=7000001),
        account_id=31000001,
        subdomain="sandbox",
    )
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    async with httpx.AsyncClient() as http:
        answers = await asyncio.gather(
            *(
                http.post(f"{stack.api_url}/webhooks/kommo/{SECRET}", content=body, headers=headers)
                for _ in range(5)
            )
        )

    assert [a.status_code for a in answers] == [200] * 5
    assert sum(a.json()["queued"] for a in answers) == 1  # one event for the five
    await eventually(lambda: invoice_field(stack, 3000012), stack)
    # Nothing is left that could post again: then Sage was asked once, and holds one invoice.
    assert await settled(e2e_database, 3000012) == ["invoiced"]
    assert invoice_posts(stack, 3000012) == [201]
    assert len([i for i in sage_invoices(stack) if i.reference == "KOMMO-3000012"]) == 1


def serving_processes(parent: int) -> list[int]:
    """The API processes uvicorn's process manager started (not multiprocessing's tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads Linux's /proc")
async def test_the_api_serves_from_api_workers_processes(stack: Stack) -> None:
    def all_up() -> tuple[int, int] | None:
        # Every one of them answers: the health check reaches whichever accepts the connection,
        # and each process's own start-up log line says it is up. The first to start answers
        # the stack's health check; the others may still be starting.
        serving = len(serving_processes(stack.api_pid))
        started = (stack.logs / "api.log").read_text().count("api.started")
        return (serving, started) if started >= API_WORKERS else None

    assert await eventually(all_up, stack) == (API_WORKERS, API_WORKERS)


async def line_notes(database_url: str, deal_id: int) -> dict[tuple[str, str], Any]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(SyncRecord.action, SyncRecord.detail).where(
                    SyncRecord.deal_id == str(deal_id), SyncRecord.record == "line"
                )
            )
            return {(action, detail["element_id"]): detail for action, detail in rows}
    finally:
        await engine.dispose()


async def test_a_product_at_the_price_its_link_names_with_other_lists_left_out(
    stack: Stack, e2e_database: str
) -> None:
    """Kommo as documented: the Widget's `is_deleted` is null, the deal's link names the
    wholesale price field (not PRICE) in price_id, and an invoices-list element and a
    regular-list element are linked to the same deal."""
    with stack.sandbox.kommo.state.lock:
        widget = stack.sandbox.kommo.state.catalogs[4000001].elements[ELEMENT_WIDGET]
        assert widget.is_deleted is None
        first_link = stack.sandbox.kommo.state.leads[LEAD_WHOLESALE].elements[0]
        assert (first_link.element_id, first_link.price_id) == (
            ELEMENT_WIDGET,
            FIELD_WHOLESALE_PRICE,
        )

    await move(stack, LEAD_WHOLESALE)
    number = await eventually(lambda: invoice_field(stack, LEAD_WHOLESALE), stack)

    (invoice,) = [i for i in sage_invoices(stack) if i.reference == f"KOMMO-{LEAD_WHOLESALE}"]
    assert number == invoice.invoice_number
    assert invoice.contact_id == SAGE_GRACE_CONTACT
    assert [
        (ln.description, ln.ledger_account_id, ln.quantity, ln.unit_price, ln.net_amount)
        for ln in invoice.lines
    ] == [("Widget", LEDGER_SALES_A, Decimal(10), Decimal("15.50"), Decimal("155.00"))]
    assert [ln.tax_amount for ln in invoice.lines] == [Decimal("31.00")]
    assert invoice.total_amount == Decimal("186.00")

    async def notes() -> dict[tuple[str, str], Any]:
        return await line_notes(e2e_database, LEAD_WHOLESALE)

    deadline = time.monotonic() + 10
    while ("ignored", str(ELEMENT_COURIER)) not in (found := await notes()):
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.2)
    hint = "add the list's id to KOMMO_PRODUCT_LIST_IDS if it holds products"
    assert found[("ignored", str(ELEMENT_INVOICE))]["reason"] == (
        f"list 'Invoices' ({CATALOG_INVOICES}) is of type invoices, not products; {hint}"
    )
    assert found[("ignored", str(ELEMENT_COURIER))]["reason"] == (
        f"list 'Delivery options' ({CATALOG_REGULAR}) is of type regular, not products; {hint}"
    )
    assert found[("priced", str(ELEMENT_WIDGET))]["unit_price"] == "15.50"
