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


def as_number(value: Decimal) -> str:
    """A decimal as Sage's answers print it: a string, shortest form with at least one decimal
    ("294.0", "27.2", "0.83"), as in Sage's invoicing guide
    (https://developer.sage.com/accounting/guides/concepts/invoicing, 'Totals')."""
    text = format(value.normalize(), "f")
    return text if "." in text else f"{text}.0"
