"""Creating contacts with Sage's rules (customer/vendor types, unique reference)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sandbox.common.ids import new_hex_id
from sandbox.sage.errors import SageError
from sandbox.sage.models import CONTACT_TYPE_NAMES, Book, Contact, ContactPerson

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_HANDLED = frozenset(
    {
        "name",
        "reference",
        "contact_type_ids",
        "main_contact_person",
        "idempotency_id",
        "currency_id",
        "credit_days",
    }
)
_LINKED = {
    "default_sales_ledger_account_id": "ledger_accounts",
    "default_purchase_ledger_account_id": "ledger_accounts",
    "default_sales_tax_rate_id": "tax_rates",
}


def create_contact(book: Book, data: dict[str, Any], *, now: datetime) -> Contact:
    """``data`` is the schema-valid ``contact`` namespace of a POST /contacts body."""
    _check_types(data["contact_type_ids"])
    _check_links(book, data)
    currency = _currency(book, data.get("currency_id"))
    reference = _reference(book, data)
    contact = Contact(
        id=new_hex_id(),
        name=data["name"],
        reference=reference,
        contact_type_ids=list(data["contact_type_ids"]),
        main_contact_person=_person(data.get("main_contact_person")),
        created_at=now,
        updated_at=now,
        currency_id=currency,
        credit_days=data.get("credit_days"),
        extra={k: v for k, v in data.items() if k not in _HANDLED},
    )
    book.contacts[contact.id] = contact
    return contact


def customer_for(book: Book, contact_id: str, *, source: str) -> Contact:
    """The contact behind an artefact's ``contact_id``: it must exist and be a customer."""
    contact = book.contacts.get(contact_id)
    if contact is None:
        raise SageError.not_found(source)
    if not contact.is_customer:
        raise SageError.invalid("Couldn't find Customer.", source)
    return contact


def _currency(book: Book, currency_id: str | None) -> str | None:
    """A contact may trade in a foreign currency only with multi-currency on (UNCONFIRMED
    message text; Sage's knowledge base says the feature must be enabled first)."""
    business = book.business
    if currency_id is None or currency_id == business.currency_id:
        return None
    if not business.multi_currency_enabled:
        raise SageError.invalid("Multi-currency is not enabled for this business.", "currency_id")
    if currency_id not in business.exchange_rates:
        raise SageError.not_found("currency_id")
    return str(currency_id)


def _check_types(type_ids: list[str]) -> None:
    if not type_ids:
        raise SageError.invalid("contact_type_ids can't be blank", "contact_type_ids")
    unknown = [t for t in type_ids if t not in CONTACT_TYPE_NAMES]
    if unknown:
        message = f"A contact has to be either CUSTOMER or VENDOR, not {', '.join(unknown)}"
        raise SageError.invalid(message, "contact_type_ids")


def _check_links(book: Book, data: dict[str, Any]) -> None:
    for key, collection in _LINKED.items():
        if key in data and data[key] not in getattr(book, collection):
            raise SageError.not_found(key)


def _reference(book: Book, data: dict[str, Any]) -> str:
    wanted = data.get("reference")
    taken = {c.reference.upper() for c in book.contacts.values()}
    if wanted:
        if wanted.upper() in taken:
            raise SageError.invalid("Reference has already been taken", "reference")
        return str(wanted)
    return _generated_reference(data["name"], taken)


def _generated_reference(name: str, taken: set[str]) -> str:
    """Sage suggests references like GRACEH001 from the name; we do the same, uniquely."""
    stem = re.sub(r"[^A-Z0-9]", "", name.upper())[:6] or "CONT"
    number = 1
    while f"{stem}{number:03d}" in taken:
        number += 1
    return f"{stem}{number:03d}"


def _person(raw: dict[str, Any] | None) -> ContactPerson | None:
    if raw is None:
        return None
    email = raw.get("email")
    if email is not None and not _EMAIL.match(email):
        raise SageError.invalid("Email is invalid", "main_contact_person.email")
    return ContactPerson(
        id=new_hex_id(),
        name=raw.get("name"),
        email=email,
        telephone=raw.get("telephone"),
        mobile=raw.get("mobile"),
        job_title=raw.get("job_title"),
    )
