"""``POST /oauth2/access_token``: Kommo's token endpoint (JSON body, problem+json errors)."""

from __future__ import annotations

import json
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sandbox.common.oauth import IssuedTokens, OAuthError
from sandbox.kommo.deps import SandboxDep
from sandbox.kommo.errors import ProblemResponse
from sandbox.kommo.sandbox import KommoSandbox

log = structlog.get_logger(__name__)
router = APIRouter(tags=["kommo oauth"])
OAUTH_PROBLEM = "https://developers.amocrm.ru/v3/errors/OAuthProblemJson"


@router.post("/oauth2/access_token", response_model=None)
async def access_token(request: Request, sandbox: SandboxDep) -> JSONResponse:
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _problem(400, "Bad Request", "The request body must be a JSON object", None)
    try:
        tokens = _grant(sandbox, body)
    except OAuthError as exc:
        return _refusal(exc)
    return JSONResponse(
        {
            "token_type": "Bearer",
            "expires_in": tokens.expires_in,
            "server_time": sandbox.state.now(),
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
        }
    )


def _grant(sandbox: KommoSandbox, body: dict[str, Any]) -> IssuedTokens:
    client = {
        "client_id": str(body.get("client_id", "")),
        "client_secret": str(body.get("client_secret", "")),
    }
    grant_type = body.get("grant_type")
    if grant_type == "authorization_code":
        code, redirect = str(body.get("code", "")), body.get("redirect_uri")
        return sandbox.oauth.exchange_code(**client, code=code, redirect_uri=redirect)
    if grant_type == "refresh_token":
        return sandbox.oauth.refresh(**client, refresh_token=str(body.get("refresh_token", "")))
    raise OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")


def _refusal(exc: OAuthError) -> JSONResponse:
    log.info("kommo.oauth.refused", error=exc.error, reason=exc.reason)
    if exc.reason == "Token has been revoked" or exc.error == "invalid_client":
        return _problem(401, "Unauthorized", "Authentication failed", exc.reason)
    return _problem(400, "Bad Request", "Invalid or expired grant", exc.reason)


def _problem(status: int, title: str, detail: str, hint: str | None) -> JSONResponse:
    body: dict[str, Any] = {
        "title": title,
        "type": OAUTH_PROBLEM,
        "status": status,
        "detail": detail,
    }
    if hint is not None:
        body["hint"] = hint
    return ProblemResponse(body, status_code=status)
