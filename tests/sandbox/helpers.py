"""Test helpers for the sandbox simulators."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from sandbox.seed import (
    LEDGER_SALES_A,
    LEDGER_SERVICES,
    SAGE_GRACE_CONTACT,
)

START = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
SAGE_BASE = "http://sage.test/v3.1"
KOMMO_BASE = "http://sandbox.kommo.test"


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, start: datetime = START) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


def invoice_body(**overrides: Any) -> dict[str, Any]:
    """A valid POST /sales_invoices body for Grace Hopper: 2.5 h consulting + 3 widgets."""
    invoice: dict[str, Any] = {
        "contact_id": SAGE_GRACE_CONTACT,
        "date": "2024-05-01",
        "reference": "KOMMO-LEAD-3000002",
        "invoice_lines": [
            {
                "description": "Consulting hour",
                "ledger_account_id": LEDGER_SERVICES,
                "quantity": 2.5,
                "unit_price": 120.00,
                "tax_rate_id": "GB_STANDARD",
                "tax_amount": 60.00,
            },
            {
                "description": "Widget",
                "ledger_account_id": LEDGER_SALES_A,
                "quantity": 3,
                "unit_price": 19.99,
                "tax_rate_id": "GB_STANDARD",
                "tax_amount": 11.99,
            },
        ],
    }
    invoice.update(overrides)
    return {"sales_invoice": invoice}


def sage_errors(response: httpx.Response) -> list[tuple[str, str]]:
    """(dataCode, source) of each item of a Sage error array."""
    body = response.json()
    assert isinstance(body, list)
    assert all(item["$severity"] == "error" for item in body)
    return [(item["$dataCode"], item["$source"]) for item in body]


@dataclass(frozen=True)
class ReceivedHook:
    path: str
    headers: dict[str, str]
    body: bytes


class HookReceiver:
    """A webhook endpoint to serve over HTTP: records what arrives, answers as told."""

    def __init__(self) -> None:
        self.calls: list[ReceivedHook] = []
        self.status = 200
        self.delay = 0.0
        self.app = FastAPI()
        self.app.add_api_route("/{path:path}", self._receive, methods=["POST"])

    async def _receive(self, path: str, request: Request) -> Response:
        body = await request.body()
        self.calls.append(ReceivedHook(f"/{path}", dict(request.headers), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        return Response(status_code=self.status)
