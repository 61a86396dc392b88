"""Read-only reference data: businesses, ledger accounts, tax rates, statuses, bank accounts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from sandbox.sage import render
from sandbox.sage.deps import AuthDep, BookDep, SandboxDep
from sandbox.sage.errors import SageError
from sandbox.sage.listing import listed
from sandbox.sage.models import Status

router = APIRouter(prefix="/v3.1", tags=["sage reference data"])
# The User Accounts API's documented example spells the page size this way.
BUSINESSES_SIZE_KEY = "$items_per_page"
ALL_BUSINESSES = 2147483647


@router.get("/businesses")
def list_businesses(request: Request, sandbox: SandboxDep, _auth: AuthDep) -> dict[str, Any]:
    state = sandbox.state
    with state.lock:
        items = [render.business(state.books[key].business) for key in state.granted]
    return {
        "$total": len(items),
        "$page": 1,
        "$next": None,
        "$back": None,
        BUSINESSES_SIZE_KEY: ALL_BUSINESSES,
        "$items": [render.project(i, request.query_params.get("attributes")) for i in items],
    }


@router.get("/businesses/{key}")
def get_business(key: str, sandbox: SandboxDep, _auth: AuthDep) -> dict[str, Any]:
    with sandbox.state.lock:
        return render.business(sandbox.state.book_for(key).business)


@router.get("/financial_settings")
def get_financial_settings(book: BookDep, sandbox: SandboxDep) -> dict[str, Any]:
    with sandbox.state.lock:
        return render.financial_settings(book.business)


@router.get("/ledger_accounts")
def list_ledger_accounts(request: Request, book: BookDep, sandbox: SandboxDep) -> dict[str, Any]:
    params = request.query_params
    visible_in, type_id = params.get("visible_in"), params.get("ledger_account_type_id")
    search = (params.get("search") or "").lower()
    with sandbox.state.lock:
        accounts = [
            render.ledger_account(book, account)
            for account in book.ledger_accounts.values()
            if (not visible_in or visible_in in account.visible_scopes)
            and (not type_id or account.type_id == type_id)
            and (search in account.name.lower() or search in str(account.nominal_code))
        ]
    return listed(request, "/ledger_accounts", accounts, sandbox.config.default_items_per_page)


@router.get("/ledger_accounts/{key}")
def get_ledger_account(key: str, book: BookDep, sandbox: SandboxDep) -> dict[str, Any]:
    with sandbox.state.lock:
        account = book.ledger_accounts.get(key)
        if account is None:
            raise SageError.not_found()
        return render.ledger_account(book, account)


@router.get("/tax_rates")
def list_tax_rates(request: Request, book: BookDep, sandbox: SandboxDep) -> dict[str, Any]:
    with sandbox.state.lock:
        rates = [render.tax_rate(rate) for rate in book.tax_rates.values()]
    return listed(request, "/tax_rates", rates, sandbox.config.default_items_per_page)


@router.get("/tax_rates/{key}")
def get_tax_rate(key: str, book: BookDep, sandbox: SandboxDep) -> dict[str, Any]:
    with sandbox.state.lock:
        rate = book.tax_rates.get(key)
        if rate is None:
            raise SageError.not_found()
        return render.tax_rate(rate)


@router.get("/artefact_statuses")
def list_artefact_statuses(request: Request, _book: BookDep, sandbox: SandboxDep) -> dict[str, Any]:
    return listed(
        request,
        "/artefact_statuses",
        [render.status_ref(s) for s in Status],
        sandbox.config.default_items_per_page,
    )


@router.get("/bank_accounts")
def list_bank_accounts(request: Request, book: BookDep, sandbox: SandboxDep) -> dict[str, Any]:
    with sandbox.state.lock:
        accounts = [render.bank_account(account) for account in book.bank_accounts.values()]
    return listed(request, "/bank_accounts", accounts, sandbox.config.default_items_per_page)
