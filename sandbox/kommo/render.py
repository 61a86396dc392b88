"""Records → the JSON Kommo returns. ``custom_fields_values`` is null, not [], when empty;
``_links`` are absolute URLs on the account's domain."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sandbox.kommo.models import (
    Catalog,
    CatalogElement,
    Contact,
    CustomField,
    ElementLink,
    FieldValues,
    Lead,
    Pipeline,
    Status,
    Task,
    Webhook,
)
from sandbox.kommo.state import KommoState

Json = dict[str, Any]
API = "/api/v4"


def links(site: str, path: str) -> Json:
    return {"self": {"href": f"{site}{API}{path}"}}


def number(value: Decimal) -> int | float:
    """Whole quantities read as ints, fractional ones as floats (Kommo's metadata.quantity)."""
    return int(value) if value == value.to_integral_value() else float(value)


def field_values(
    fields: dict[int, FieldValues], known: dict[int, CustomField]
) -> list[Json] | None:
    rendered = [
        {
            "field_id": field_id,
            "field_name": known[field_id].name,
            "field_code": known[field_id].code,
            "field_type": known[field_id].type,
            "values": values,
        }
        for field_id, values in fields.items()
        if values
    ]
    return rendered or None


def lead(
    state: KommoState, item: Lead, *, site: str, with_: frozenset[str], deleted: bool = False
) -> Json:
    return {
        "id": item.id,
        "name": item.name,
        "price": item.price,
        "responsible_user_id": item.responsible_user_id,
        "group_id": 0,
        "status_id": item.status_id,
        "pipeline_id": item.pipeline_id,
        "loss_reason_id": None,
        "created_by": item.created_by,
        "updated_by": item.updated_by,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "closed_at": item.closed_at,
        "closest_task_at": None,
        "is_deleted": deleted,
        "custom_fields_values": field_values(item.fields, state.lead_fields),
        "score": None,
        "account_id": state.account.id,
        "_links": links(site, f"/leads/{item.id}"),
        "_embedded": _lead_embedded(item, site, with_),
    }


def _lead_embedded(item: Lead, site: str, with_: frozenset[str]) -> Json:
    embedded: Json = {"tags": [], "companies": []}
    if "contacts" in with_:
        embedded["contacts"] = [
            {
                "id": link.contact_id,
                "is_main": link.is_main,
                "_links": links(site, f"/contacts/{link.contact_id}"),
            }
            for link in item.contacts
        ]
    if "catalog_elements" in with_:
        embedded["catalog_elements"] = [_element_link(link) for link in item.elements]
    return embedded


def _element_link(link: ElementLink) -> Json:
    metadata: Json = {"quantity": number(link.quantity), "catalog_id": link.catalog_id}
    if link.price_id is not None:
        metadata["price_id"] = link.price_id
    return {"id": link.element_id, "metadata": metadata}


def contact(state: KommoState, item: Contact, *, site: str) -> Json:
    return {
        "id": item.id,
        "name": item.name,
        "first_name": item.first_name,
        "last_name": item.last_name,
        "responsible_user_id": item.responsible_user_id,
        "group_id": 0,
        "created_by": item.created_by,
        "updated_by": item.created_by,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "closest_task_at": None,
        "custom_fields_values": field_values(item.fields, state.contact_fields),
        "account_id": state.account.id,
        "_links": links(site, f"/contacts/{item.id}"),
        "_embedded": {"tags": [], "companies": []},
    }


def custom_field(state: KommoState, item: CustomField, *, site: str) -> Json:
    owner = f"/catalogs/{item.catalog_id}" if item.catalog_id else f"/{item.entity_type}"
    enums = [{"id": e.id, "value": e.value, "sort": e.sort} for e in item.enums]
    return {
        "id": item.id,
        "name": item.name,
        "type": item.type,
        "account_id": state.account.id,
        "code": item.code,
        "sort": item.sort,
        "is_api_only": False,
        "enums": enums or None,
        "group_id": None,
        "required_statuses": [],
        "is_deletable": item.code is None,
        "is_predefined": item.code is not None,
        "entity_type": item.entity_type,
        "catalog_id": item.catalog_id,
        "_links": links(site, f"{owner}/custom_fields/{item.id}"),
    }


def catalog(state: KommoState, item: Catalog, *, site: str) -> Json:
    return {
        "id": item.id,
        "name": item.name,
        "created_by": item.created_by,
        "updated_by": item.created_by,
        "created_at": item.created_at,
        "updated_at": item.created_at,
        "sort": item.sort,
        "type": item.type,
        "can_add_elements": True,
        "can_show_in_cards": True,
        "can_link_multiple": True,
        "can_be_deleted": item.type != "products",
        "sdk_widget_code": None,
        "account_id": state.account.id,
        "_links": links(site, f"/catalogs/{item.id}"),
    }


def element(state: KommoState, item: CatalogElement, *, site: str) -> Json:
    fields = state.catalogs[item.catalog_id].fields
    return {
        "id": item.id,
        "name": item.name,
        "created_by": item.created_by,
        "updated_by": item.created_by,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "is_deleted": item.is_deleted,
        "custom_fields_values": field_values(item.fields, fields),
        "catalog_id": item.catalog_id,
        "account_id": state.account.id,
        "_links": links(site, f"/catalogs/{item.catalog_id}/elements/{item.id}"),
    }


def status(state: KommoState, item: Status, *, site: str) -> Json:
    return {
        "id": item.id,
        "name": item.name,
        "sort": item.sort,
        "is_editable": item.id not in (142, 143),
        "pipeline_id": item.pipeline_id,
        "color": item.color,
        "type": 0,
        "account_id": state.account.id,
        "_links": links(site, f"/leads/pipelines/{item.pipeline_id}/statuses/{item.id}"),
    }


def pipeline(state: KommoState, item: Pipeline, *, site: str) -> Json:
    return {
        "id": item.id,
        "name": item.name,
        "sort": item.sort,
        "is_main": item.is_main,
        "is_unsorted_on": False,
        "is_archive": False,
        "account_id": state.account.id,
        "_links": links(site, f"/leads/pipelines/{item.id}"),
        "_embedded": {"statuses": [status(state, s, site=site) for s in item.statuses]},
    }


def task(state: KommoState, item: Task, *, site: str) -> Json:
    return {
        "id": item.id,
        "created_by": item.created_by,
        "updated_by": item.updated_by or item.created_by,
        "created_at": item.created_at,
        "updated_at": item.updated_at or item.created_at,
        "responsible_user_id": item.responsible_user_id,
        "group_id": 0,
        "entity_id": item.entity_id,
        "entity_type": item.entity_type,
        "duration": item.duration,
        "is_completed": item.is_completed,
        "task_type_id": item.task_type_id,
        "text": item.text,
        # Kommo's PHP answers an empty result as [] and a filled one as an object.
        "result": {"text": item.result_text} if item.result_text is not None else [],
        "complete_till": item.complete_till,
        "account_id": state.account.id,
        "_links": links(site, f"/tasks/{item.id}"),
    }


def webhook(state: KommoState, item: Webhook) -> Json:
    return {
        "id": item.id,
        "destination": item.destination,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "account_id": state.account.id,
        "created_by": item.created_by,
        "sort": item.sort,
        "disabled": item.disabled,
        "settings": list(item.settings),
    }


def account(state: KommoState, *, site: str) -> Json:
    """The keys Kommo's account-parameters page shows without `with`."""
    item = state.account
    return {
        "id": item.id,
        "name": item.name,
        "subdomain": item.subdomain,
        "current_user_id": state.admin_user_id,
        "country": "GB",
        "currency": item.currency,
        "currency_symbol": item.currency_symbol,
        "customers_mode": "disabled",
        "is_unsorted_on": False,
        "mobile_feature_version": 0,
        "is_loss_reason_enabled": False,
        "is_helpbot_enabled": False,
        "is_technical_account": False,
        "contact_name_display_order": 1,
        "_links": links(site, "/account"),
    }
