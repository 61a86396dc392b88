"""The simulators' records as one JSON document, and back: a restarted sandbox carries on
where it stopped (`sagebridge run` keeps the file beside the bridge's own database).

Only records are kept: the Sage businesses and their books, the Kommo account's users,
pipelines, fields, contacts, catalogs, leads, tasks and webhooks. Request logs, armed faults,
rate-limit windows and OAuth tokens issued at run time start afresh.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from sandbox.common.ids import Clock, utc_now
from sandbox.kommo.models import (
    Account,
    Catalog,
    Contact,
    CustomField,
    Lead,
    Pipeline,
    Task,
    User,
    Webhook,
)
from sandbox.kommo.state import KommoState
from sandbox.sage.models import Book
from sandbox.sage.state import SageState

FORMAT = 1


class SnapshotError(ValueError):
    """The file is not a snapshot this sandbox can read; the message says why."""


@dataclass
class _Idempotent:
    """One remembered POST (`Book.idempotent` is keyed by a pair, which JSON cannot key)."""

    entity: str
    idempotency_id: str
    status: int
    body: Any


@dataclass
class _Sage:
    books: dict[str, Book]
    granted: list[str]
    idempotent: dict[str, list[_Idempotent]] = field(default_factory=dict)


@dataclass
class _Kommo:
    account: Account
    users: dict[int, User]
    admin_user_id: int
    pipelines: dict[int, Pipeline]
    lead_fields: dict[int, CustomField]
    contact_fields: dict[int, CustomField]
    contacts: dict[int, Contact]
    catalogs: dict[int, Catalog]
    leads: dict[int, Lead]
    tasks: dict[int, Task]
    webhooks: dict[int, Webhook]


@dataclass
class _Snapshot:
    format: int
    sage: _Sage
    kommo: _Kommo


_ADAPTER = TypeAdapter(_Snapshot)


def dump(sage: SageState, kommo: KommoState) -> bytes:
    """Both simulators' records, read under their locks (one consistent picture)."""
    with sage.lock, kommo.lock:
        idempotent = {key: _idempotent(book) for key, book in sage.books.items()}
        snapshot = _Snapshot(
            FORMAT,
            _Sage(sage.books, sage.granted, idempotent),
            _Kommo(**{name: getattr(kommo, name) for name in _KOMMO_RECORDS}),
        )
        return _ADAPTER.dump_json(snapshot, indent=1, exclude=_BOOKS_WITHOUT_IDEMPOTENT)


_KOMMO_RECORDS = tuple(_Kommo.__dataclass_fields__)
_BOOKS_WITHOUT_IDEMPOTENT = {"sage": {"books": {"__all__": {"idempotent"}}}}


def _idempotent(book: Book) -> list[_Idempotent]:
    return [
        _Idempotent(entity, key, status, body)
        for (entity, key), (status, body) in book.idempotent.items()
    ]


def load(raw: bytes, *, clock: Clock = utc_now) -> tuple[SageState, KommoState]:
    """New states holding a dump's records; SnapshotError when `raw` is not one."""
    try:
        snapshot = _ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise SnapshotError(f"not a sandbox snapshot: {exc.error_count()} problem(s)") from exc
    if snapshot.format != FORMAT:
        raise SnapshotError(f"snapshot format {snapshot.format}, this sandbox reads {FORMAT}")
    try:
        return _sage_state(snapshot.sage, clock), _kommo_state(snapshot.kommo, clock)
    except KeyError as exc:
        raise SnapshotError(f"not a sandbox snapshot: {exc} is named but not held") from exc


def _sage_state(saved: _Sage, clock: Clock) -> SageState:
    state = SageState(clock=clock)
    state.books = saved.books
    state.granted = saved.granted
    for key, entries in saved.idempotent.items():
        book = state.books[key]
        for e in entries:
            book.idempotent[(e.entity, e.idempotency_id)] = (e.status, e.body)
    return state


def _kommo_state(saved: _Kommo, clock: Clock) -> KommoState:
    state = KommoState(saved.account, saved.users[saved.admin_user_id], clock=clock)
    for name in _KOMMO_RECORDS:
        setattr(state, name, getattr(saved, name))
    state.continue_ids()
    return state


def write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step (a crash leaves the old file or the new one),
    readable by this user only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
