"""Ops: connect Sage and Kommo over OAuth 2.0, see the connections, store a Kommo long-lived
token. Bearer OPS_API_TOKEN on all but the two browser steps: `authorize` (the link `start`
returns; it binds the single-use `state` to the browser that opens it with an HttpOnly cookie)
and the callback (the provider's redirect; it needs that state and that browser's cookie).

Connecting, step by step (the redirect URI registered with the provider must be
`{PUBLIC_BASE_URL}/ops/connections/{provider}/callback`):

    curl -X POST -H "Authorization: Bearer $OPS_API_TOKEN" $BRIDGE/ops/connections/sage/start
    # open `authorize_url` (on the bridge) in a browser within OAUTH_STATE_TTL_SECONDS: it
    # sends that browser on to the provider; consent there, and the provider redirects the same
    # browser to the callback, which answers with the business (or Kommo account)
    curl -H "Authorization: Bearer $OPS_API_TOKEN" $BRIDGE/ops/connections
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Cookie, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field, SecretStr

from app.connections import flow
from app.connections.errors import InvalidCallback, NotConfigured
from app.connections.models import Provider
from app.connections.runtime import Connections
from app.connections.store import ConnectionInfo
from app.errors import (
    BadGateway,
    BadRequest,
    NotConfiguredError,
    NotFound,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTransientError,
)
from app.routes.deps import OpsAuth

router = APIRouter(prefix="/ops/connections", tags=["connections"])


def get_connections(request: Request) -> Connections:
    connections: Connections = request.app.state.connections
    return connections


ConnectionsDep = Annotated[Connections, Depends(get_connections)]


class AuthorizationView(BaseModel):
    provider: Provider
    authorize_url: str
    state: str
    expires_in: int


class LongLivedToken(BaseModel):
    base_url: str = Field(pattern=r"^https?://[^/\s]+/?$", examples=["https://testco.kommo.com"])
    account_id: int
    token: SecretStr
    expires_at: datetime | None = None


@router.get("", dependencies=[OpsAuth])
async def list_connections(connections: ConnectionsDep) -> list[ConnectionInfo]:
    """Every connection with its state and expiries; never a token."""
    return await flow.list_connections(connections)


@router.post("/{provider}/start", dependencies=[OpsAuth])
async def start(provider: str, connections: ConnectionsDep) -> AuthorizationView:
    """A link to open in the browser that will consent; its `state` is good once."""
    chosen = _provider(provider)
    with _http_errors():
        authorization = await flow.start(connections, chosen)
    return AuthorizationView(
        provider=chosen,
        authorize_url=authorization.authorize_url,
        state=authorization.state,
        expires_in=connections.config.oauth_state_ttl_seconds,
    )


@router.get("/{provider}/authorize", response_class=RedirectResponse, status_code=303)
async def authorize(
    provider: str,
    connections: ConnectionsDep,
    state: Annotated[str, Query(max_length=256)],
) -> RedirectResponse:
    """Opened in a browser: binds the flow to it (an HttpOnly cookie), then on to the provider."""
    chosen = _provider(provider)
    with _http_errors():
        binding = await flow.bind_browser(connections, chosen, state)
    response = RedirectResponse(binding.provider_url, status_code=303)
    response.set_cookie(
        flow.BROWSER_COOKIE,
        binding.cookie,
        max_age=connections.config.oauth_state_ttl_seconds,
        path=_cookie_path(chosen),
        secure=connections.config.redirect_uri(chosen).startswith("https://"),
        httponly=True,
        samesite="lax",  # sent on the provider's top-level redirect back to the callback
    )
    return response


@router.get("/{provider}/callback")
async def callback(
    provider: str,
    connections: ConnectionsDep,
    response: Response,
    state: Annotated[str, Query(max_length=256)],
    code: Annotated[str | None, Query(max_length=4096)] = None,
    referer: Annotated[str | None, Query(max_length=255)] = None,
    error: Annotated[str | None, Query(max_length=255)] = None,
    browser: Annotated[str | None, Cookie(alias=flow.BROWSER_COOKIE, max_length=128)] = None,
) -> ConnectionInfo:
    """Where the provider sends the browser back: exchange the code, store the connection."""
    chosen = _provider(provider)
    if code is None:
        raise BadRequest(f"{chosen.value} sent no code ({error or 'no error given'})")
    with _http_errors():
        info = await flow.complete(
            connections, chosen, state=state, code=code, browser=browser, referer=referer
        )
    response.delete_cookie(flow.BROWSER_COOKIE, path=_cookie_path(chosen))
    return info


def _cookie_path(provider: Provider) -> str:
    return f"{router.prefix}/{provider.value}"


@router.put("/kommo/long-lived", dependencies=[OpsAuth])
async def store_long_lived(body: LongLivedToken, connections: ConnectionsDep) -> ConnectionInfo:
    """A Kommo private integration's long-lived token, instead of the OAuth flow."""
    with _http_errors():
        return await flow.store_long_lived(
            connections,
            base_url=body.base_url,
            account_id=body.account_id,
            token=body.token.get_secret_value(),
            expires_at=body.expires_at,
        )


def _provider(name: str) -> Provider:
    try:
        return Provider(name)
    except ValueError:
        known = ", ".join(p.value for p in Provider)
        raise NotFound(f"no provider {name!r} (known: {known})") from None


@contextmanager
def _http_errors() -> Iterator[None]:
    try:
        yield
    except InvalidCallback as exc:
        raise BadRequest(str(exc)) from exc
    except NotConfigured as exc:
        raise NotConfiguredError(str(exc)) from exc
    except UpstreamTransientError as exc:
        if exc.upstream == "redis":
            raise ServiceUnavailable(str(exc)) from exc
        raise BadGateway(str(exc)) from exc
    except UpstreamError as exc:
        raise BadGateway(str(exc)) from exc
