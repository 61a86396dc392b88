"""Signed status callbacks from a Sage product or relay (Sage Accounting itself has no webhooks).

Signatures follow the Standard Webhooks scheme (`webhook-id`, `webhook-timestamp`,
`webhook-signature`: HMAC-SHA256 of `id.timestamp.body`, ±5 minutes), verified with the
`standardwebhooks` package. Several secrets may be configured so keys can rotate.

Body (JSON):
    {"type": "sales_invoice.updated" | "sales_invoice.deleted",
     "data": {"id": "<sales invoice id>", "status": {"id": "PAID"}, "due_date": "2026-12-01",
              "outstanding_amount": 0.0, "updated_at": "2026-11-22T10:00:00+00:00"}}
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.domain import InvoiceStatus

MAX_WEBHOOK_ID = 128  # it becomes part of the inbox's dedupe key
# Sage ids are 32 hex characters and status ids short words (PAID, VOID, …); the bounds keep
# a signed but broken sender from storing an event that names no invoice, or a huge one.
MAX_ID = 64


class CallbackError(ValueError):
    """The callback is not acceptable; the message says why."""


class _Status(BaseModel):
    id: str = Field(min_length=1, max_length=MAX_ID, pattern=r"\S")


class _Invoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=MAX_ID, pattern=r"\S")
    status: _Status | None = None
    due_date: dt.date | None = None
    outstanding_amount: Decimal | None = Field(default=None, max_digits=20, decimal_places=6)
    updated_at: dt.datetime


class _Callback(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["sales_invoice.updated", "sales_invoice.deleted"]
    data: _Invoice


def verify_signature(body: bytes, headers: Mapping[str, str], secrets: list[str]) -> str:
    """Return the callback's `webhook-id` if any secret signed it within the time tolerance."""
    wanted = {
        k: headers.get(k, "") for k in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    if len(wanted["webhook-id"]) > MAX_WEBHOOK_ID:
        raise CallbackError(f"webhook-id is longer than {MAX_WEBHOOK_ID} characters")
    for secret in secrets:
        try:
            Webhook(secret).verify(body, wanted, json_parse=False)
        except WebhookVerificationError as exc:
            reason = str(exc)
            if "timestamp" in reason.lower() or "headers" in reason.lower():
                raise CallbackError(reason) from exc
            continue
        except ValueError as exc:  # malformed base64 or signature list
            raise CallbackError("malformed webhook-signature header") from exc
        return wanted["webhook-id"]
    raise CallbackError("no matching signature")


def parse_callback(body: bytes) -> InvoiceStatus:
    try:
        callback = _Callback.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise CallbackError(f"invalid callback body: {problems}") from exc
    invoice, deleted = callback.data, callback.type == "sales_invoice.deleted"
    if not deleted and invoice.status is None:
        raise CallbackError("invalid callback body: data.status is required for updates")
    updated_at = invoice.updated_at
    if updated_at.tzinfo is None:
        raise CallbackError("invalid callback body: data.updated_at needs a UTC offset")
    return InvoiceStatus(
        invoice_id=invoice.id,
        status_id="VOID" if deleted else invoice.status.id if invoice.status else "",
        updated_at=updated_at.astimezone(dt.UTC),
        due_date=invoice.due_date,
        outstanding_amount=invoice.outstanding_amount,
        deleted=deleted,
    )
