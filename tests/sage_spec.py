"""Validate what the bridge sends Sage against Sage's own Swagger definitions, strictly.

The spec's definitions allow unknown properties; here every object is closed, so a misspelt or
invented field fails. `idempotency_id` is added where Sage's idempotency guide documents it.
Where the spec says `number`, a decimal string is accepted too (and is what the bridge sends):
Sage's invoicing guide (https://developer.sage.com/accounting/guides/concepts/invoicing,
"Building An Invoice Line") says "Please send decimal values as strings!".
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SPEC = Path(__file__).parent.parent / "sandbox/sage/contracts/sage-accounting-v3.1.swagger.json"
ENTITY = {"postSalesInvoices": "sales_invoice", "postContacts": "contact"}


@cache
def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(SPEC.read_text())
    return spec


DECIMAL_STRING = {"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}


def _closed(schema: Any) -> Any:
    if isinstance(schema, dict):
        schema = {k: _closed(v) for k, v in schema.items()}
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
        if schema.get("type") == "number":
            return {"anyOf": [schema, DECIMAL_STRING]}
        return schema
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def validate_sage_body(definition: str, body: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if `body` is not a valid `definition` request."""
    schema = _closed(copy.deepcopy(_spec()["definitions"][definition]))
    entity = schema["properties"][ENTITY[definition]]
    entity["properties"]["idempotency_id"] = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
    validator.validate(body)
