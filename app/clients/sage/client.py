"""Sage Business Cloud Accounting v3.1 client: typed, keyword-only, X-Business on every call."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from app.clients.http import retry_after_seconds, send
from app.clients.sage.errors import SageRequestError, SageTransientError
from app.clients.sage.schemas import (
    Base,
    Contact,
    ContactAllocation,
    FinancialSettings,
    InvoiceState,
    LedgerAccount,
    PostContact,
    PostContactAllocation,
    PostSalesCreditNote,
    PostSalesInvoice,
    SalesCreditNote,
    SalesInvoice,
    TaxRate,
    read,
    read_page,
)

UPSTREAM = "sage"
MAX_PAGE = 200
M = TypeVar("M", bound=Base)
CONTACT_ATTRIBUTES = "contact_types,email,main_contact_person,currency,credit_days"
INVOICE_ATTRIBUTES = (
    "invoice_number,reference,date,due_date,net_amount,tax_amount,total_amount,currency,"
    "status,links"
)
CREDIT_NOTE_ATTRIBUTES = (
    "credit_note_number,reference,total_amount,outstanding_amount,status,contact"
)


class SageClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def find_contacts(self, *, email: str) -> list[Contact]:
        params = {"email": email, "attributes": CONTACT_ATTRIBUTES}
        return await self._list("/contacts", params, Contact)

    async def create_contact(self, *, body: PostContact) -> Contact:
        return read(Contact, await self._post("/contacts", body))

    async def find_sales_invoices(self, *, search: str) -> list[SalesInvoice]:
        params = {"search": search, "attributes": INVOICE_ATTRIBUTES}
        return await self._list("/sales_invoices", params, SalesInvoice)

    async def create_sales_invoice(self, *, body: PostSalesInvoice) -> SalesInvoice:
        return read(SalesInvoice, await self._post("/sales_invoices", body))

    async def get_sales_invoice(self, *, invoice_id: str) -> SalesInvoice | None:
        """The whole invoice (Sage's guide: a single GET returns "a very long response"); None
        when Sage has no such invoice (deleted)."""
        return await self._get_one(f"/sales_invoices/{invoice_id}", SalesInvoice)

    async def void_sales_invoice(self, *, invoice_id: str, void_reason: str) -> SalesInvoice:
        """DELETE with `void_reason` both where the spec puts it (the query) and where Sage's
        invoicing guide sends it (a JSON body), so either reading of it finds it."""
        path = f"/sales_invoices/{invoice_id}"
        response = await self._request(
            "DELETE", path, params={"void_reason": void_reason}, json={"void_reason": void_reason}
        )
        return read(SalesInvoice, _json(response))

    async def referenced_sales_invoices(
        self, *, search: str, from_date: date
    ) -> list[SalesInvoice]:
        params = {
            "search": search,
            "from_date": from_date.isoformat(),
            "attributes": INVOICE_ATTRIBUTES,
        }
        return await self._list("/sales_invoices", params, SalesInvoice)

    async def find_sales_credit_notes(self, *, search: str) -> list[SalesCreditNote]:
        params = {"search": search, "attributes": CREDIT_NOTE_ATTRIBUTES}
        return await self._list("/sales_credit_notes", params, SalesCreditNote)

    async def get_sales_credit_note(self, *, credit_note_id: str) -> SalesCreditNote | None:
        return await self._get_one(f"/sales_credit_notes/{credit_note_id}", SalesCreditNote)

    async def create_sales_credit_note(self, *, body: PostSalesCreditNote) -> SalesCreditNote:
        return read(SalesCreditNote, await self._post("/sales_credit_notes", body))

    async def create_contact_allocation(self, *, body: PostContactAllocation) -> ContactAllocation:
        return read(ContactAllocation, await self._post("/contact_allocations", body))

    async def financial_settings(self) -> FinancialSettings:
        """The business's base currency and whether it may invoice in others."""
        return read(FinancialSettings, (await self._request("GET", "/financial_settings")).json())

    async def changed_sales_invoices(
        self, *, since: datetime, max_pages: int = 5
    ) -> list[InvoiceState]:
        """Invoices created or updated at or after `since` (Sage's filter is inclusive), oldest
        first, at most `max_pages` pages: the caller's watermark moves to the newest seen."""
        params = {
            "updated_or_created_since": since.isoformat(timespec="seconds"),
            "attributes": "all",
            "sort": "updated_at",
        }
        return await self._list("/sales_invoices", params, InvoiceState, max_pages=max_pages)

    async def deleted_sales_invoices(self, *, since: datetime) -> list[InvoiceState]:
        """Invoices deleted after `since` (exclusive)."""
        params = {"deleted_since": since.isoformat(timespec="seconds"), "attributes": "all"}
        return await self._list("/sales_invoices", params, InvoiceState)

    async def artefact_status_ids(self) -> set[str]:
        return {s.id for s in await self._list("/artefact_statuses", {}, Base)}

    async def sales_ledger_accounts(self) -> list[LedgerAccount]:
        """Ledger accounts an invoice line may use: Sage requires `visible_in=sales`."""
        params = {"visible_in": "sales", "attributes": "name,nominal_code"}
        return await self._list("/ledger_accounts", params, LedgerAccount)

    async def list_tax_rates(self) -> list[TaxRate]:
        return await self._list("/tax_rates", {"attributes": "name,percentage"}, TaxRate)

    async def _list(
        self, path: str, params: dict[str, Any], model: type[M], *, max_pages: int = 50
    ) -> list[M]:
        query = {**params, "items_per_page": MAX_PAGE, "page": 1}
        items: list[M] = []
        while True:
            response = await self._request("GET", path, params=query)
            page = read_page(model, _json(response))
            items.extend(page.items)
            if not page.next or not page.items or query["page"] >= max_pages:
                return items
            query["page"] += 1

    async def _get_one(self, path: str, model: type[M]) -> M | None:
        try:
            response = await self._request("GET", path)
        except SageRequestError as exc:
            if exc.status == 404:
                return None
            raise
        return read(model, _json(response))

    async def _post(self, path: str, body: BaseModel) -> Any:
        payload = _json_numbers(body.model_dump(mode="python", exclude_none=True))
        return _json(await self._request("POST", path, json=payload))

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await send(
            self._http, UPSTREAM, method, path, transient=SageTransientError, **kwargs
        )
        _raise_for_status(method, path, response)
        return response


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _json_numbers(value: Any) -> Any:
    """Decimals as decimal strings, exactly as held ("2.5", "19.99", "60.00"): Sage's invoicing
    guide asks for strings ("Floating point representations in JSON can be tricky")."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _raise_for_status(method: str, path: str, response: httpx.Response) -> None:
    status = response.status_code
    if status < 300:
        return
    detail = f"{method} {path} → {status}: {sage_messages(response)}"
    # 401 even after the auth flow's one forced refresh is a token race or a grant about to be
    # marked dead: the ladder (or parking) fits it; no sales manager can fix it.
    if status in (401, 429) or status >= 500:
        raise SageTransientError(
            UPSTREAM, detail, status=status, retry_after=retry_after_seconds(response)
        )
    raise SageRequestError(UPSTREAM, detail, status=status)


def sage_messages(response: httpx.Response) -> str:
    """Sage's error array `[{"$severity","$dataCode","$message","$source"}]` as one sentence."""
    try:
        errors = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(errors, dict):
        errors = [errors]
    if not isinstance(errors, list):
        return str(errors)[:200]
    parts = []
    for err in errors:
        if isinstance(err, dict):
            source = f" ({err['$source']})" if err.get("$source") else ""
            code, message = err.get("$dataCode") or "Error", err.get("$message") or ""
            parts.append(f"{code}: {message}{source}")
    return "; ".join(parts) or response.reason_phrase
