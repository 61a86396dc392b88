"""``/contact_payments``: customer receipts allocated to sales invoices."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from sandbox.sage import render
from sandbox.sage.deps import BodyDep, BookDep, SandboxDep
from sandbox.sage.errors import SageError
from sandbox.sage.idempotency import create_once
from sandbox.sage.payments import record_payment

router = APIRouter(prefix="/v3.1", tags=["sage contact payments"])


@router.post("/contact_payments", status_code=201)
async def post_contact_payment(body: BodyDep, book: BookDep, sandbox: SandboxDep) -> JSONResponse:
    def create(data: dict[str, Any]) -> dict[str, Any]:
        return render.payment(book, record_payment(book, data, now=sandbox.state.now()))

    return create_once(
        sandbox,
        book,
        body,
        entity="contact_payment",
        definition="postContactPayments",
        create=create,
    )


@router.get("/contact_payments/{key}")
def get_contact_payment(key: str, book: BookDep, sandbox: SandboxDep) -> dict[str, Any]:
    with sandbox.state.lock:
        payment = book.payments.get(key)
        if payment is None:
            raise SageError.not_found()
        return render.payment(book, payment)
