"""Who may use the console: it is off without OPS_API_TOKEN; every page needs a session; every
POST needs the session's CSRF token. Each refusal is a page (or a redirect to the login page),
never JSON: a person is reading it."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import parse_qsl, urlencode

import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from app.connections.runtime import Connections
from app.console.pages import message, redirect
from app.console.sessions import (
    SESSION_COOKIE,
    ConsoleSessions,
    Session,
    SessionsUnavailable,
    csrf_holds,
)
from app.routes.deps import SettingsDep, read_limited_body
from app.settings import Settings

log = structlog.get_logger(__name__)
MAX_FORM_BYTES = 64 * 1024
Form = dict[str, str]


class ConsoleOff(Exception):
    """OPS_API_TOKEN is unset: the console is off, as the /ops endpoints are."""


class LoginRequired(Exception):
    def __init__(self, back: str) -> None:
        super().__init__(back)
        self.back = back


class CsrfRefused(Exception):
    """A POST without this session's CSRF token."""


async def console_on(settings: SettingsDep) -> None:
    if settings.ops_api_token is None:
        raise ConsoleOff()


async def get_sessions(request: Request, settings: SettingsDep) -> ConsoleSessions:
    """One per process, on the Redis client the connections already keep."""
    sessions: ConsoleSessions | None = getattr(request.app.state, "console_sessions", None)
    if sessions is None:
        connections: Connections = request.app.state.connections
        sessions = request.app.state.console_sessions = ConsoleSessions(
            connections.redis,
            settings.secret("ops_api_token"),
            timedelta(minutes=settings.console_session_minutes),
        )
    return sessions


SessionsDep = Annotated[ConsoleSessions, Depends(get_sessions)]


async def current_login(request: Request, sessions: SessionsDep) -> Session:
    session = await sessions.get(request.cookies.get(SESSION_COOKIE))
    if session is None:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(back if request.method == "GET" else "/console")
    return session


LoginDep = Annotated[Session, Depends(current_login)]


async def read_form(request: Request) -> Form:
    """A urlencoded form body (what a plain HTML form posts), last value of each name."""
    if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
        return {}
    body = await read_limited_body(request, MAX_FORM_BYTES)
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def posted_form(request: Request, login: LoginDep) -> Form:
    form = await read_form(request)
    if not csrf_holds(login, form.get("csrf_token")):
        log.warning("console.csrf_refused", path=request.url.path)
        raise CsrfRefused()
    return form


FormDep = Annotated[Form, Depends(posted_form)]


def set_cookie(
    response: Response, settings: Settings, name: str, value: str, *, path: str, max_age: int
) -> None:
    """HttpOnly, SameSite=Strict; Secure when browsers reach the bridge over https."""
    response.set_cookie(
        name,
        value,
        path=path,
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=(settings.public_base_url or "").startswith("https://"),
    )


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ConsoleOff, _off)
    app.add_exception_handler(LoginRequired, _to_login)  # type: ignore[arg-type]
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    app.add_exception_handler(SessionsUnavailable, _no_sessions)


async def _off(_request: Request, _exc: Exception) -> Response:
    return message(
        404,
        "The console is off",
        "The console is off because OPS_API_TOKEN is not set. Set it (at least 32 characters) "
        "and restart the API to use the console.",
    )


async def _to_login(_request: Request, exc: LoginRequired) -> Response:
    return redirect(f"/console/login?{urlencode({'next': exc.back})}")


async def _csrf_refused(_request: Request, _exc: Exception) -> Response:
    return message(
        403,
        "Refused: this form did not come from the console",
        "The form carried no valid CSRF token, so nothing was done. Reload the console page "
        "and use its buttons.",
    )


async def _no_sessions(_request: Request, exc: Exception) -> Response:
    log.error("console.sessions_unavailable", error=str(exc))
    return message(
        503,
        "The console cannot reach Redis",
        f"The console keeps its sessions in Redis, which did not answer ({exc}). Check "
        "REDIS_URL and that Redis is up; GET /readyz names what fails.",
    )
