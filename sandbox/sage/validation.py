"""POST bodies validated against the Swagger 2.0 ``definitions`` Sage's SDKs are generated from.

The spec leaves objects open; Sage rejects attributes it does not know, so every object in the
checked definitions is closed (``additionalProperties: false``) and the documented
``idempotency_id`` is added to each entity namespace, e.g. ``sales_invoice.idempotency_id``.
Where the spec says ``number`` a decimal string is accepted as well: Sage's invoicing guide asks
for decimal values as strings (https://developer.sage.com/accounting/guides/concepts/invoicing,
"Building An Invoice Line").
"""

from __future__ import annotations

import copy
import json
import re
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

# types-jsonschema is not a dev dependency yet; the ignore is harmless once it is.
from jsonschema import Draft4Validator, FormatChecker  # type: ignore[import-untyped, unused-ignore]
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped, unused-ignore]
from referencing import Registry
from referencing.jsonschema import DRAFT4

from sandbox.sage.errors import Issue, SageError

DOCUMENT_URI = "urn:sage:accounting:v3.1:swagger"
CHECKED_DEFINITIONS = (
    "postContacts",
    "postSalesInvoices",
    "postSalesCreditNotes",
    "postContactPayments",
    "postContactAllocations",
)

_REQUIRED = re.compile(r"^'(.+)' is a required property$")
_DECIMAL_STRING = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}
# "a random 32 character hyphenless GUID" (https://developer.sage.com/accounting/guides/concepts/
# idempotency).
_IDEMPOTENCY_ID = {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"}


def _is_date(value: object) -> bool:
    return not isinstance(value, str) or bool(date.fromisoformat(value))


# Draft 4 knows no "date" format; Swagger 2.0 uses it for every date attribute.
_formats = FormatChecker(formats=())
_formats.checks("date", raises=ValueError)(_is_date)


class BodyValidator:
    def __init__(self, swagger_path: Path) -> None:
        document = _strict_document(swagger_path)
        registry: Registry[Any] = Registry().with_resource(
            DOCUMENT_URI, DRAFT4.create_resource(document)
        )
        self._validators = {
            name: Draft4Validator(
                {"$ref": f"{DOCUMENT_URI}#/definitions/{name}"},
                registry=registry,
                format_checker=_formats,
            )
            for name in CHECKED_DEFINITIONS
        }

    def validate(self, definition: str, body: Any) -> None:
        """Raise a 422 ``SageError`` listing every violation of ``definition``."""
        errors = sorted(self._validators[definition].iter_errors(body), key=_error_order)
        if errors:
            raise SageError(422, [issue for error in errors for issue in _issues(error)])


@cache
def validator_for(swagger_path: Path) -> BodyValidator:
    """Parsing the 1.3 MB spec takes a moment; every app built from one file shares it."""
    return BodyValidator(swagger_path)


def _strict_document(swagger_path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(swagger_path.read_text(encoding="utf-8"))
    definitions = document["definitions"]
    for name in CHECKED_DEFINITIONS:
        strict = copy.deepcopy(definitions[name])
        _close_objects(strict)
        for namespace in strict["properties"].values():
            namespace["properties"]["idempotency_id"] = _IDEMPOTENCY_ID
        definitions[name] = strict
    return document


def _close_objects(schema: dict[str, Any]) -> None:
    if "properties" in schema:
        schema.setdefault("additionalProperties", False)
        for name, child in schema["properties"].items():
            if child.get("type") == "number":
                schema["properties"][name] = {"anyOf": [child, _DECIMAL_STRING]}
            else:
                _close_objects(child)
    if isinstance(schema.get("items"), dict):
        _close_objects(schema["items"])


def _error_order(error: ValidationError) -> list[str]:
    return [str(part) for part in error.absolute_path]


def _issues(error: ValidationError) -> list[Issue]:
    # Drop the entity namespace ("sales_invoice."), as Sage's $source does.
    path = [str(part) for part in error.absolute_path][1:]
    if error.validator == "required":
        name = _REQUIRED.sub(r"\1", error.message)
        return [Issue("RecordInvalid", f"{name} is required", ".".join([*path, name]))]
    if error.validator == "additionalProperties":
        return [
            Issue("RecordInvalid", f"Unexpected attribute '{name}'", ".".join([*path, name]))
            for name in _unexpected(error)
        ]
    return [Issue("RecordInvalid", error.message, ".".join(path))]


def _unexpected(error: ValidationError) -> list[str]:
    known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    instance = error.instance if isinstance(error.instance, dict) else {}
    return [str(name) for name in instance if name not in known]
