"""The token store: every query on `connections`, with tokens encrypted on the way in and
decrypted on the way out. Callers commit; a refreshed pair must be committed before use."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.connections.crypto import TokenCipher
from app.connections.models import Connection, ConnectionState, GrantKind, Provider
from app.models import utcnow


@dataclass(frozen=True)
class ConnectionKey:
    provider: Provider
    account: str

    def __str__(self) -> str:
        return f"{self.provider.value}:{self.account}"


@dataclass(frozen=True)
class TokenSet:
    """A grant's tokens in clear. `repr` leaves them out so no traceback or log shows them."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None


@dataclass(frozen=True)
class Snapshot:
    """One row as read, decrypted. `generation` says which write it came from."""

    key: ConnectionKey
    kind: GrantKind
    state: ConnectionState
    generation: int
    base_url: str | None
    last_error: str | None
    tokens: TokenSet


@dataclass(frozen=True)
class NewConnection:
    key: ConnectionKey
    kind: GrantKind
    tokens: TokenSet
    display_name: str | None
    base_url: str | None


class ConnectionInfo(BaseModel):
    """What ops may see of a connection: never a token."""

    provider: Provider
    account: str
    name: str | None
    kind: GrantKind
    state: ConnectionState
    base_url: str | None
    access_expires_at: datetime | None
    refresh_expires_at: datetime | None
    generation: int
    last_error: str | None
    connected_at: datetime
    refreshed_at: datetime | None
    updated_at: datetime

    @property
    def grant_expires_at(self) -> datetime | None:
        """What must be renewed before it runs out: the refresh token, or a long-lived token
        (which has none) itself."""
        if self.kind == GrantKind.LONG_LIVED:
            return self.access_expires_at
        return self.refresh_expires_at

    @classmethod
    def of(cls, row: Connection) -> ConnectionInfo:
        return cls(
            provider=Provider(row.provider),
            account=row.account,
            name=row.display_name,
            kind=GrantKind(row.kind),
            state=ConnectionState(row.state),
            base_url=row.base_url,
            access_expires_at=row.access_expires_at,
            refresh_expires_at=row.refresh_expires_at,
            generation=row.generation,
            last_error=row.last_error,
            connected_at=row.connected_at,
            refreshed_at=row.refreshed_at,
            updated_at=row.updated_at,
        )


class ConnectionStore:
    def __init__(self, session: AsyncSession, cipher: TokenCipher | None) -> None:
        self.session = session
        self._cipher = cipher

    async def load(self, key: ConnectionKey) -> Snapshot | None:
        row = await self._row(key)
        return None if row is None else self._snapshot(row)

    async def list_all(self) -> list[ConnectionInfo]:
        rows = await self.session.scalars(
            select(Connection).order_by(Connection.provider, Connection.account)
        )
        return [ConnectionInfo.of(row) for row in rows.all()]

    async def save_connected(self, new: NewConnection) -> ConnectionInfo:
        """A new grant replaces whatever was there (a reconnect revives a dead connection)."""
        row = await self._row(new.key)
        if row is None:
            row = Connection(provider=new.key.provider.value, account=new.key.account)
            row.generation = 0
            self.session.add(row)
        now = utcnow()
        row.kind = new.kind.value
        row.display_name = new.display_name
        row.base_url = new.base_url
        row.connected_at = now
        row.refreshed_at = None
        row.generation += 1
        for name, value in self._token_values(new.tokens, now).items():
            setattr(row, name, value)
        await self.session.flush()
        return ConnectionInfo.of(row)

    async def save_refreshed(
        self, key: ConnectionKey, tokens: TokenSet, *, seen_generation: int
    ) -> bool:
        """Write the new pair only if the row still holds the pair it replaces."""
        values = {**self._token_values(tokens, utcnow()), "refreshed_at": utcnow()}
        return await self._update_if_current(
            key, seen_generation, {**values, "generation": seen_generation + 1}
        )

    async def mark_needs_reauth(
        self, key: ConnectionKey, detail: str, *, seen_generation: int
    ) -> bool:
        """The generation stays: a holder that did refresh (and was merely slow) can still
        commit its pair over this and so revive the connection."""
        values = {
            "state": ConnectionState.NEEDS_REAUTH.value,
            "last_error": detail,
            "updated_at": utcnow(),
        }
        return await self._update_if_current(key, seen_generation, values)

    async def refresh_expiring(
        self, providers: tuple[Provider, ...], *, before: datetime
    ) -> list[ConnectionKey]:
        """Active connections whose refresh token dies before `before` (for the keep-alive)."""
        stmt = select(Connection.provider, Connection.account).where(
            Connection.provider.in_([p.value for p in providers]),
            Connection.state == ConnectionState.ACTIVE.value,
            Connection.refresh_expires_at < before,
        )
        rows = await self.session.execute(stmt)
        return [ConnectionKey(Provider(provider), account) for provider, account in rows]

    async def rotate(self) -> int:
        """Re-encrypt every row with the first key; returns how many rows were rewritten."""
        cipher = self._require_cipher()
        rows = (await self.session.scalars(select(Connection))).all()
        rotated = 0
        for row in rows:
            values: dict[str, Any] = {
                "encrypted_access_token": cipher.rotate(row.encrypted_access_token)
            }
            if row.encrypted_refresh_token is not None:
                values["encrypted_refresh_token"] = cipher.rotate(row.encrypted_refresh_token)
            # A refresh that wrote meanwhile already used the first key: leave its pair alone.
            key = ConnectionKey(Provider(row.provider), row.account)
            rotated += await self._update_if_current(key, row.generation, values)
        return rotated

    async def _update_if_current(
        self, key: ConnectionKey, generation: int, values: dict[str, Any]
    ) -> bool:
        stmt = (
            update(Connection)
            .where(*_is(key), Connection.generation == generation)
            .values(**values)
            .returning(Connection.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def _row(self, key: ConnectionKey) -> Connection | None:
        stmt = select(Connection).where(*_is(key)).execution_options(populate_existing=True)
        return (await self.session.scalars(stmt)).one_or_none()

    def _token_values(self, tokens: TokenSet, now: datetime) -> dict[str, Any]:
        cipher = self._require_cipher()
        refresh = tokens.refresh_token
        return {
            "encrypted_access_token": cipher.encrypt(tokens.access_token),
            "encrypted_refresh_token": cipher.encrypt(refresh) if refresh is not None else None,
            "access_expires_at": tokens.access_expires_at,
            "refresh_expires_at": tokens.refresh_expires_at,
            "state": ConnectionState.ACTIVE.value,
            "last_error": None,
            "updated_at": now,
        }

    def _snapshot(self, row: Connection) -> Snapshot:
        cipher = self._require_cipher()
        refresh = row.encrypted_refresh_token
        tokens = TokenSet(
            access_token=cipher.decrypt(row.encrypted_access_token),
            refresh_token=cipher.decrypt(refresh) if refresh is not None else None,
            access_expires_at=row.access_expires_at,
            refresh_expires_at=row.refresh_expires_at,
        )
        return Snapshot(
            key=ConnectionKey(Provider(row.provider), row.account),
            kind=GrantKind(row.kind),
            state=ConnectionState(row.state),
            generation=row.generation,
            base_url=row.base_url,
            last_error=row.last_error,
            tokens=tokens,
        )

    def _require_cipher(self) -> TokenCipher:
        if self._cipher is None:
            raise RuntimeError("this ConnectionStore was opened without encryption keys")
        return self._cipher


def _is(key: ConnectionKey) -> tuple[Any, ...]:
    return (Connection.provider == key.provider.value, Connection.account == key.account)


async def rotate(sessionmaker: async_sessionmaker[AsyncSession], cipher: TokenCipher) -> int:
    """Move every stored token to the first key, after which older keys can be dropped."""
    async with sessionmaker() as session:
        rotated = await ConnectionStore(session, cipher).rotate()
        await session.commit()
    return rotated
