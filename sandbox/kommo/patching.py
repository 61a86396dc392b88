"""Validating and applying ``PATCH /api/v4/leads`` (single and batch).

A batch is all-or-nothing: any invalid item answers 400 ``validation-errors`` (grouped by the
item's ``request_id``, or its index) and nothing changes. Unknown keys are ignored, as Kommo
ignores them; custom fields are addressed by ``field_id`` or ``field_code``, select fields take
``enum_id`` (or the option's exact ``value``), and ``values: null``/``[]`` clears a field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sandbox.kommo.errors import FieldError, KommoError
from sandbox.kommo.models import (
    LOST_STATUS_ID,
    WON_STATUS_ID,
    CustomField,
    FieldValues,
    Lead,
)
from sandbox.kommo.state import KommoState
from sandbox.kommo.webhooks import StatusChange

NOT_A_CHOICE = "The value you selected is not a valid choice."
ENUM_TYPES = frozenset({"select", "radiobutton", "multiselect"})
DATE_TYPES = frozenset({"date", "date_time", "birthday"})
NUMERIC_TYPES = frozenset({"numeric", "price", "monetary"})
_URL = re.compile(r"^https?://\S+$")
_INT_KEYS = ("price", "responsible_user_id", "status_id", "pipeline_id")


@dataclass
class LeadPatch:
    lead: Lead
    request_id: str
    changes: dict[str, Any] = field(default_factory=dict)
    fields: dict[int, FieldValues] = field(default_factory=dict)


class _Collector:
    """Gathers FieldErrors of one item, addressed by dotted paths."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, code: str, path: str, detail: str = NOT_A_CHOICE) -> None:
        self.errors.append(FieldError(code, path, detail))


def validate_patches(
    state: KommoState, items: Any, *, path_id: int | None = None
) -> list[LeadPatch]:
    """Raise 400 unless every item is valid; ``path_id`` is the id of PATCH /leads/{id}."""
    if not isinstance(items, list) or not items:
        raise KommoError.validation(
            {"0": [FieldError("InvalidType", "", "Expected a non-empty array")]}
        )
    patches: list[LeadPatch] = []
    errors: dict[str, list[FieldError]] = {}
    for index, item in enumerate(items):
        request_id = _request_id(item, index)
        collector = _Collector()
        patch = _validate_item(state, item, path_id, request_id, collector)
        if collector.errors:
            errors[request_id] = collector.errors
        elif patch is not None:
            patches.append(patch)
    if errors:
        raise KommoError.validation(errors)
    return patches


def _request_id(item: Any, index: int) -> str:
    given = item.get("request_id") if isinstance(item, dict) else None
    return str(given) if given is not None else str(index)


def _validate_item(
    state: KommoState, item: Any, path_id: int | None, request_id: str, out: _Collector
) -> LeadPatch | None:
    if not isinstance(item, dict):
        out.add("InvalidType", "", "Expected an object")
        return None
    lead = _target_lead(state, item, path_id, out)
    for key in _INT_KEYS:
        if key in item and (not isinstance(item[key], int) or isinstance(item[key], bool)):
            out.add("InvalidType", key, "This value should be of type int.")
    if lead is None or out.errors:
        return None
    patch = LeadPatch(lead, request_id)
    _simple_changes(state, item, patch, out)
    _stage_change(state, item, patch, out)
    _custom_fields(state, item.get("custom_fields_values"), patch, out)
    return patch


def _target_lead(
    state: KommoState, item: dict[str, Any], path_id: int | None, out: _Collector
) -> Lead | None:
    lead_id = path_id if path_id is not None else item.get("id")
    lead = state.leads.get(lead_id) if isinstance(lead_id, int) else None
    if lead is None:
        out.add("NotFound", "id", "Entity not found")
    return lead


def _simple_changes(
    state: KommoState, item: dict[str, Any], patch: LeadPatch, out: _Collector
) -> None:
    if "name" in item:
        if not isinstance(item["name"], str):
            out.add("InvalidType", "name", "This value should be of type string.")
        patch.changes["name"] = item["name"]
    if "price" in item:
        patch.changes["price"] = item["price"]
    if "responsible_user_id" in item:
        if item["responsible_user_id"] not in state.users:
            out.add("NotSupportedChoice", "responsible_user_id")
        patch.changes["responsible_user_id"] = item["responsible_user_id"]


def _stage_change(
    state: KommoState, item: dict[str, Any], patch: LeadPatch, out: _Collector
) -> None:
    if "status_id" not in item and "pipeline_id" not in item:
        return
    pipeline = state.pipelines.get(item.get("pipeline_id", patch.lead.pipeline_id))
    if pipeline is None:
        out.add("NotSupportedChoice", "pipeline_id")
        return
    status_id = item.get("status_id", pipeline.statuses[0].id if pipeline.statuses else None)
    if status_id is None or pipeline.status(status_id) is None:
        out.add("NotSupportedChoice", "status_id")
        return
    patch.changes["pipeline_id"] = pipeline.id
    patch.changes["status_id"] = status_id


def _custom_fields(state: KommoState, raw: Any, patch: LeadPatch, out: _Collector) -> None:
    if raw is None:
        return
    if not isinstance(raw, list):
        out.add("InvalidType", "custom_fields_values", "Expected an array")
        return
    for index, entry in enumerate(raw):
        path = f"custom_fields_values.{index}"
        if not isinstance(entry, dict):
            out.add("InvalidType", path, "Expected an object")
            continue
        known = state.lead_field(entry.get("field_id"), entry.get("field_code"))
        if known is None:
            out.add("NotSupportedChoice", f"{path}.field_id")
            continue
        values = _values(known, entry.get("values"), f"{path}.values", out)
        if values is not None:
            patch.fields[known.id] = values


def _values(known: CustomField, raw: Any, path: str, out: _Collector) -> FieldValues | None:
    if raw is None or raw == []:
        return []
    if not isinstance(raw, list) or not all(isinstance(v, dict) for v in raw):
        out.add("InvalidType", path, "Expected an array of objects")
        return None
    if known.type in ENUM_TYPES:
        if known.type != "multiselect" and len(raw) > 1:
            out.add("InvalidType", path, "This field takes a single value.")
            return None
        return _enum_values(known, raw, path, out)
    return _plain_values(known, raw, path, out)


def _enum_values(
    known: CustomField, raw: list[dict[str, Any]], path: str, out: _Collector
) -> FieldValues | None:
    values: FieldValues = []
    for index, given in enumerate(raw):
        option = known.enum(given["enum_id"]) if "enum_id" in given else None
        if option is None and "enum_id" not in given:
            option = next((e for e in known.enums if e.value == given.get("value")), None)
        if option is None:
            out.add("NotSupportedChoice", f"{path}.{index}.enum_id")
            return None
        values.append({"value": option.value, "enum_id": option.id, "enum_code": option.code})
    return values


def _plain_values(
    known: CustomField, raw: list[dict[str, Any]], path: str, out: _Collector
) -> FieldValues | None:
    values: FieldValues = []
    for index, given in enumerate(raw):
        value = given.get("value")
        if not isinstance(value, str | int | float) or isinstance(value, bool) or value == "":
            out.add("NotBlank", f"{path}.{index}.value", "This value should not be blank.")
            return None
        if known.type == "url" and not _URL.match(str(value)):
            out.add("InvalidValue", f"{path}.{index}.value", "This value is not a valid URL.")
            return None
        checked = _typed(known, value)
        if checked is None:
            out.add("InvalidValue", f"{path}.{index}.value", f"Not a valid {known.type} value.")
            return None
        values.append({"value": checked})
    return values


def _typed(known: CustomField, value: str | int | float) -> str | int | None:
    """Numbers as their text (Kommo's custom fields page fills numeric fields with "1.5");
    dates as a unix timestamp, given as one or as RFC 3339 text (the same page, 'date,
    date_time, birthday')."""
    if known.type in DATE_TYPES:
        if isinstance(value, int):
            return value
        try:
            return int(datetime.fromisoformat(str(value)).timestamp())
        except ValueError:
            return None
    if known.type in NUMERIC_TYPES:
        try:
            Decimal(str(value))
        except InvalidOperation:
            return None
    return str(value)


def apply_patches(
    state: KommoState, patches: list[LeadPatch], *, now: int, user_id: int
) -> list[StatusChange]:
    """Apply validated patches; returns the stage changes that trigger ``status_lead`` hooks."""
    changes: list[StatusChange] = []
    for patch in patches:
        lead = patch.lead
        old_status, old_pipeline = lead.status_id, lead.pipeline_id
        for key, value in patch.changes.items():
            setattr(lead, key, value)
        lead.fields.update(patch.fields)
        lead.updated_at, lead.updated_by = now, user_id
        if (lead.status_id, lead.pipeline_id) != (old_status, old_pipeline):
            lead.closed_at = now if lead.status_id in (WON_STATUS_ID, LOST_STATUS_ID) else None
            changes.append(StatusChange(lead.id, old_status))
    return changes
