"""Control routes shared by both simulators: ``/sandbox/faults``, ``/sandbox/requests``,
``/sandbox/rate_limit`` and the OAuth helpers ``/sandbox/oauth/…``. They are not instrumented,
rate limited or faulted themselves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from sandbox.common.faults import FaultSpec
from sandbox.common.middleware import Instruments
from sandbox.common.oauth import OAuthStore
from sandbox.common.ratelimit import RateLimit


class CodeRequest(BaseModel):
    client_id: str | None = None
    redirect_uri: str | None = None


class RevokeRequest(BaseModel):
    refresh_token: str


def control_router(instruments: Instruments, oauth: OAuthStore) -> APIRouter:
    router = APIRouter(prefix="/sandbox", tags=["sandbox control"])
    _fault_routes(router, instruments)
    _request_log_routes(router, instruments)
    _rate_limit_routes(router, instruments)
    _oauth_routes(router, oauth)
    return router


def _oauth_routes(router: APIRouter, oauth: OAuthStore) -> None:
    """What a person does on the provider's side: consent (a code), disconnecting the app
    (revoking a refresh token), and time passing (every access token expired now)."""

    @router.post("/oauth/codes", status_code=status.HTTP_201_CREATED)
    async def issue_code(body: CodeRequest | None = None) -> dict[str, Any]:
        wanted = body or CodeRequest()
        code = oauth.issue_code(client_id=wanted.client_id, redirect_uri=wanted.redirect_uri)
        return {"code": code, "expires_in": oauth.code_ttl_seconds}

    @router.post("/oauth/revoke")
    async def revoke(body: RevokeRequest) -> dict[str, bool]:
        return {"revoked": oauth.revoke_refresh_token(body.refresh_token)}

    @router.post("/oauth/expire_access_tokens")
    async def expire_access_tokens() -> dict[str, int]:
        return {"expired": oauth.expire_access_tokens()}


def _fault_routes(router: APIRouter, instruments: Instruments) -> None:
    faults = instruments.faults

    @router.get("/faults")
    async def list_faults() -> dict[str, Any]:
        armed = faults.active()
        return {"faults": [{**_shown(spec), "remaining": n} for spec, n in armed]}

    @router.post("/faults", status_code=status.HTTP_201_CREATED)
    async def arm_fault(spec: FaultSpec) -> dict[str, Any]:
        faults.add(spec)
        return {"armed": _shown(spec)}

    @router.delete("/faults")
    async def clear_faults(method: str | None = None, path: str | None = None) -> dict[str, int]:
        return {"cleared": faults.clear(method, path)}


def _shown(spec: FaultSpec) -> dict[str, Any]:
    """A fault as armed; a refusal's code and message only where they apply."""
    shown = spec.model_dump(mode="json")
    for name in ("code", "message"):
        if shown[name] is None:
            del shown[name]
    return shown


def _request_log_routes(router: APIRouter, instruments: Instruments) -> None:
    requests = instruments.requests

    @router.get("/requests")
    async def list_requests(
        method: str | None = None, path_prefix: str | None = None
    ) -> dict[str, Any]:
        entries = requests.entries(method, path_prefix)
        return {"count": len(entries), "requests": [e.model_dump(mode="json") for e in entries]}

    @router.delete("/requests", status_code=status.HTTP_204_NO_CONTENT)
    async def clear_requests() -> Response:
        requests.clear()
        return Response(status_code=status.HTTP_204_NO_CONTENT)


def _rate_limit_routes(router: APIRouter, instruments: Instruments) -> None:
    limiter = instruments.limiter

    @router.get("/rate_limit")
    async def show_rate_limit() -> dict[str, Any]:
        rule = limiter.rule
        return {"rate_limit": None if rule is None else rule.model_dump()}

    @router.put("/rate_limit")
    async def set_rate_limit(rule: RateLimit) -> dict[str, Any]:
        limiter.configure(rule)
        return {"rate_limit": rule.model_dump()}
