"""Decimal helpers: Sage rounds tax per line, half up, to 2 decimal places."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")


def round_money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def to_decimal(value: Any) -> Decimal:
    """Bodies are parsed with ``parse_float=Decimal``; ints and strings are accepted too."""
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {value!r}") from exc


def as_number(value: Decimal) -> float:
    """JSON number for a response (the spec types amounts as numbers); 2-dp values round-trip."""
    return float(value)
