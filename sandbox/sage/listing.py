"""Sage list conventions: ``page``/``items_per_page`` (≤ 200), the ``$items`` envelope with
relative ``$next``/``$back`` paths, and the date filters' formats."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from starlette.datastructures import QueryParams

from sandbox.sage.errors import SageError
from sandbox.sage.render import project

MAX_ITEMS_PER_PAGE = 200
# Sage documents `YYYY-MM-DDT(+|-)hh:mm` (a date at an offset) besides full timestamps.
_DATE_AT_OFFSET = re.compile(r"^(\d{4}-\d{2}-\d{2})T([+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class Page:
    number: int
    size: int


def page_request(params: QueryParams, default_size: int) -> Page:
    """Sizes above 200 are capped, as Sage caps them."""
    size = min(_positive_int(params, "items_per_page", default_size), MAX_ITEMS_PER_PAGE)
    return Page(number=_positive_int(params, "page", 1), size=size)


def _positive_int(params: QueryParams, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise SageError.bad_parameter(name, f"{name} must be a positive integer")
    return int(raw)


def envelope(
    items: list[dict[str, Any]],
    page: Page,
    *,
    path: str,
    params: QueryParams,
    size_key: str = "$itemsPerPage",
) -> dict[str, Any]:
    """One page of ``items``; a page past the last one answers with the last page."""
    last = max(1, math.ceil(len(items) / page.size))
    number = min(page.number, last)
    start = (number - 1) * page.size
    return {
        "$total": len(items),
        "$page": number,
        "$next": _link(path, params, number + 1, page.size) if number < last else None,
        "$back": _link(path, params, number - 1, page.size) if number > 1 else None,
        size_key: page.size,
        "$items": items[start : start + page.size],
    }


def _link(path: str, params: QueryParams, number: int, size: int) -> str:
    kept = [(k, v) for k, v in params.multi_items() if k not in ("page", "items_per_page")]
    return f"{path}?{urlencode([*kept, ('page', number), ('items_per_page', size)])}"


def listed(
    request: Request, path: str, items: list[dict[str, Any]], default_size: int
) -> dict[str, Any]:
    """Project full items to the requested ``attributes`` and wrap one page of them."""
    params = request.query_params
    attributes = params.get("attributes")
    projected = [project(item, attributes) for item in items]
    return envelope(projected, page_request(params, default_size), path=path, params=params)


def parse_since(params: QueryParams, name: str) -> datetime | None:
    raw = params.get(name)
    if not raw:
        return None
    # An unencoded '+' in a query string arrives as a space.
    text = raw.strip().replace(" ", "+")
    at_offset = _DATE_AT_OFFSET.match(text)
    if at_offset:
        text = f"{at_offset.group(1)}T00:00:00{at_offset.group(2)}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise SageError.bad_parameter(name, f"{name} is not a valid date-time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_date(params: QueryParams, name: str) -> date | None:
    raw = params.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise SageError.bad_parameter(name, f"{name} is not a valid date") from exc
