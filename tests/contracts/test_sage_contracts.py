"""Every Sage body the bridge reads, as Sage documents it (tests/contracts/sage/*.json, each
naming its source), parsed by the client's own code: as published, with every attribute the
bridge does not need set to null and removed, and with unknown keys added everywhere. Only what
the bridge needs (listed in the fixture's `required` / `not_null`) may fail, and then with an
error naming the entity and the field."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.clients.sage.adapter import money
from app.clients.sage.client import _raise_for_status
from app.clients.sage.errors import SageRequestError, SageResponseError, SageTransientError
from app.clients.sage.schemas import (
    Base,
    Contact,
    ContactAllocation,
    FinancialSettings,
    InvoiceState,
    LedgerAccount,
    SalesCreditNote,
    SalesInvoice,
    TaxRate,
    read,
    read_page,
)
from app.connections.errors import InvalidGrant, OAuthTransientError
from app.connections.oauth import BusinessPage, TokenResponse, _parse, raise_for_token_error
from app.domain import InvoiceMoney

FIXTURES = Path(__file__).parent / "sage"
Path_ = tuple[str | int, ...]


def _oauth(model: type[Any]) -> Callable[[Any], Any]:
    return lambda body: _parse("sage", model, httpx.Response(200, json=body))


PARSERS: dict[str, Callable[[Any], Any]] = {
    "contact": lambda body: read(Contact, body),
    "contacts": lambda body: read_page(Contact, body),
    "sales_invoice": lambda body: read(SalesInvoice, body),
    "sales_invoices": lambda body: read_page(SalesInvoice, body),
    "sales_credit_note": lambda body: read(SalesCreditNote, body),
    "sales_credit_notes": lambda body: read_page(SalesCreditNote, body),
    "contact_allocation": lambda body: read(ContactAllocation, body),
    "invoice_states": lambda body: read_page(InvoiceState, body),
    "statuses": lambda body: read_page(Base, body),
    "ledger_accounts": lambda body: read_page(LedgerAccount, body),
    "tax_rates": lambda body: read_page(TaxRate, body),
    "financial_settings": lambda body: read(FinancialSettings, body),
    "businesses": _oauth(BusinessPage),
    "token": _oauth(TokenResponse),
}
PARSE_ERRORS = (SageResponseError, OAuthTransientError)


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def names(*parsers: str) -> list[str]:
    found = sorted(p.name for p in FIXTURES.glob("*.json") if load(p.name)["parser"] in parsers)
    assert found, parsers
    return found


def test_every_fixture_names_its_source_and_a_known_parser() -> None:
    for path in FIXTURES.glob("*.json"):
        fixture = load(path.name)
        assert len(fixture["source"]) > 40, path.name
        assert fixture["parser"] in {*PARSERS, "errors", "token_error"}, path.name
        assert fixture["request"] and isinstance(fixture["status"], int), path.name


def paths(value: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every key of every object in `value`, depth first."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


def matches(path: Path_, patterns: list[str]) -> bool:
    text = ".".join("*" if isinstance(p, int) else p for p in path)
    return text in patterns


def changed(body: Any, path: Path_, *, remove: bool) -> Any:
    copied = copy.deepcopy(body)
    parent = copied
    for part in path[:-1]:
        parent = parent[part]
    if remove:
        del parent[path[-1]]
    else:
        parent[path[-1]] = None
    return copied


def with_unknown_keys(value: Any) -> Any:
    if isinstance(value, dict):
        extra = {"x_added_by_sage": {"nested": [1, None, "two"]}, "x_flag": None}
        return {**{k: with_unknown_keys(v) for k, v in value.items()}, **extra}
    if isinstance(value, list):
        return [with_unknown_keys(v) for v in value]
    return value


def assert_names_the_field(exc: Exception, path: Path_) -> None:
    text = str(exc)
    assert str(path[-1] if isinstance(path[-1], str) else path[-2]) in text, text
    assert "validation error" not in text.lower() and "pydantic" not in text.lower(), text
    if isinstance(exc, SageResponseError):
        assert text.startswith("sage: Sage's ") and "cannot be read" in text, text


@pytest.mark.parametrize("name", names(*PARSERS))
def test_fixture_parses_as_published_and_with_unknown_keys(name: str) -> None:
    fixture = load(name)
    parse = PARSERS[fixture["parser"]]

    parsed = parse(fixture["body"])

    assert parse(with_unknown_keys(fixture["body"])) == parsed


@pytest.mark.parametrize("name", names(*PARSERS))
def test_only_what_the_bridge_needs_may_be_null_or_missing(name: str) -> None:
    fixture = load(name)
    parse = PARSERS[fixture["parser"]]
    required, not_null = fixture["required"], fixture["required"] + fixture["not_null"]
    for path in paths(fixture["body"]):
        for remove, must_fail in (
            (False, matches(path, not_null)),
            (True, matches(path, required)),
        ):
            variant = changed(fixture["body"], path, remove=remove)
            if not must_fail:
                parse(variant)
                continue
            with pytest.raises(PARSE_ERRORS) as caught:
                parse(variant)
            assert_names_the_field(caught.value, path)


def test_what_the_bridge_reads_from_the_documented_bodies() -> None:
    contact = read_page(Contact, load("contacts_by_email.json")["body"]).items[0]
    assert (contact.is_customer, contact.emails) == (True, {"person@greatexample.inc"})
    assert (contact.currency and contact.currency.id, contact.credit_days) == ("USD", 15)
    invoice = read(SalesInvoice, load("sales_invoice_created.json")["body"])
    assert (invoice.net_amount, invoice.tax_amount, invoice.total_amount) == (
        Decimal("294.0"),
        Decimal("27.2"),
        Decimal("321.2"),
    )
    assert (invoice.due_date, invoice.reference, invoice.status and invoice.status.id) == (
        date(2018, 7, 20),
        "AB-123",
        "DRAFT",
    )
    rates = read_page(TaxRate, load("tax_rates.json")["body"]).items
    assert [(r.id, r.percentage) for r in rates] == [
        ("adac0c97738211e8863412a7e3287944", Decimal("9.25")),
        ("95670c34738211e8863412a7e3287944", Decimal("0.0")),
    ]
    settings = read(FinancialSettings, load("financial_settings.json")["body"])
    assert (settings.base_currency.id, settings.multi_currency_enabled) == ("GBP", False)
    deleted = read_page(InvoiceState, load("sales_invoices_deleted.json")["body"]).items
    assert [(d.id, d.deleted_at, d.updated_at) for d in deleted] == [
        ("e5aff2cd745011e8863412a7e3287944", None, None)
    ]


ERROR_CLASSES = {
    400: SageRequestError,
    401: SageTransientError,
    403: SageRequestError,
    404: SageRequestError,
    422: SageRequestError,
    429: SageTransientError,
    500: SageTransientError,
}


def error_variants(body: list[dict[str, Any]]) -> Iterator[Any]:
    yield body
    yield with_unknown_keys(body)
    for path in paths(body):
        yield changed(body, path, remove=True)
        yield changed(body, path, remove=False)


@pytest.mark.parametrize("name", names("errors"))
def test_error_arrays_become_the_right_error_quoting_sage(name: str) -> None:
    fixture = load(name)
    status, (error,) = fixture["status"], fixture["body"]
    for variant in error_variants(fixture["body"]):
        response = httpx.Response(status, json=variant)
        with pytest.raises(ERROR_CLASSES[status]) as caught:
            _raise_for_status("POST", "/sales_invoices", response)
        assert isinstance(caught.value, SageRequestError | SageTransientError)
        text = caught.value.detail
        assert text.startswith(f"POST /sales_invoices → {status}: ") and "None" not in text
        if variant is fixture["body"]:
            assert f"{error['$dataCode']}: {error['$message']}" in text


def test_token_refusal_is_a_dead_grant() -> None:
    fixture = load("token_error_invalid_grant.json")
    with pytest.raises(InvalidGrant, match=re.escape("invalid_grant")):
        raise_for_token_error("sage", httpx.Response(fixture["status"], json=fixture["body"]))


def test_what_the_bridge_reads_of_the_money_on_an_invoice_and_a_credit_note() -> None:
    """Receipts are paid, allocations of credit notes are credited; a credit note's number and
    what is left of it; a void answer's status."""
    invoice = read(SalesInvoice, load("sales_invoice_part_paid_and_credited.json")["body"])
    assert money(invoice, invoice.total_amount) == InvoiceMoney(
        total=Decimal("321.2"),
        paid=Decimal("100.0"),
        credited=Decimal("50.0"),
        outstanding=Decimal("171.2"),
        last_payment=date(2018, 6, 22),
        credit_notes=("SCN-1",),
    )
    note = read(SalesCreditNote, load("sales_credit_note_created.json")["body"])
    assert (note.credit_note_number, note.reference, note.outstanding_amount) == (
        "SCN-1",
        "AB-123-CN",
        Decimal("321.2"),
    )
    voided = read(SalesInvoice, load("sales_invoice_voided.json")["body"])
    assert (voided.status and voided.status.id, voided.void_reason) == (
        "VOID",
        "Invoice was created by accident",
    )


def test_without_payments_allocations_everything_paid_counts_as_paid() -> None:
    body = load("sales_invoice_part_paid_and_credited.json")["body"]
    del body["payments_allocations"]
    invoice = read(SalesInvoice, body)

    assert money(invoice, invoice.total_amount) == InvoiceMoney(
        total=Decimal("321.2"),
        paid=Decimal("150.0"),
        outstanding=Decimal("171.2"),
        last_payment=date(2018, 6, 25),
    )
