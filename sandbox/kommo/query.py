"""Kommo list conventions: ``page``/``limit`` (≤ 250), PHP-style bracketed filters, ``with=``,
``_page`` + ``_links`` (``next``; ``first`` and ``prev`` after page 1), and 204 for an empty
page."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi.responses import Response
from starlette.datastructures import QueryParams

from sandbox.kommo.errors import HalResponse, KommoError, no_content

DEFAULT_LIMIT = 50
MAX_LIMIT = 250
_INDEXED = re.compile(r"^filter\[statuses\]\[(\d+)\]\[(pipeline_id|status_id)\]$")


@dataclass(frozen=True)
class PageRequest:
    number: int
    limit: int


def page_request(params: QueryParams) -> PageRequest:
    """A limit above 250 silently falls back to the default page size, as Kommo does."""
    limit = _int_param(params, "limit", DEFAULT_LIMIT)
    return PageRequest(
        number=max(1, _int_param(params, "page", 1)),
        limit=limit if 1 <= limit <= MAX_LIMIT else DEFAULT_LIMIT,
    )


def _int_param(params: QueryParams, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise KommoError(400, f"{name} must be an integer") from exc


def paged(
    items: list[dict[str, Any]], params: QueryParams, *, site: str, path: str, key: str
) -> Response:
    """One page as ``{_page, _links, _embedded: {key: [...]}}``, or 204 when it is empty."""
    page = page_request(params)
    start = (page.number - 1) * page.limit
    chunk = items[start : start + page.limit]
    if not chunk:
        return no_content()
    page_links = {"self": {"href": _url(site, path, params, page.number, page.limit)}}
    if start + page.limit < len(items):
        page_links["next"] = {"href": _url(site, path, params, page.number + 1, page.limit)}
    if page.number > 1:
        page_links["first"] = {"href": _url(site, path, params, 1, page.limit)}
        page_links["prev"] = {"href": _url(site, path, params, page.number - 1, page.limit)}
    body = {"_page": page.number, "_links": page_links, "_embedded": {key: chunk}}
    return HalResponse(body)


def _url(site: str, path: str, params: QueryParams, number: int, limit: int) -> str:
    kept = [(k, v) for k, v in params.multi_items() if k not in ("page", "limit")]
    return f"{site}{path}?{urlencode([*kept, ('page', number), ('limit', limit)])}"


def with_values(params: QueryParams) -> frozenset[str]:
    raw = params.get("with") or ""
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def int_values(params: QueryParams, name: str) -> list[int]:
    """All of ``name``, ``name[]`` and ``name[N]`` (PHP array spellings), as ints."""
    pattern = re.compile(rf"^{re.escape(name)}(\[\d*\])?$")
    raw = [v for k, v in params.multi_items() if pattern.match(k)]
    try:
        return [int(v) for value in raw for v in value.split(",") if v]
    except ValueError as exc:
        raise KommoError(400, f"{name} must hold integers") from exc


def status_pairs(params: QueryParams) -> list[tuple[int | None, int | None]]:
    """``filter[statuses][N][pipeline_id|status_id]`` → [(pipeline_id, status_id), ...]."""
    grouped: dict[int, dict[str, int]] = {}
    for key, value in params.multi_items():
        match = _INDEXED.match(key)
        if match:
            grouped.setdefault(int(match.group(1)), {})[match.group(2)] = _as_int(key, value)
    return [(g.get("pipeline_id"), g.get("status_id")) for _, g in sorted(grouped.items())]


def optional_int(params: QueryParams, name: str) -> int | None:
    raw = params.get(name)
    return None if raw in (None, "") else _as_int(name, raw)


def _as_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError as exc:
        raise KommoError(400, f"{name} must be an integer") from exc
