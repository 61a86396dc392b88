"""The records a simulated Kommo account holds. Timestamps are unix seconds, as Kommo's."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

# Kommo's system stages, present in every pipeline.
WON_STATUS_ID = 142
LOST_STATUS_ID = 143

# A stored custom-field value list, exactly as the API shows ``values``.
FieldValues = list[dict[str, Any]]


@dataclass
class Account:
    id: int
    subdomain: str
    name: str
    created_at: int
    # "Currency specified in the account settings" (Kommo's account-parameters page).
    currency: str | None = None
    currency_symbol: str | None = None


@dataclass
class User:
    id: int
    name: str
    email: str


@dataclass
class Status:
    id: int
    name: str
    sort: int
    color: str
    pipeline_id: int


@dataclass
class Pipeline:
    id: int
    name: str
    sort: int
    is_main: bool
    statuses: list[Status] = field(default_factory=list)

    def status(self, status_id: int) -> Status | None:
        return next((s for s in self.statuses if s.id == status_id), None)


@dataclass
class EnumOption:
    id: int
    value: str
    sort: int
    code: str | None = None


@dataclass
class CustomField:
    id: int
    name: str
    type: str
    code: str | None
    sort: int
    entity_type: str
    enums: list[EnumOption] = field(default_factory=list)
    catalog_id: int | None = None

    def enum(self, enum_id: object) -> EnumOption | None:
        return next((e for e in self.enums if e.id == enum_id), None)


@dataclass
class Contact:
    id: int
    name: str
    first_name: str
    last_name: str
    responsible_user_id: int
    created_by: int
    created_at: int
    updated_at: int
    fields: dict[int, FieldValues] = field(default_factory=dict)


@dataclass
class CatalogElement:
    id: int
    catalog_id: int
    name: str
    created_by: int
    created_at: int
    updated_at: int
    fields: dict[int, FieldValues] = field(default_factory=dict)
    # Kommo's own element examples show null for a live element; true only once deleted.
    is_deleted: bool | None = None


@dataclass
class Catalog:
    id: int
    name: str
    type: str
    sort: int
    created_by: int
    created_at: int
    fields: dict[int, CustomField] = field(default_factory=dict)
    elements: dict[int, CatalogElement] = field(default_factory=dict)


@dataclass(frozen=True)
class ContactLink:
    contact_id: int
    is_main: bool


@dataclass(frozen=True)
class ElementLink:
    element_id: int
    catalog_id: int
    quantity: Decimal
    price_id: int | None = None


@dataclass
class Lead:
    id: int
    name: str
    price: int
    responsible_user_id: int
    status_id: int
    pipeline_id: int
    created_by: int
    updated_by: int
    created_at: int
    updated_at: int
    closed_at: int | None = None
    fields: dict[int, FieldValues] = field(default_factory=dict)
    contacts: list[ContactLink] = field(default_factory=list)
    elements: list[ElementLink] = field(default_factory=list)

    @classmethod
    def created(
        cls, lead_id: int, name: str, *, by: int, at: int, stage: tuple[int, int], price: int = 0
    ) -> Lead:
        """A lead as user `by` creates it at `at`: theirs, in `stage` (pipeline id, status id)."""
        pipeline_id, status_id = stage
        return cls(lead_id, name, price, by, status_id, pipeline_id, by, by, at, at)

    def link(self, contact_id: int | None, elements: list[ElementLink]) -> Lead:
        """The main contact (if any) and the list elements linked to the lead."""
        self.contacts = [ContactLink(contact_id, is_main=True)] if contact_id is not None else []
        self.elements = elements
        return self


@dataclass
class Task:
    id: int
    text: str
    complete_till: int
    entity_id: int | None
    entity_type: str | None
    responsible_user_id: int
    task_type_id: int
    duration: int
    created_by: int
    created_at: int
    is_completed: bool = False
    result_text: str | None = None
    updated_at: int | None = None
    updated_by: int | None = None


@dataclass
class Webhook:
    id: int
    destination: str
    settings: list[str]
    sort: int
    created_by: int
    created_at: int
    updated_at: int
    disabled: bool = False
