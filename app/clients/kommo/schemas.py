"""The parts of Kommo API v4's JSON the bridge reads and writes, validated at the boundary.

Reading is tolerant on purpose: Kommo's documented examples show `null` where their tables
promise a type (`is_deleted: null` on catalog elements, `custom_fields_values: null`), and
responses carry more keys than any table lists. So every model ignores unknown keys, treats
`null` as "not there", and only the fields the bridge cannot work without are required; a
missing one is reported by `app.clients.kommo.client` naming the entity and the field.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        """`null` means the same as a missing key: the field's default, or 'has no X'."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


class FieldValue(_Model):
    # A string, a number, a bool or an object, depending on the field type (Kommo's
    # custom-fields page); callers convert what they read.
    value: Any = None
    enum_id: int | None = None


class CustomFieldValues(_Model):
    field_id: int | None = None
    field_code: str | None = None
    values: list[FieldValue] = Field(default_factory=list)


class HasCustomFields(_Model):
    custom_fields_values: list[CustomFieldValues] = Field(default_factory=list)

    def field_value(self, code: str) -> Any:
        """The first value of the field with this code (case-insensitive), or None."""
        for field in self.custom_fields_values:
            if (field.field_code or "").casefold() == code.casefold() and field.values:
                return field.values[0].value
        return None

    def field_value_by_id(self, field_id: int) -> Any:
        """The first value of the field with this id, or None."""
        for field in self.custom_fields_values:
            if field.field_id == field_id and field.values:
                return field.values[0].value
        return None


class ContactRef(_Model):
    id: int
    is_main: bool = False


class LinkMetadata(_Model):
    # A link made without a quantity counts as one (Kommo's UI adds a product with 1).
    quantity: Decimal = Decimal(1)
    catalog_id: int
    # The id of the element's price-type custom field this deal uses (leads API, lead
    # detail: `_embedded[catalog_elements][0][price_id]`).
    price_id: int | None = None


class CatalogElementRef(_Model):
    id: int
    metadata: LinkMetadata


class LeadEmbedded(_Model):
    contacts: list[ContactRef] = Field(default_factory=list)
    catalog_elements: list[CatalogElementRef] = Field(default_factory=list)


class Lead(HasCustomFields):
    id: int
    name: str = ""
    responsible_user_id: int | None = None
    status_id: int
    pipeline_id: int
    account_id: int | None = None
    updated_at: int | None = None
    embedded: LeadEmbedded = Field(default_factory=LeadEmbedded, alias="_embedded")


class Contact(HasCustomFields):
    id: int
    name: str = ""
    first_name: str | None = None
    last_name: str | None = None


class CatalogElement(HasCustomFields):
    id: int
    name: str
    catalog_id: int | None = None
    # The docs' own examples show null here; only an explicit true means deleted.
    is_deleted: bool = False


class CatalogElementsEmbedded(_Model):
    elements: list[CatalogElement] = Field(default_factory=list)


class LinkHref(_Model):
    href: str


class PageLinks(_Model):
    next: LinkHref | None = None


class ElementsPage(_Model):
    embedded: CatalogElementsEmbedded = Field(
        default_factory=CatalogElementsEmbedded, alias="_embedded"
    )
    links: PageLinks = Field(default_factory=PageLinks, alias="_links")


class Catalog(_Model):
    id: int
    name: str = ""
    type: str | None = None


class CatalogsEmbedded(_Model):
    catalogs: list[Catalog] = Field(default_factory=list)


class CatalogsPage(_Model):
    # At most 10 lists per account (Kommo's lists page): one page holds them, no paging.
    embedded: CatalogsEmbedded = Field(default_factory=CatalogsEmbedded, alias="_embedded")


class Account(_Model):
    # ISO 4217 code of the account's currency (Kommo's account-parameters page).
    currency: str | None = None


class LeadsEmbedded(_Model):
    leads: list[Lead] = Field(default_factory=list)


class LeadsPage(_Model):
    embedded: LeadsEmbedded = Field(default_factory=LeadsEmbedded, alias="_embedded")
    links: PageLinks = Field(default_factory=PageLinks, alias="_links")


class PipelineStatus(_Model):
    id: int
    sort: int = 0


class PipelineEmbedded(_Model):
    statuses: list[PipelineStatus] = Field(default_factory=list)


class Pipeline(_Model):
    """GET /api/v4/leads/pipelines/{id}: its stages, in the order `sort` gives them."""

    id: int
    embedded: PipelineEmbedded = Field(default_factory=PipelineEmbedded, alias="_embedded")


class Webhook(_Model):
    destination: str = ""
    disabled: bool = False


class WebhooksEmbedded(_Model):
    webhooks: list[Webhook] = Field(default_factory=list)


class WebhooksPage(_Model):
    embedded: WebhooksEmbedded = Field(default_factory=WebhooksEmbedded, alias="_embedded")


class TaskRef(_Model):
    id: int


class TaskRefsEmbedded(_Model):
    tasks: list[TaskRef] = Field(default_factory=list)


class TaskRefs(_Model):
    """The answer to POST and to PATCH /api/v4/tasks: the ids of the tasks created or changed."""

    embedded: TaskRefsEmbedded = Field(default_factory=TaskRefsEmbedded, alias="_embedded")


class Task(_Model):
    """A task as GET /api/v4/tasks/{id} shows it. Its `result` is not read: the docs show an
    object once there is one and `[]` before."""

    id: int
    text: str = ""
    is_completed: bool


# --- what the bridge sends --------------------------------------------------------------------


class FieldValueOut(BaseModel):
    value: str | int | None = None
    enum_id: int | None = None


class CustomFieldUpdate(BaseModel):
    field_id: int
    values: list[FieldValueOut]


class LeadUpdate(BaseModel):
    custom_fields_values: list[CustomFieldUpdate]


class LeadPatch(BaseModel):
    id: int
    custom_fields_values: list[CustomFieldUpdate]


class TaskResultOut(BaseModel):
    text: str


class TaskPatch(BaseModel):
    """One item of PATCH /api/v4/tasks: a new text, or completion with a result text."""

    id: int
    text: str | None = None
    is_completed: bool | None = None
    result: TaskResultOut | None = None


class TaskCreate(BaseModel):
    text: str
    complete_till: int
    entity_id: int
    entity_type: str = "leads"
    responsible_user_id: int | None = None
    task_type_id: int = 1
    request_id: str | None = None
