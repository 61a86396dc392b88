"""The ledger mapping in force: versions in the database, loaded from the YAML file ops edit.

Loading the file (at start-up, when it changes, on `POST /ops/mappings/reload`, from
`sagebridge mappings load`) validates it as a whole and, when its content differs from the
version in force, stores a new version; a refused file changes nothing in force and is recorded
as a refusal. Every process reads the newest version's id per use (one indexed query) and parses
a version once, so all processes on all hosts use the same rules as soon as one has stored them.
"""

from __future__ import annotations

import enum
import hashlib
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.connections.errors import ReauthorizationRequired
from app.errors import UpstreamError
from app.mapping import (
    LedgerMapping,
    MappingError,
    parse_mapping,
    read_mapping_text,
    sort_by_line,
)
from app.models import MappingRefusal, MappingVersion, utcnow
from app.ports import Accounting
from app.settings import Settings

log = structlog.get_logger(__name__)
# Two processes storing different edits at the same instant: the loser stores on top, once more.
STORE_ATTEMPTS = 3


class NoMappingInForce(MappingError):
    """No version is stored yet (start-up found the database down and will try again)."""

    def __init__(self) -> None:
        super().__init__(
            "database",
            [
                "no mapping version is in force yet: the API or a worker stores one when it "
                "starts (or run `sagebridge mappings load`)"
            ],
        )


class How(enum.StrEnum):
    START = "start"
    FILE_CHANGE = "file change"
    OPS_RELOAD = "ops reload"
    CLI = "CLI"


@dataclass(frozen=True)
class Process:
    """What loads the file: `api`, `worker` or `cli`, on this host."""

    name: str
    host: str = field(default_factory=socket.gethostname)

    def describe(self, how: How) -> str:
        # Which ops token holder called the API cannot be known: the API is all we can name.
        described = {
            How.START: f"{self.name} start on {self.host}",
            How.FILE_CHANGE: f"file change seen by {self.name} on {self.host}",
            How.OPS_RELOAD: f"ops API on {self.host}",
            How.CLI: f"CLI on {self.host}",
        }[how]
        return described[:255]


@dataclass(frozen=True)
class CurrentMapping:
    """A stored version and its parsed rules."""

    id: int
    sha256: str
    source: str
    loaded_at: datetime
    loaded_by: str
    mapping: LedgerMapping

    @classmethod
    def of(cls, row: MappingVersion, mapping: LedgerMapping | None = None) -> CurrentMapping:
        parsed = mapping or parse_mapping(row.content, source=row.source)
        return cls(row.id, row.sha256, row.source, row.loaded_at, row.loaded_by, parsed)


class MappingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def newest_id(self) -> int | None:
        return await self.session.scalar(select(func.max(MappingVersion.id)))

    async def get(self, version_id: int) -> MappingVersion | None:
        return await self.session.get(MappingVersion, version_id)

    async def newest(self) -> MappingVersion | None:
        newest = await self.newest_id()
        return None if newest is None else await self.get(newest)

    async def has_held(self, sha256: str) -> bool:
        found = await self.session.scalar(
            select(MappingVersion.id).where(MappingVersion.sha256 == sha256).limit(1)
        )
        return found is not None

    async def add(self, version: MappingVersion) -> None:
        self.session.add(version)
        await self.session.flush()

    async def last_refusal(self) -> MappingRefusal | None:
        return await self.session.scalar(
            select(MappingRefusal)
            .where(MappingRefusal.resolved_at.is_(None))
            .order_by(MappingRefusal.id.desc())
            .limit(1)
        )

    async def refuse(self, refusal: MappingRefusal) -> None:
        """Record a refusal, unless it repeats the last one (a watcher retrying while Sage is
        down would otherwise add one every few seconds)."""
        last = await self.last_refusal()
        if last and (last.sha256, last.problems) == (refusal.sha256, refusal.problems):
            return
        self.session.add(refusal)

    async def resolve_refusals(self) -> None:
        await self.session.execute(
            update(MappingRefusal)
            .where(MappingRefusal.resolved_at.is_(None))
            .values(resolved_at=utcnow())
        )


class MappingInForce:
    """The newest stored version: one indexed query per use, the YAML parsed once per version."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._cached: CurrentMapping | None = None

    async def get(self) -> CurrentMapping:
        async with self._sessionmaker() as session:
            repo = MappingRepository(session)
            newest = await repo.newest_id()
            if newest is None:
                raise NoMappingInForce()
            if self._cached is None or self._cached.id != newest:
                row = await repo.get(newest)
                assert row is not None, "versions are never deleted"
                self._cached = CurrentMapping.of(row)
                log.info("mapping.in_force", version=row.id, sha256=row.sha256)
        return self._cached


@dataclass
class Mappings:
    """One process's mapping: the version in force (from the database) and its own copy of the
    file, stored as a new version when it is loaded and differs."""

    path: Path
    sessionmaker: async_sessionmaker[AsyncSession]
    process: Process
    in_force: MappingInForce
    check_on_start: bool = True
    # The file content this process last looked at: only a change of its own file is an edit.
    _file_sha256: str | None = None
    _started: bool = False
    # Why the file cannot be read now (deleted, unreadable); the version in force stays.
    file_problem: str | None = None

    @classmethod
    def create(
        cls,
        path: Path,
        sessionmaker: async_sessionmaker[AsyncSession],
        process: str,
        *,
        check_on_start: bool = True,
    ) -> Mappings:
        in_force = MappingInForce(sessionmaker)
        return cls(path, sessionmaker, Process(process), in_force, check_on_start)

    async def current(self) -> CurrentMapping:
        return await self.in_force.get()

    async def mapping(self) -> LedgerMapping:
        return (await self.in_force.get()).mapping

    async def newest_id(self) -> int | None:
        async with self.sessionmaker() as session:
            return await MappingRepository(session).newest_id()

    async def last_refusal(self) -> MappingRefusal | None:
        async with self.sessionmaker() as session:
            return await MappingRepository(session).last_refusal()

    async def start(self, accounting: Accounting | None) -> CurrentMapping:
        """Start-up. A content the database never held is validated (Sage unreachable: a
        warning) and stored; an invalid file stops the process. A content it held before (an
        older copy on this host) is not put back in force by a restart. Without a readable
        file the version in force is used, if there is one."""
        text = self._file_text()
        if text is None:
            return await self._start_without_file()
        self._file_sha256 = digest = _sha256(text)
        async with self.sessionmaker() as session:
            held = await MappingRepository(session).has_held(digest)
        if held:
            current = await self.current()
            _warn_if_not_in_force(self.path, digest, current)
        else:
            checked_by = accounting if self.check_on_start else None
            current = await self._load_text(text, How.START, checked_by, unverifiable_ok=True)
        self._started = True
        return current

    async def _start_without_file(self) -> CurrentMapping:
        try:
            current = await self.current()
        except NoMappingInForce:
            raise MappingError(
                str(self.path), [self.file_problem or "cannot read the file"]
            ) from None
        self._started = True
        return current

    def _file_text(self) -> str | None:
        """The file's text; None when it cannot be read, logged when that starts and ends."""
        try:
            text = read_mapping_text(self.path)
        except MappingError as exc:
            if self.file_problem != exc.problems[0]:
                log.error(
                    "mapping.file_unreadable",
                    file=str(self.path),
                    problem=exc.problems[0],
                    detail="the version in force stays in force; restore the file to edit it",
                )
            self.file_problem = exc.problems[0]
            return None
        if self.file_problem is not None:
            log.info("mapping.file_readable", file=str(self.path))
            self.file_problem = None
        return text

    async def load(self, how: How, accounting: Accounting | None) -> CurrentMapping:
        """Ops' reload (API or CLI): the file and its ids against Sage (without an accounting
        system, the file alone), all or nothing."""
        text = read_mapping_text(self.path)
        self._file_sha256 = _sha256(text)
        return await self._load_text(text, how, accounting, unverifiable_ok=False)

    async def pick_up_edit(self, accounting: Accounting | None) -> CurrentMapping | None:
        """The file watcher: load the file if it changed since this process last looked.
        Never raises for a bad file; one that could not be checked is tried again next time."""
        if not self._started:
            return await self._start_late(accounting)
        text = self._file_text()
        if text is None:
            return None
        digest = _sha256(text)
        if digest == self._file_sha256:
            return None
        try:
            loaded = await self._load_text(text, How.FILE_CHANGE, accounting, unverifiable_ok=False)
        except MappingError as exc:
            if not exc.unverifiable:
                self._file_sha256 = digest
            return None
        self._file_sha256 = digest
        return loaded

    async def _start_late(self, accounting: Accounting | None) -> CurrentMapping | None:
        """Start-up found the database down; the watcher tries again until it is back."""
        try:
            return await self.start(accounting)
        except MappingError:
            self._started = True  # refused and recorded: the file's next edit is picked up
            return None

    async def _load_text(
        self, text: str, how: How, accounting: Accounting | None, *, unverifiable_ok: bool
    ) -> CurrentMapping:
        try:
            candidate = await validated(
                text, str(self.path), accounting, unverifiable_ok=unverifiable_ok
            )
        except MappingError as exc:
            await self._refuse(_sha256(text), exc, how)
            raise
        return await self._store(text, candidate, how)

    async def _store(self, text: str, candidate: LedgerMapping, how: How) -> CurrentMapping:
        for _ in range(STORE_ATTEMPTS):
            async with self.sessionmaker() as session:
                repo = MappingRepository(session)
                newest = await repo.newest()
                if newest is not None and newest.sha256 == candidate.sha256:
                    await repo.resolve_refusals()
                    await session.commit()
                    return CurrentMapping.of(newest, candidate)
                version = self._version(text, candidate, how, replaces=newest)
                try:
                    await repo.add(version)
                    await repo.resolve_refusals()
                    await session.commit()
                except IntegrityError:
                    continue  # another process stored a version on the same one: look again
            log.info(
                "mapping.stored",
                version=version.id,
                sha256=version.sha256,
                rules=version.rule_count,
                loaded_by=version.loaded_by,
            )
            return CurrentMapping.of(version, candidate)
        raise MappingError(
            str(self.path), ["other processes kept storing mapping versions meanwhile; try again"]
        )

    def _version(
        self, text: str, candidate: LedgerMapping, how: How, *, replaces: MappingVersion | None
    ) -> MappingVersion:
        return MappingVersion(
            replaces_id=replaces.id if replaces else 0,
            content=text,
            sha256=candidate.sha256,
            source=str(self.path),
            rule_count=len(candidate.file.rules),
            how=how.value,
            loaded_by=self.process.describe(how),
            loaded_at=utcnow(),
        )

    async def _refuse(self, digest: str, exc: MappingError, how: How) -> None:
        refusal = MappingRefusal(
            sha256=digest,
            source=str(self.path),
            problems=exc.problems,
            how=how.value,
            refused_by=self.process.describe(how),
            refused_at=utcnow(),
        )
        async with self.sessionmaker() as session:
            await MappingRepository(session).refuse(refusal)
            await session.commit()
        log.error("mapping.refused", problems=exc.problems, how=how.value)


def _warn_if_not_in_force(path: Path, digest: str, current: CurrentMapping) -> None:
    if current.sha256 != digest:
        log.warning(
            "mapping.file_not_in_force",
            file=str(path),
            file_sha256=digest,
            version=current.id,
            sha256=current.sha256,
            detail="this file is an earlier version: reload it to put it back in force",
        )


async def validated(
    text: str, source: str, accounting: Accounting | None, *, unverifiable_ok: bool
) -> LedgerMapping:
    """The file, and its ids against the accounting system when there is one: every problem
    of both at once (the ids of the valid rules are checked even when others are not)."""
    try:
        mapping = parse_mapping(text, source=source)
    except MappingError as exc:
        if exc.valid_part is None or accounting is None:
            raise
        unknown = await _id_problems(exc.valid_part, accounting)
        raise MappingError(source, sort_by_line(exc.problems + unknown)) from exc
    await _check(mapping, accounting, unverifiable_ok=unverifiable_ok)
    return mapping


async def _id_problems(mapping: LedgerMapping, accounting: Accounting) -> list[str]:
    try:
        await check_ids(mapping, accounting)
    except MappingError as exc:
        return exc.problems
    return []


async def _check(
    mapping: LedgerMapping, accounting: Accounting | None, *, unverifiable_ok: bool
) -> None:
    if accounting is None:
        return
    try:
        await check_ids(mapping, accounting)
    except MappingError as exc:
        if not (exc.unverifiable and unverifiable_ok):
            raise
        log.warning("mapping.unchecked", problems=exc.problems)


async def check_ids(mapping: LedgerMapping, accounting: Accounting) -> None:
    """Refuse a mapping naming ledger accounts or tax rates the accounting system lacks."""
    try:
        ledgers = await accounting.ledger_account_ids()
        rates = set(await accounting.tax_rates())
    except (UpstreamError, ReauthorizationRequired) as exc:
        raise MappingError(
            mapping.source,
            [f"could not check the ids against {accounting.name}: {exc.detail}"],
            unverifiable=True,
        ) from exc
    problems = mapping.unknown_ids(ledger_accounts=ledgers, tax_rates=rates)
    if problems:
        raise MappingError(mapping.source, problems)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def start_mappings(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    accounting: Accounting,
    *,
    process: str,
) -> Mappings:
    """Start-up of the API and the worker: this process's file loaded, the version in force.
    Without the database the process starts anyway (the API answers 503 meanwhile) and its file
    watcher completes the start-up once the database is back."""
    mappings = Mappings.create(
        settings.ledger_mappings_path,
        sessionmaker,
        process,
        check_on_start=settings.mapping_check_on_start,
    )
    try:
        await mappings.start(accounting)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("mapping.start_deferred", error=type(exc).__name__)
    return mappings
