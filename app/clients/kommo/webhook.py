"""Kommo's webhook body: form-encoded, PHP-style bracketed keys, several events per body.

`leads[status][0][id]=1&leads[status][0][status_id]=2&account[id]=3` becomes
`{"leads": {"status": {"0": {"id": "1", "status_id": "2"}}}, "account": {"id": "3"}}`, from which
`parse_webhook` takes every (entity, action, index) entry. Hook bodies are triggers, not data:
the worker re-reads the lead before acting.

Real bodies nest deep (a catalog element's invoice field:
`catalogs[add][0][custom_fields][1][values][0][value][discount][value]`, ten levels), so depth is
generous; what bounds the work is the caps on fields, entries, key parts and the body size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

MAX_FIELDS = 10_000
MAX_DEPTH = 12
# Kommo sends a handful of entries per body; 500 is plenty and bounds the rows one request writes.
MAX_ENTRIES = 500
MAX_INDEX_DIGITS = 6
MAX_KEY_PART_LENGTH = 64
MAX_ID_LENGTH = 32
BIGINT_MAX = 2**63 - 1  # ids are stored as 64-bit integers
INT_FIELDS = ("status_id", "pipeline_id", "responsible_user_id", "updated_at", "last_modified")
# leads, contacts, status, add, …: short enough that "entity.action" fits its column.
_NAME = re.compile(r"^[a-z][a-z_]{0,14}$")
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


class WebhookFormatError(ValueError):
    """The body is not a Kommo webhook; the message says which part is wrong."""


@dataclass(frozen=True)
class WebhookAccount:
    id: str | None
    subdomain: str | None
    self_url: str | None


@dataclass(frozen=True)
class WebhookEntry:
    entity: str  # leads, contacts, companies, task, catalogs, ...
    action: str  # add, update, delete, restore, status, responsible, note
    entity_id: str
    fields: dict[str, Any] = field(default_factory=dict)

    def int_field(self, name: str) -> int | None:
        value = self.fields.get(name)
        if value in (None, ""):
            return None
        try:
            number = int(value)
        except (TypeError, ValueError) as exc:
            raise WebhookFormatError(
                f"{self.entity}[{self.action}][…][{name}] must be an integer, got {value!r}"
            ) from exc
        if not 0 <= number <= BIGINT_MAX:
            raise WebhookFormatError(f"{self.entity}[{self.action}][…][{name}] is out of range")
        return number

    @property
    def changed_at(self) -> int:
        """Kommo's own change time: newer captures send updated_at, older ones last_modified."""
        return self.int_field("updated_at") or self.int_field("last_modified") or 0


@dataclass(frozen=True)
class KommoWebhook:
    account: WebhookAccount
    entries: tuple[WebhookEntry, ...]


def parse_webhook(body: bytes) -> KommoWebhook:
    tree = parse_bracketed_form(body)
    account = tree.get("account")
    if not isinstance(account, dict) or not (account.get("id") or account.get("subdomain")):
        raise WebhookFormatError("missing account[id] / account[subdomain]")
    entries = tuple(_entries(tree))
    if not entries:
        raise WebhookFormatError("no events in the body (expected keys like leads[status][0][id])")
    links = account.get("_links")
    self_url = links.get("self") if isinstance(links, dict) else None
    return KommoWebhook(
        account=WebhookAccount(
            id=_str_or_none(account.get("id")),
            subdomain=_str_or_none(account.get("subdomain")),
            self_url=_str_or_none(self_url),
        ),
        entries=entries,
    )


def _entries(tree: dict[str, Any]) -> list[WebhookEntry]:
    found: list[WebhookEntry] = []
    for entity, actions in tree.items():
        if entity == "account":
            continue
        if not isinstance(actions, dict):
            raise WebhookFormatError(f"{entity} must hold actions like {entity}[status][0][id]")
        if not _NAME.match(entity):
            raise WebhookFormatError(f"unknown entity name {entity[:40]!r}")
        for action, items in actions.items():
            if not _NAME.match(action):
                raise WebhookFormatError(f"unknown action name {entity}[{action[:40]}]")
            if isinstance(items, dict) and len(found) + len(items) > MAX_ENTRIES:
                raise WebhookFormatError(
                    f"more than {MAX_ENTRIES} entries in one body (the limit is {MAX_ENTRIES})"
                )
            found.extend(_action_entries(entity, action, items))
    return found


def _action_entries(entity: str, action: str, items: Any) -> list[WebhookEntry]:
    if not isinstance(items, dict):
        raise WebhookFormatError(f"{entity}[{action}] must hold indexed entries like [0][id]")
    entries = []
    for index, fields in sorted(items.items(), key=lambda kv: _index(entity, action, kv[0])):
        if not isinstance(fields, dict):
            raise WebhookFormatError(f"{entity}[{action}][{index}] must hold fields like [id]")
        entity_id = str(fields.get("id") or "").strip()
        # Only leads are acted on (and stored), so only a lead needs its id; other entities are
        # counted whatever they carry.
        if not entity_id and entity == "leads":
            raise WebhookFormatError(f"{entity}[{action}][{index}] has no [id]")
        if len(entity_id) > MAX_ID_LENGTH:
            raise WebhookFormatError(f"{entity}[{action}][{index}][id] is too long")
        if not entity_id.isprintable():
            raise WebhookFormatError(f"{entity}[{action}][{index}][id] has control characters")
        if entity == "leads" and not (_is_number(entity_id) and int(entity_id) <= BIGINT_MAX):
            raise WebhookFormatError(f"leads[{action}][{index}][id] must be an integer")
        entry = WebhookEntry(entity, action, entity_id, fields)
        for name in INT_FIELDS:  # refuse a bad number now, not when the event is built
            entry.int_field(name)
        entries.append(entry)
    return entries


def _is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²', which int() refuses."""
    return text.isascii() and text.isdigit()


def _index(entity: str, action: str, index: str) -> int:
    if not _is_number(index):
        raise WebhookFormatError(f"{entity}[{action}][{index}]: the index must be a number")
    if len(index) > MAX_INDEX_DIGITS:
        raise WebhookFormatError(
            f"{entity}[{action}][{index[:12]}…]: an index has at most {MAX_INDEX_DIGITS} digits"
        )
    return int(index)


def parse_bracketed_form(body: bytes) -> dict[str, Any]:
    """`parse_qsl(strict_parsing=True, keep_blank_values=True)`'s reading of the body, with each
    distinct key decoded and split once per process: Kommo's bodies repeat the same few keys,
    and decoding them was most of the webhook parser's time (bench/)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookFormatError("the body is not UTF-8") from exc
    if not text:
        return {}
    if text.count("&") + 1 > MAX_FIELDS:
        raise WebhookFormatError("not a form-encoded body: Max number of fields exceeded")
    tree: dict[str, Any] = {}
    for pair in text.split("&"):
        raw_key, equals, raw_value = pair.partition("=")
        if not equals:
            raise WebhookFormatError(f"not a form-encoded body: bad query field: {pair[:80]!r}")
        key, parts = _key(raw_key)
        value = _unquote(raw_value)
        if "\x00" in value:
            raise WebhookFormatError("the body contains a NUL character")  # PostgreSQL stores none
        _assign(tree, parts, value, key)
    return tree


@lru_cache(maxsize=2048)
def _key(raw: str) -> tuple[str, tuple[str, ...]]:
    """A raw (still percent-encoded) key: its text and its checked parts. Bounded, and a key
    that is refused raises every time (errors are not cached)."""
    key = _unquote(raw)
    if "\x00" in key:
        raise WebhookFormatError("the body contains a NUL character")
    return key, tuple(_split_key(key))


def _unquote(raw: str) -> str:
    """As parse_qsl decodes a name or value: '+' is a space, %XX a UTF-8 byte (errors replaced)."""
    if "%" not in raw and "+" not in raw:
        return raw
    return unquote(raw.replace("+", " "))


def _split_key(key: str) -> list[str]:
    match = _KEY.match(key)
    if match is None:
        raise WebhookFormatError(f"malformed key {key[:80]!r}")
    parts = [match.group(1), *_PART.findall(match.group(2))]
    if len(parts) > MAX_DEPTH:
        raise WebhookFormatError(f"key {key[:80]!r} is nested deeper than {MAX_DEPTH} levels")
    if any(len(p) > MAX_KEY_PART_LENGTH for p in parts):
        raise WebhookFormatError(
            f"key {key[:80]!r}…: a name or index is longer than {MAX_KEY_PART_LENGTH} characters"
        )
    if any(p == "" for p in parts[1:]):
        raise WebhookFormatError(f"key {key[:80]!r} uses [] without an index")
    return parts


def _assign(tree: dict[str, Any], parts: tuple[str, ...], value: str, key: str) -> None:
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise WebhookFormatError(
                f"key {key[:80]!r} conflicts with a plain value sent before it"
            )
        node = child
    if isinstance(node.get(parts[-1]), dict):
        raise WebhookFormatError(f"key {key[:80]!r} conflicts with nested keys sent before it")
    node[parts[-1]] = value


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
