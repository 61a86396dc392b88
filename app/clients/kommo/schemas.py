"""The parts of Kommo API v4's JSON the bridge reads and writes, validated at the boundary."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class FieldValue(_Model):
    value: Any = None
    enum_id: int | None = None
    # Older payloads spell it `enum`, newer ones `enum_code`.
    enum_code: str | None = None
    enum: str | None = None


class CustomFieldValues(_Model):
    field_id: int
    field_name: str | None = None
    field_code: str | None = None
    field_type: str | None = None
    values: list[FieldValue] = Field(default_factory=list)


class HasCustomFields(_Model):
    # Kommo sends null, not [], when an entity has no custom field values.
    custom_fields_values: list[CustomFieldValues] | None = None

    def field_value(self, code: str) -> Any:
        """The first value of the field with this code (case-insensitive), or None."""
        for field in self.custom_fields_values or []:
            if (field.field_code or "").casefold() == code.casefold() and field.values:
                return field.values[0].value
        return None


class ContactRef(_Model):
    id: int
    is_main: bool = False


class LinkMetadata(_Model):
    quantity: Decimal = Decimal(1)
    catalog_id: int
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
    price: int | None = None
    responsible_user_id: int | None = None
    status_id: int
    pipeline_id: int
    account_id: int | None = None
    updated_at: int | None = None
    is_deleted: bool = False
    embedded: LeadEmbedded = Field(default_factory=LeadEmbedded, alias="_embedded")


class Contact(HasCustomFields):
    id: int
    name: str = ""
    first_name: str | None = None
    last_name: str | None = None


class CatalogElement(HasCustomFields):
    id: int
    name: str
    catalog_id: int
    is_deleted: bool = False


class CatalogElementsEmbedded(_Model):
    elements: list[CatalogElement] = Field(default_factory=list)


class CatalogElementsPage(_Model):
    embedded: CatalogElementsEmbedded = Field(
        default_factory=CatalogElementsEmbedded, alias="_embedded"
    )


class FieldValueOut(_Model):
    value: str | int | None = None
    enum_id: int | None = None


class CustomFieldUpdate(_Model):
    field_id: int
    values: list[FieldValueOut]


class LeadUpdate(_Model):
    custom_fields_values: list[CustomFieldUpdate]


class TaskCreate(_Model):
    text: str
    complete_till: int
    entity_id: int
    entity_type: str = "leads"
    responsible_user_id: int | None = None
    task_type_id: int = 1
    request_id: str | None = None


class CreatedTask(_Model):
    id: int
    request_id: str | None = None


class TasksEmbedded(_Model):
    tasks: list[CreatedTask] = Field(default_factory=list)


class TasksCreated(_Model):
    embedded: TasksEmbedded = Field(default_factory=TasksEmbedded, alias="_embedded")


class LeadsEmbedded(_Model):
    leads: list[Lead] = Field(default_factory=list)


class LinkHref(_Model):
    href: str


class PageLinks(_Model):
    next: LinkHref | None = None


class LeadsPage(_Model):
    embedded: LeadsEmbedded = Field(default_factory=LeadsEmbedded, alias="_embedded")
    links: PageLinks = Field(default_factory=PageLinks, alias="_links")


class LeadPatch(_Model):
    id: int
    custom_fields_values: list[CustomFieldUpdate]


class Webhook(_Model):
    id: int | None = None
    destination: str
    disabled: bool = False
    settings: list[str] = Field(default_factory=list)


class WebhooksEmbedded(_Model):
    webhooks: list[Webhook] = Field(default_factory=list)


class WebhooksPage(_Model):
    embedded: WebhooksEmbedded = Field(default_factory=WebhooksEmbedded, alias="_embedded")


class Catalog(_Model):
    id: int
    name: str
    type: str | None = None


class CatalogsEmbedded(_Model):
    catalogs: list[Catalog] = Field(default_factory=list)


class CatalogsPage(_Model):
    embedded: CatalogsEmbedded = Field(default_factory=CatalogsEmbedded, alias="_embedded")


class ElementsPage(_Model):
    embedded: CatalogElementsEmbedded = Field(
        default_factory=CatalogElementsEmbedded, alias="_embedded"
    )
    links: PageLinks = Field(default_factory=PageLinks, alias="_links")
