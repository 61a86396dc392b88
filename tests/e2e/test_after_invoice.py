"""After the invoice, end to end over real HTTP: the bridge's API and worker as real processes,
the sandbox Kommo and Sage serving in this process and sending real webhooks. The worker is
restarted with other policies, and killed outright between a credit note and the new invoice."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app.models import utcnow
from sandbox.kommo.models import ElementLink, Lead
from sandbox.runner import RunningSandbox, run_sandbox
from sandbox.seed import (
    CATALOG_PRODUCTS,
    CONTACT_ADA,
    ELEMENT_CONSULTING,
    ELEMENT_WIDGET,
    ENUM_CREDITED,
    ENUM_PAID,
    ENUM_PART_PAID,
    ENUM_UNPAID,
    ENUM_VOID,
    FIELD_AMOUNT_OUTSTANDING,
    FIELD_AMOUNT_PAID,
    FIELD_CREDIT_NOTES,
    FIELD_CREDITED_AMOUNT,
    FIELD_INVOICE_NUMBER,
    FIELD_PAYMENT_STATUS,
    KOMMO_USER_ID,
    PIPELINE_SALES,
    SAGE_BUSINESS_ID,
    STATUS_LOST,
    STATUS_NEGOTIATION,
    STATUS_RAISE_INVOICE,
    STATUS_WON,
    register_webhook,
)
from tests.e2e.test_end_to_end import (
    SECRET,
    _env,
    _free_port,
    _truncate,
    _wait_healthy,
    settled,
)
from tests.e2e.test_end_to_end import e2e_database as e2e_database  # this module's fixture too

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.asyncio(loop_scope="module")
MONEY = {
    "KOMMO_PAYMENT_STATUS_FIELD_ID": str(FIELD_PAYMENT_STATUS),
    "KOMMO_PAYMENT_STATUS_ENUMS": json.dumps(
        {
            "unpaid": ENUM_UNPAID,
            "part_paid": ENUM_PART_PAID,
            "paid": ENUM_PAID,
            "void": ENUM_VOID,
            "credited": ENUM_CREDITED,
        }
    ),
    "KOMMO_AMOUNT_PAID_FIELD_ID": str(FIELD_AMOUNT_PAID),
    "KOMMO_AMOUNT_OUTSTANDING_FIELD_ID": str(FIELD_AMOUNT_OUTSTANDING),
    "KOMMO_CREDIT_NOTES_FIELD_ID": str(FIELD_CREDIT_NOTES),
    "KOMMO_CREDITED_AMOUNT_FIELD_ID": str(FIELD_CREDITED_AMOUNT),
    "OPS_API_TOKEN": "e2e-ops-token-0123456789abcdefghijkl",
    # A killed worker's event is picked up again after its lease (the job timeout).
    "JOB_TIMEOUT_SECONDS": "5",
    "STATUS_POLL_MINUTES": "1",
}
REISSUE_AND_VOID = {"CHANGE_POLICY": "reissue", "CANCEL_POLICY": "void"}


@dataclass
class Stack:
    sandbox: RunningSandbox
    api_url: str
    database_url: str
    env: dict[str, str]
    logs: Path
    worker: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    def start_worker(self, **policies: str) -> None:
        self.stop_worker()
        self.starts += 1
        log = (self.logs / f"worker-{self.starts}.log").open("wb")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"],
            cwd=ROOT,
            env={**self.env, **policies},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill_worker(self) -> None:
        """SIGKILL: no shutdown, no commit, no goodbye."""
        assert self.worker is not None
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(timeout=10)
        self.worker = None

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.worker.kill()
            self.worker = None

    @property
    def book(self) -> Any:
        return self.sandbox.sage.state.book_for(SAGE_BUSINESS_ID)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    e2e_database: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    await _truncate(e2e_database)
    import redis.asyncio as aioredis

    async with aioredis.Redis.from_url(redis_url) as r:
        await r.flushdb()
    logs = tmp_path_factory.mktemp("e2e-after-logs")
    async with run_sandbox() as sb:
        api_port = _free_port()
        env = {**_env(sb, e2e_database, redis_url, api_port), **MONEY, "API_WORKERS": "1"}
        hook = f"http://127.0.0.1:{api_port}/webhooks/kommo/{SECRET}"
        register_webhook(sb.kommo.state, hook, ("status_lead", "delete_lead"))
        api = subprocess.Popen(  # noqa: ASYNC220 - started once per module
            [sys.executable, "-m", "app.cli", "api"],
            cwd=ROOT,
            env=env,
            stdout=(logs / "api.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        built = Stack(sb, f"http://127.0.0.1:{api_port}", e2e_database, env, logs)
        built.start_worker()
        try:
            await _wait_healthy(built.api_url, [api])
            yield built
        finally:
            built.stop_worker()
            api.terminate()
            api.wait(timeout=10)


async def eventually(check: Any, stack: Stack, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if result := check():
            return result
        await asyncio.sleep(0.2)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted(stack.logs.iterdir()))
    raise AssertionError(f"condition not met within {timeout}s; bridge logs:\n{logs}")


def add_deal(stack: Stack, lead_id: int, *products: tuple[int, str]) -> None:
    """A deal of the test's own in Negotiation, Ada's, with these products."""
    state = stack.sandbox.kommo.state
    with state.lock:
        stage = (PIPELINE_SALES, STATUS_NEGOTIATION)
        lead = Lead.created(
            lead_id, f"Deal {lead_id}", by=KOMMO_USER_ID, at=state.now(), stage=stage
        )
        links = [ElementLink(e, CATALOG_PRODUCTS, Decimal(q)) for e, q in products]
        state.leads[lead_id] = lead.link(CONTACT_ADA, links)


def relink(stack: Stack, lead_id: int, *products: tuple[int, str]) -> None:
    state = stack.sandbox.kommo.state
    with state.lock:
        state.leads[lead_id].elements = [
            ElementLink(e, CATALOG_PRODUCTS, Decimal(q)) for e, q in products
        ]


async def move(stack: Stack, lead_id: int, status_id: int) -> None:
    async with httpx.AsyncClient(base_url=stack.sandbox.kommo_url) as http:
        (
            await http.post(f"/sandbox/leads/{lead_id}/move", json={"status_id": status_id})
        ).raise_for_status()


async def sandbox_post(stack: Stack, path: str, body: dict[str, Any]) -> Any:
    base = stack.sandbox.sage_url if path.startswith("/sandbox/sales") else stack.sandbox.kommo_url
    async with httpx.AsyncClient(base_url=base) as http:
        response = await http.post(path, json=body)
    response.raise_for_status()
    return response.json()


def shown(stack: Stack, lead_id: int, field_id: int) -> Any:
    with stack.sandbox.kommo.state.lock:
        values = stack.sandbox.kommo.state.leads[lead_id].fields.get(field_id)
    return (values[0].get("enum_id") or values[0]["value"]) if values else None


def invoices(stack: Stack, lead_id: int) -> list[Any]:
    prefix = f"KOMMO-{lead_id}"
    with stack.sandbox.sage.state.lock:
        return [i for i in stack.book.invoices.values() if (i.reference or "").startswith(prefix)]


def tasks(stack: Stack, lead_id: int) -> list[Any]:
    with stack.sandbox.kommo.state.lock:
        return [t for t in stack.sandbox.kommo.state.tasks.values() if t.entity_id == lead_id]


def reissued_number(stack: Stack, lead_id: int) -> str | None:
    """The deal's number field once it names the invoice it replaces."""
    number = shown(stack, lead_id, FIELD_INVOICE_NUMBER)
    return number if "replaces" in str(number) else None


def credited(stack: Stack, reference: str) -> bool:
    """The credit note with this reference exists and is set against its invoice."""
    with stack.sandbox.sage.state.lock:
        notes = [n for n in stack.book.credit_notes.values() if n.reference == reference]
        return bool(notes) and notes[0].outstanding_amount == 0


async def invoiced(stack: Stack, lead_id: int, *products: tuple[int, str]) -> Any:
    add_deal(stack, lead_id, *products)
    await move(stack, lead_id, STATUS_RAISE_INVOICE)
    await eventually(lambda: shown(stack, lead_id, FIELD_INVOICE_NUMBER), stack)
    (invoice,) = invoices(stack, lead_id)
    return invoice


async def test_under_the_default_policies_a_change_and_a_loss_become_tasks(stack: Stack) -> None:
    await invoiced(stack, 3100001, (ELEMENT_WIDGET, "3"))
    await invoiced(stack, 3100002, (ELEMENT_WIDGET, "1"))

    relink(stack, 3100001, (ELEMENT_WIDGET, "4"))
    await move(stack, 3100001, STATUS_NEGOTIATION)
    await move(stack, 3100001, STATUS_RAISE_INVOICE)
    await move(stack, 3100002, STATUS_LOST)

    (changed,) = await eventually(lambda: tasks(stack, 3100001), stack)
    (kept,) = await eventually(lambda: tasks(stack, 3100002), stack)
    assert "'Widget': quantity 3 → 4. Nothing was posted." in changed.text
    assert kept.text.startswith("This deal was lost, but Sage invoice")
    assert "changed" in await settled(stack.database_url, 3100001)
    assert "kept" in await settled(stack.database_url, 3100002)
    assert [i.status.value for i in invoices(stack, 3100002)] == ["UNPAID"]
    assert not stack.book.credit_notes


async def test_reissue_and_void_with_the_worker_restarted_under_those_policies(
    stack: Stack,
) -> None:
    stack.start_worker(**REISSUE_AND_VOID)
    old = await invoiced(stack, 3100003, (ELEMENT_WIDGET, "1"))
    paid = await invoiced(stack, 3100004, (ELEMENT_WIDGET, "1"))
    unpaid = await invoiced(stack, 3100005, (ELEMENT_WIDGET, "1"))
    deleted = await invoiced(stack, 3100006, (ELEMENT_WIDGET, "1"))
    await sandbox_post(stack, f"/sandbox/sales_invoices/{paid.id}/payments", {"amount": "23.99"})

    relink(stack, 3100003, (ELEMENT_WIDGET, "2"))
    await move(stack, 3100003, STATUS_NEGOTIATION)
    await move(stack, 3100003, STATUS_RAISE_INVOICE)
    await move(stack, 3100004, STATUS_LOST)
    await move(stack, 3100005, STATUS_LOST)
    await sandbox_post(stack, "/sandbox/leads/3100006/delete", {})

    number = await eventually(lambda: reissued_number(stack, 3100003), stack)
    await eventually(lambda: shown(stack, 3100005, FIELD_PAYMENT_STATUS) == ENUM_VOID, stack)
    await eventually(lambda: deleted.status.value == "VOID", stack)
    await eventually(lambda: tasks(stack, 3100004), stack)

    (note,) = [n for n in stack.book.credit_notes.values() if n.reference == "KOMMO-3100003-CN"]
    new = [i for i in invoices(stack, 3100003) if i.reference == "KOMMO-3100003-R2"]
    replaced = f"replaces {old.invoice_number}, credit note {note.credit_note_number}"
    assert number == f"{new[0].invoice_number} ({replaced})"
    assert (old.status.value, old.outstanding_amount) == ("PAID", Decimal("0.00"))
    assert (unpaid.status.value, unpaid.void_reason) == ("VOID", "Kommo deal 3100005 was lost")
    assert deleted.void_reason == "Kommo deal 3100006 was deleted"
    assert paid.status.value == "PAID"  # paid: never voided
    assert await settled(stack.database_url, 3100004) == ["invoiced", "kept"]


async def test_a_worker_killed_between_the_credit_note_and_the_new_invoice(stack: Stack) -> None:
    """Sage commits the allocation and holds its answer; the worker is killed while it waits.
    A new worker finishes the reissue: one credit note, one allocation, one new invoice."""
    stack.start_worker(**REISSUE_AND_VOID)
    await invoiced(stack, 3100007, (ELEMENT_CONSULTING, "1"))
    faults = stack.sandbox.sage.faults
    faults.timeout_after_commit("POST", "/v3.1/contact_allocations", delay=60)

    relink(stack, 3100007, (ELEMENT_CONSULTING, "2"))
    await move(stack, 3100007, STATUS_NEGOTIATION)
    await move(stack, 3100007, STATUS_RAISE_INVOICE)
    await eventually(lambda: credited(stack, "KOMMO-3100007-CN"), stack)
    assert [i.reference for i in invoices(stack, 3100007)] == ["KOMMO-3100007"]
    stack.kill_worker()
    faults.clear()
    stack.start_worker(**REISSUE_AND_VOID)

    await eventually(lambda: reissued_number(stack, 3100007), stack, timeout=60)
    assert "reissued" in await settled(stack.database_url, 3100007)
    notes = [n for n in stack.book.credit_notes.values() if n.reference == "KOMMO-3100007-CN"]
    allocations = [
        a
        for a in stack.book.allocations.values()
        if any(key == notes[0].id for _, key, _ in a.artefacts)
    ]
    assert (len(notes), len(allocations)) == (1, 1)
    assert [i.reference for i in invoices(stack, 3100007)] == ["KOMMO-3100007", "KOMMO-3100007-R2"]


async def test_money_on_the_deals_after_part_payment_full_payment_and_a_credit_note(
    stack: Stack,
) -> None:
    """One status poll brings all three to their deals: ops ask for it (POST /ops/status/poll)
    rather than wait for the worker's, which comes at most once a minute."""
    stack.start_worker(**REISSUE_AND_VOID)
    part = await invoiced(stack, 3100008, (ELEMENT_WIDGET, "1"))
    full = await invoiced(stack, 3100009, (ELEMENT_WIDGET, "1"))
    credit = await invoiced(stack, 3100010, (ELEMENT_WIDGET, "1"))
    base = "/sandbox/sales_invoices"
    await sandbox_post(stack, f"{base}/{part.id}/payments", {"amount": "10.00"})
    await sandbox_post(stack, f"{base}/{full.id}/payments", {"amount": "23.99"})
    await sandbox_post(stack, f"{base}/{credit.id}/credit_notes", {"amount": "5.00"})

    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        polled = await http.post(
            "/ops/status/poll", headers={"Authorization": f"Bearer {MONEY['OPS_API_TOKEN']}"}
        )
    # `written` counts deal updates (0 if the worker's own poll came first); the fields below
    # are what the poll must have brought.
    assert polled.status_code == 200 and isinstance(polled.json()["written"], int), polled.text
    assert shown(stack, 3100010, FIELD_CREDIT_NOTES) is not None
    paid = (FIELD_PAYMENT_STATUS, FIELD_AMOUNT_PAID, FIELD_AMOUNT_OUTSTANDING)
    credit_shown = (FIELD_PAYMENT_STATUS, FIELD_AMOUNT_OUTSTANDING, FIELD_CREDITED_AMOUNT)
    assert [shown(stack, 3100008, f) for f in paid] == [ENUM_PART_PAID, "10.00", "13.99"]
    assert [shown(stack, 3100009, f) for f in paid] == [ENUM_PAID, "23.99", "0.00"]
    assert [shown(stack, 3100010, f) for f in credit_shown] == [ENUM_PART_PAID, "18.99", "5.00"]
    assert shown(stack, 3100010, FIELD_CREDIT_NOTES).startswith("SCN-")


async def test_the_report_from_the_command_line_finds_what_was_planted(stack: Stack) -> None:
    add_deal(stack, 3100011, (ELEMENT_WIDGET, "1"))
    await move(stack, 3100011, STATUS_WON)  # won, never through the invoice stage
    duplicate = {
        "contact_id": invoices(stack, 3100008)[0].contact_id,
        "date": utcnow().date().isoformat(),
        "reference": "KOMMO-3100008",
        "invoice_lines": [
            {
                "description": "Widget",
                "ledger_account_id": invoices(stack, 3100008)[0].lines[0].ledger_account_id,
                "quantity": "1",
                "unit_price": "19.99",
                "tax_rate_id": "GB_STANDARD",
                "tax_amount": "4.00",
            }
        ],
    }
    headers = {"Authorization": "Bearer sandbox-sage-token", "X-Business": SAGE_BUSINESS_ID}
    async with httpx.AsyncClient(base_url=stack.sandbox.sage_api_url, headers=headers) as http:
        planted = (await http.post("/sales_invoices", json={"sales_invoice": duplicate})).json()

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        "reconcile",
        "report",
        "--json",
        cwd=ROOT,
        env={**stack.env, "LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)

    assert proc.returncode == 1, err.decode()
    report = json.loads(out)
    assert sorted((r["kind"], r["deal_id"], r["action"]) for r in report["rows"]) == [
        ("amount_drift", "3100001", "replay"),  # changed under the task policy, left as is
        ("duplicate_reference", "3100008", "open_invoice"),
        ("not_invoiced", "3100011", "open_deal"),
    ]
    (row,) = [r for r in report["rows"] if r["kind"] == "duplicate_reference"]
    assert row["invoice_id"] == planted["id"]
    async with httpx.AsyncClient(base_url=stack.api_url) as http:
        latest = await http.get(
            "/ops/reconciliation", headers={"Authorization": f"Bearer {MONEY['OPS_API_TOKEN']}"}
        )
    assert latest.json()["id"] == report["id"]
