"""Console sessions: the ops token, given once on the login page, becomes a session cookie.

The cookie holds a random session id signed and timestamped by itsdangerous with the ops token
as the key, so a changed OPS_API_TOKEN ends every session. The session itself (its CSRF token)
lives in Redis for CONSOLE_SESSION_MINUTES, so logging out ends it for every API process at
once. The login form carries a token of its own, checked against a signed cookie (the form is
posted before any session exists).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from itsdangerous import BadSignature, TimestampSigner
from redis.asyncio import Redis
from redis.exceptions import RedisError

SESSION_COOKIE = "sagebridge_console"
LOGIN_COOKIE = "sagebridge_console_login"
LOGIN_FORM_SECONDS = 3600
NOTICE_SECONDS = 300
PREFIX = "sagebridge:console:session:"
Clock = Callable[[], float]
T = TypeVar("T")


class SessionsUnavailable(Exception):
    """Redis, where the sessions live, cannot be reached."""


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str


@dataclass(frozen=True)
class Notice:
    """A line shown once, on the page an action redirects to."""

    text: str
    tone: str = "ok"  # ok | bad


class _Signer(TimestampSigner):
    """itsdangerous' timestamped signer on an injectable clock (tests move time)."""

    def __init__(self, secret: str, salt: str, clock: Clock) -> None:
        super().__init__(secret, salt=salt)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


class ConsoleSessions:
    def __init__(
        self, redis: Redis, secret: str, ttl: timedelta, *, clock: Clock = time.time
    ) -> None:
        self._redis = redis
        self.ttl = ttl
        self._sessions = _Signer(secret, "sagebridge.console.session", clock)
        self._login = _Signer(secret, "sagebridge.console.login", clock)

    async def create(self) -> tuple[str, Session]:
        """A new session and the cookie value that names it."""
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        record = json.dumps({"csrf": session.csrf})
        await _reached(self._redis.set(_key(session.id), record, ex=int(self.ttl.total_seconds())))
        return self._sessions.sign(session.id).decode(), session

    async def get(self, cookie: str | None) -> Session | None:
        """The session the cookie names, if its signature holds, it is younger than the TTL
        and it was not ended."""
        if not cookie:
            return None
        try:
            session_id = self._sessions.unsign(cookie, max_age=int(self.ttl.total_seconds()))
        except BadSignature:  # SignatureExpired included
            return None
        raw = await _reached(self._redis.get(_key(session_id.decode())))
        if raw is None:
            return None
        return Session(session_id.decode(), str(json.loads(raw)["csrf"]))

    async def end(self, session: Session) -> None:
        await _reached(self._redis.delete(_key(session.id), _notice_key(session.id)))

    async def tell(self, session: Session, notice: Notice) -> None:
        value = json.dumps({"text": notice.text, "tone": notice.tone})
        await _reached(self._redis.set(_notice_key(session.id), value, ex=NOTICE_SECONDS))

    async def notice(self, session: Session) -> Notice | None:
        """The notice left for this session's next page, once."""
        raw = await _reached(self._redis.getdel(_notice_key(session.id)))
        return Notice(**json.loads(raw)) if raw else None

    def login_form(self) -> tuple[str, str]:
        """A token for the login form, and the signed cookie that must come back with it."""
        token = secrets.token_urlsafe(32)
        return token, self._login.sign(token).decode()

    def login_form_holds(self, cookie: str | None, token: str) -> bool:
        if not cookie or not token:
            return False
        try:
            expected = self._login.unsign(cookie, max_age=LOGIN_FORM_SECONDS)
        except BadSignature:
            return False
        return hmac.compare_digest(expected, token.encode())


def csrf_holds(session: Session, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf.encode(), (token or "").encode())


async def _reached(call: Awaitable[T]) -> T:
    try:
        return await call
    except (RedisError, OSError) as exc:
        raise SessionsUnavailable(type(exc).__name__) from exc


def _key(session_id: str) -> str:
    """Only a hash of the id is stored: whoever reads Redis cannot take over a session."""
    return PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def _notice_key(session_id: str) -> str:
    return _key(session_id) + ":notice"
