"""Kommo's documented answers (the JSON files next to this module) and what tests do with them.

Each file holds one answer as Kommo documents it: `source` (the page and section, or the
thread, it comes from), `request`, `status`, `body` (or `body_text` when it is not JSON), and:

- `optional`: paths the docs do not promise a value for; the bridge must read the answer with
  each of them null, and without it.
- `documented_not_shown`: keys a source documents that the example omits, with a sample value.
- `with_only`: keys the example has only because of a `with=` the bridge does not send.
- `may_be_absent`: keys an answer may lack: page links (`next` on the last page), and a key
  the example still shows that newer sources replaced (a contact's `enum`, now `enum_code`).
- `request_bodies`: request bodies the docs show for this call, by name, to compare what the
  bridge sends with.

A path is dotted, `[]` standing for every item of a list: `_embedded.leads[].status_id`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
EXTRA_KEY = "sagebridge_unknown_key"


@dataclass(frozen=True)
class Fixture:
    name: str
    source: str
    request: str
    status: int
    body: Any = None
    body_text: str | None = None
    content_type: str | None = None
    optional: tuple[str, ...] = ()
    documented_not_shown: dict[str, Any] = field(default_factory=dict)
    with_only: tuple[str, ...] = ()
    may_be_absent: tuple[str, ...] = ()
    request_bodies: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.request.split(" ", 1)[0]

    @property
    def path(self) -> str:
        return self.request.split(" ", 2)[1].split("?", 1)[0]


def load(name: str) -> Fixture:
    raw = json.loads((HERE / name).read_text())
    return Fixture(
        name=name,
        source=raw["source"],
        request=raw["request"],
        status=raw["status"],
        body=raw.get("body"),
        body_text=raw.get("body_text"),
        content_type=raw.get("content_type"),
        optional=tuple(raw.get("optional", ())),
        documented_not_shown=raw.get("documented_not_shown", {}),
        with_only=tuple(raw.get("with_only", ())),
        may_be_absent=tuple(raw.get("may_be_absent", ())),
        request_bodies=raw.get("request_bodies", {}),
    )


def all_names() -> list[str]:
    return sorted(p.name for p in HERE.glob("*.json"))


# --- variants ---------------------------------------------------------------------------------


def variants(fixture: Fixture) -> Iterator[tuple[str, Any]]:
    """The body as published, then with each optional path null, then without it, then with
    documented-but-unshown keys added, then with an unknown key in every object."""
    yield "as published", fixture.body
    for path in fixture.optional:
        yield f"{path} null", edit(fixture.body, path, lambda _: None)
        yield f"{path} removed", edit(fixture.body, path, None)
    documented = with_documented(fixture)
    if fixture.documented_not_shown:
        yield "documented keys added", documented
    yield "unknown keys everywhere", _with_unknown_keys(documented)


def with_documented(fixture: Fixture) -> Any:
    body = fixture.body
    for path, value in fixture.documented_not_shown.items():
        body = edit(body, path, _constant(value), create=True)
    return body


def _constant(value: Any) -> Callable[[Any], Any]:
    return lambda _: copy.deepcopy(value)


def edit(body: Any, path: str, change: Callable[[Any], Any] | None, *, create: bool = False) -> Any:
    """A copy of `body` with the value at `path` replaced by change(old), or removed (None)."""
    result = copy.deepcopy(body)
    _edit(result, path.split("."), change, create)
    return result


def _edit(node: Any, parts: list[str], change: Callable[[Any], Any] | None, create: bool) -> None:
    key, rest = parts[0], parts[1:]
    many = key.endswith("[]")
    key = key.removesuffix("[]")
    if not isinstance(node, dict) or (key not in node and not (create and not rest)):
        return
    if not rest:
        if change is None:
            node.pop(key, None)
        else:
            node[key] = change(node.get(key))
        return
    children = node[key] if many else [node[key]]
    for child in children if isinstance(children, list) else []:
        _edit(child, rest, change, create)


def _with_unknown_keys(node: Any) -> Any:
    if isinstance(node, dict):
        copied = {k: _with_unknown_keys(v) for k, v in node.items()}
        copied[EXTRA_KEY] = {"nested": [1, "two", None]}
        return copied
    if isinstance(node, list):
        return [_with_unknown_keys(item) for item in node]
    return node


# --- structure --------------------------------------------------------------------------------


def shape_problems(fixture: Fixture, actual: Any) -> list[str]:
    """How `actual` differs in structure from the documented answer: keys it invents or lacks
    at any level, and JSON types that differ (null is fine where the docs show null or do not
    promise a value). List items are compared with every documented item merged."""
    expected = with_documented(fixture)
    allowed_absent = (
        set(fixture.with_only) | set(fixture.documented_not_shown) | set(fixture.may_be_absent)
    )
    problems: list[str] = []
    _compare(_merge([expected]), actual, "", allowed_absent, set(fixture.optional), problems)
    return problems


@dataclass
class _Shape:
    types: set[str] = field(default_factory=set)
    keys: dict[str, _Shape] = field(default_factory=dict)
    everywhere: set[str] = field(default_factory=set)  # keys every documented object has
    items: _Shape | None = None


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _merge(values: list[Any]) -> _Shape:
    shape = _Shape(types={_type(v) for v in values})
    objects = [v for v in values if isinstance(v, dict)]
    if objects:
        names = {k for o in objects for k in o}
        shape.everywhere = {k for k in names if all(k in o for o in objects)}
        shape.keys = {k: _merge([o[k] for o in objects if k in o]) for k in names}
    lists = [v for v in values if isinstance(v, list)]
    if lists:
        shape.items = _merge([item for lst in lists for item in lst])
    return shape


def _compare(
    shape: _Shape, actual: Any, path: str, absent: set[str], optional: set[str], out: list[str]
) -> None:
    kind = _type(actual)
    if kind == "null":
        if "null" not in shape.types and path not in optional:
            out.append(f"{path or 'body'}: null where the docs show {sorted(shape.types)}")
        return
    if shape.types == {"null"}:
        return  # the docs only ever show null here: any value fits
    if kind not in shape.types:
        out.append(f"{path or 'body'}: {kind} where the docs show {sorted(shape.types)}")
        return
    if isinstance(actual, dict):
        _compare_object(shape, actual, path, absent, optional, out)
    elif isinstance(actual, list) and shape.items is not None:
        for item in actual:
            _compare(shape.items, item, f"{path}[]", absent, optional, out)


def _compare_object(
    shape: _Shape,
    actual: dict[str, Any],
    path: str,
    absent: set[str],
    optional: set[str],
    out: list[str],
) -> None:
    prefix = f"{path}." if path else ""
    for key in sorted(set(actual) - set(shape.keys)):
        out.append(f"{prefix}{key}: not in the documented answer")
    for key in sorted(shape.everywhere - set(actual)):
        if f"{prefix}{key}" not in absent:
            out.append(f"{prefix}{key}: missing (the documented answer has it)")
    for key in sorted(set(actual) & set(shape.keys)):
        _compare(shape.keys[key], actual[key], f"{prefix}{key}", absent, optional, out)
