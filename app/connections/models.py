"""The `connections` table: one row per upstream account the bridge holds a grant for."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models import Base, BigId, utcnow


class Provider(enum.StrEnum):
    SAGE = "sage"
    KOMMO = "kommo"


class ConnectionState(enum.StrEnum):
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"  # the grant is dead: jobs park until ops connect again


class GrantKind(enum.StrEnum):
    OAUTH = "oauth"  # access + rotating refresh token
    LONG_LIVED = "long_lived"  # a Kommo private-integration token: no refresh token


class Connection(Base):
    """Tokens are Fernet ciphertext (see app/connections/crypto.py); `generation` counts token
    writes, so a writer can tell whether the pair it read is still the current one."""

    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("provider", "account", name="uq_connection"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(16))
    # Sage: the business id (X-Business); Kommo: the account id.
    account: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    display_name: Mapped[str | None] = mapped_column(String(255))
    # Kommo: https://{referer}, where its API and token endpoint live. Sage: none.
    base_url: Mapped[str | None] = mapped_column(Text)
    encrypted_access_token: Mapped[str] = mapped_column(Text)
    encrypted_refresh_token: Mapped[str | None] = mapped_column(Text)
    access_expires_at: Mapped[datetime | None]
    refresh_expires_at: Mapped[datetime | None]
    state: Mapped[str] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    connected_at: Mapped[datetime] = mapped_column(default=utcnow)
    refreshed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
