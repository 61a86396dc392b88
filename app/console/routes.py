"""The console's pages and buttons (`/console`). Each calls what the matching /ops endpoint
calls (the inbox's ops actions, the mapping in force, the connect flow), so the console and the
API cannot disagree; buttons are plain forms that redirect back with a notice."""

from __future__ import annotations

import hmac
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.connections import flow
from app.connections.errors import NotConfigured, ReauthorizationRequired
from app.connections.models import Provider
from app.connections.runtime import Connections
from app.console import dashboard
from app.console.auth import (
    FormDep,
    LoginDep,
    SessionsDep,
    console_on,
    install_handlers,
    read_form,
    set_cookie,
)
from app.console.pages import local, message, page, redirect, secured
from app.console.sessions import (
    LOGIN_COOKIE,
    LOGIN_FORM_SECONDS,
    SESSION_COOKIE,
    ConsoleSessions,
    Notice,
    Session,
)
from app.console.timeline import timeline
from app.errors import AppError, UpstreamError
from app.inbox import ops as operations
from app.inbox.models import NEEDS_ATTENTION, EventState, InboxEvent
from app.inbox.repository import InboxRepository
from app.mapping import MappingError
from app.mapping_assist import suggest, yaml_skeleton
from app.mapping_store import How
from app.models import DealInvoice, utcnow
from app.repositories import InvoiceRepository, SyncLogFilter, SyncLogRepository
from app.routes.connections import ConnectionsDep
from app.routes.deps import MappingsDep, QueueDep, SessionDep, SettingsDep
from app.routes.ops import DiscardRequest, EventId, EventView, event_view, mapping_view
from app.settings import Settings
from sandbox import SANDBOX_DEFAULTS

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/console", include_in_schema=False, dependencies=[Depends(console_on)])
PAGE_SIZE = 50
DEAL_RECORDS = 500
STATIC = {"console.css": "text/css; charset=utf-8"}


def install(app: FastAPI) -> None:
    """The console's routes and the pages its refusals show."""
    app.include_router(router)
    install_handlers(app)


@router.get("/login")
async def login_page(
    request: Request,
    sessions: SessionsDep,
    settings: SettingsDep,
    back: Annotated[str, Query(alias="next")] = "/console",
    logged_out: bool = False,
) -> Response:
    if await sessions.get(request.cookies.get(SESSION_COOKIE)):
        return redirect(local(back))
    said = "You are logged out." if logged_out else None
    return _login_form(sessions, settings, back=local(back), said=said)


@router.post("/login")
async def login(request: Request, sessions: SessionsDep, settings: SettingsDep) -> Response:
    form = await read_form(request)
    if not sessions.login_form_holds(request.cookies.get(LOGIN_COOKIE), form.get("csrf_token", "")):
        return message(
            403, "Refused: the login form has expired", "Open the login page again and log in."
        )
    back = local(form.get("next"))
    given, expected = form.get("token", ""), settings.secret("ops_api_token")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        log.warning("console.login_refused")
        return _login_form(sessions, settings, back=back, error="That is not the ops token.")
    cookie, _ = await sessions.create()
    response = redirect(back)
    ttl = int(sessions.ttl.total_seconds())
    set_cookie(response, settings, SESSION_COOKIE, cookie, path="/console", max_age=ttl)
    response.delete_cookie(LOGIN_COOKIE, path="/console/login")
    log.info("console.login")
    return response


@router.post("/logout")
async def logout(_form: FormDep, login: LoginDep, sessions: SessionsDep) -> Response:
    await sessions.end(login)
    response = redirect("/console/login?logged_out=1")
    response.delete_cookie(SESSION_COOKIE, path="/console")
    log.info("console.logout")
    return response


@router.get("")
async def dashboard_page(
    login: LoginDep,
    sessions: SessionsDep,
    session: SessionDep,
    queue: QueueDep,
    connections: ConnectionsDep,
    settings: SettingsDep,
) -> Response:
    board = await dashboard.load(session, queue, connections, now=utcnow())
    return await _page(
        "dashboard.html",
        login,
        sessions,
        settings,
        nav="dashboard",
        board=board,
        alert_pending_minutes=settings.alert_pending_minutes,
        alert_token_expiry_days=settings.alert_token_expiry_days,
    )


@router.get("/queue")
async def queue_page(
    login: LoginDep,
    sessions: SessionsDep,
    session: SessionDep,
    settings: SettingsDep,
    state: Annotated[list[str] | None, Query()] = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    """The retry queue, as GET /ops/retries lists it."""
    known = {s.value for s in EventState}
    chosen = [s for s in (state or [s.value for s in NEEDS_ATTENTION]) if s in known]
    unknown = [s for s in state or [] if s not in known]
    rows, total = await InboxRepository(session).list(
        states=chosen or None, limit=PAGE_SIZE, offset=offset
    )
    return await _page(
        "queue.html",
        login,
        sessions,
        settings,
        nav="queue",
        events=[_view(row, settings) for row in rows],
        total=total,
        offset=offset,
        page_size=PAGE_SIZE,
        states=[s.value for s in EventState],
        chosen=chosen,
        unknown=unknown,
        here=_here_path(state, offset),
    )


@router.post("/events/{event_id}/replay")
async def replay(
    event_id: EventId,
    form: FormDep,
    login: LoginDep,
    sessions: SessionsDep,
    session: SessionDep,
    queue: QueueDep,
) -> Response:
    try:
        event = await operations.replay(session, queue, event_id)
        notice = Notice(f"Event {event.id} (deal {event.deal_id}) replayed: it is {event.state}.")
    except AppError as exc:
        notice = Notice(f"Event {event_id} was not replayed: {exc.detail}", "bad")
    return await _back(sessions, login, notice, form)


@router.post("/events/{event_id}/discard")
async def discard(
    event_id: EventId, form: FormDep, login: LoginDep, sessions: SessionsDep, session: SessionDep
) -> Response:
    try:
        reason = DiscardRequest(reason=form.get("reason", "").strip()).reason
        event = await operations.discard(session, event_id, reason)
        notice = Notice(f"Event {event.id} (deal {event.deal_id}) discarded: {reason}")
    except ValidationError:
        why = "give a reason of 3 to 500 characters"
        notice = Notice(f"Event {event_id} was not discarded: {why}", "bad")
    except AppError as exc:
        notice = Notice(f"Event {event_id} was not discarded: {exc.detail}", "bad")
    return await _back(sessions, login, notice, form)


@router.get("/deals")
async def find_deal(_login: LoginDep, deal_id: str = "") -> Response:
    wanted = deal_id.strip()
    return redirect(f"/console/deals/{wanted}" if wanted.isdigit() else "/console/queue")


@router.get("/deals/{deal_id}")
async def deal_page(
    deal_id: Annotated[str, Path(max_length=64)],
    login: LoginDep,
    sessions: SessionsDep,
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """The deal's sync log (GET /ops/sync-log?deal_id=) as a timeline, per event."""
    inbox = InboxRepository(session)
    events = {e.id: e for e in await inbox.for_deal(deal_id)}
    records, total = await SyncLogRepository(session).list(
        filters=SyncLogFilter(deal_id=deal_id), limit=DEAL_RECORDS, offset=0
    )
    events.update(await inbox.get_many({r.event_id for r in records} - events.keys()))
    invoice = await _invoice_of(session, list(events.values()), deal_id)
    blocks = timeline(events.values(), records)
    return await _page(
        "deal.html",
        login,
        sessions,
        settings,
        nav="queue",
        deal_id=deal_id,
        blocks=blocks,
        views={e.id: _view(e, settings) for e in events.values()},
        invoice=invoice,
        shown=len(records),
        total=total,
        here=f"/console/deals/{deal_id}",
    )


@router.get("/mapping")
async def mapping_page(
    request: Request,
    login: LoginDep,
    sessions: SessionsDep,
    mappings: MappingsDep,
    settings: SettingsDep,
    suggestions: bool = False,
) -> Response:
    """The version in force and the last refused edit (GET /ops/mappings); on request, the
    products with no rule and Sage's accounts (`sagebridge mappings suggest`)."""
    current = await mappings.current()
    view = mapping_view(current, await mappings.last_refusal())
    found, problem = None, None
    if suggestions:
        try:
            found = await suggest(request.app.state.upstreams, current.mapping)
        except (UpstreamError, ReauthorizationRequired) as exc:
            problem = f"Kommo or Sage could not be asked: {exc}"
    return await _page(
        "mapping.html",
        login,
        sessions,
        settings,
        nav="mapping",
        mapping=view,
        suggestion=found,
        skeleton=yaml_skeleton(found) if found else None,
        problem=problem,
    )


@router.post("/mapping/reload")
async def reload_mapping(
    request: Request, form: FormDep, login: LoginDep, sessions: SessionsDep, mappings: MappingsDep
) -> Response:
    """POST /ops/mappings/reload: this host's file, checked, put in force."""
    try:
        current = await mappings.load(How.OPS_RELOAD, request.app.state.upstreams.accounting)
        rules = len(current.mapping.file.rules)
        notice = Notice(f"Version {current.id} is in force ({rules} rules).")
    except MappingError as exc:
        notice = Notice("Refused, the version in force stays: " + "; ".join(exc.problems), "bad")
    return await _back(sessions, login, notice, form)


@router.post("/mapping/replay-needs-mapping")
async def replay_needs_mapping(
    form: FormDep,
    login: LoginDep,
    sessions: SessionsDep,
    session: SessionDep,
    mappings: MappingsDep,
    queue: QueueDep,
) -> Response:
    """POST /ops/events/replay-needs-mapping."""
    in_force = await mappings.current()
    replayed, still = await operations.replay_covered(session, queue, in_force.mapping)
    notice = Notice(f"Replayed {len(replayed)} event(s); {len(still)} still lack a rule.")
    return await _back(sessions, login, notice, form)


@router.get("/connections")
async def connections_page(
    login: LoginDep, sessions: SessionsDep, connections: ConnectionsDep, settings: SettingsDep
) -> Response:
    rows = dashboard.connection_rows(await flow.list_connections(connections), utcnow())
    return await _page(
        "connections.html",
        login,
        sessions,
        settings,
        nav="connections",
        rows=rows,
        alert_token_expiry_days=settings.alert_token_expiry_days,
        static_tokens={
            "kommo": settings.kommo_access_token is not None,
            "sage": settings.sage_access_token is not None,
        },
        providers={p.value: _not_connectable(connections, p) for p in Provider},
    )


@router.post("/connections/{provider}/connect")
async def connect(
    provider: Provider,
    form: FormDep,
    login: LoginDep,
    sessions: SessionsDep,
    connections: ConnectionsDep,
) -> Response:
    """POST /ops/connections/{provider}/start, then straight on to its link: this browser is
    the one that opens it, so it is the one bound to the flow."""
    try:
        authorization = await flow.start(connections, provider)
    except (NotConfigured, UpstreamError) as exc:
        notice = Notice(f"{provider.value.capitalize()} cannot be connected: {exc}", "bad")
        return await _back(sessions, login, notice, form)
    return redirect(authorization.authorize_url)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    media_type = STATIC.get(name)
    if media_type is None:
        return message(404, "Not found", "The console has no such file.")
    body = files("app.console").joinpath("static", name).read_bytes()
    return secured(Response(body, media_type=media_type, headers={"Cache-Control": "max-age=300"}))


def _view(event: InboxEvent, settings: Settings) -> EventView:
    return event_view(event, settings.kommo_base_url, len(settings.retry_delays_seconds))


def _not_connectable(connections: Connections, provider: Provider) -> str | None:
    """Why the provider's connect button cannot work here, or None when it can."""
    try:
        connections.oauth(provider)
    except NotConfigured as exc:
        return str(exc)
    return None


async def _invoice_of(
    session: AsyncSession, events: list[InboxEvent], deal_id: str
) -> DealInvoice | None:
    crm_events = [e for e in events if e.source != "sage"]
    if not crm_events:
        return None
    first = crm_events[0]
    return await InvoiceRepository(session).get(
        crm=first.source, account_id=first.account_id, deal_id=deal_id
    )


def _here_path(state: list[str] | None, offset: int) -> str:
    query = urlencode({"state": state or [], **({"offset": offset} if offset else {})}, doseq=True)
    return "/console/queue" + (f"?{query}" if query else "")


async def _back(
    sessions: ConsoleSessions, login: Session, notice: Notice, form: dict[str, str]
) -> Response:
    await sessions.tell(login, notice)
    return redirect(local(form.get("back"), "/console/queue"))


async def _page(
    template: str, login: Session, sessions: ConsoleSessions, settings: Settings, **context: Any
) -> Response:
    return page(
        template,
        csrf=login.csrf,
        notice=await sessions.notice(login),
        sandbox=settings.sandbox_mode,
        now=utcnow(),
        **context,
    )


def _login_form(
    sessions: ConsoleSessions,
    settings: Settings,
    *,
    back: str,
    error: str | None = None,
    said: str | None = None,
) -> Response:
    token, cookie = sessions.login_form()
    response = page(
        "login.html",
        status_code=401 if error else 200,
        csrf=token,
        back=back,
        error=error,
        said=said,
        sandbox_token=_sandbox_token(settings),
    )
    set_cookie(
        response, settings, LOGIN_COOKIE, cookie, path="/console/login", max_age=LOGIN_FORM_SECONDS
    )
    return response


def _sandbox_token(settings: Settings) -> str | None:
    """The sandbox's published ops token, shown on its login page (it is no secret there)."""
    token = settings.secret("ops_api_token")
    return token if settings.sandbox_mode and token == SANDBOX_DEFAULTS["ops_api_token"] else None
