"""``POST /oauth/token``: Sage's token endpoint (form-encoded; errors ``{"error": ...}``)."""

from __future__ import annotations

from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sandbox.common.oauth import IssuedTokens, OAuthError
from sandbox.sage.deps import SandboxDep
from sandbox.sage.sandbox import SageSandbox

log = structlog.get_logger(__name__)
router = APIRouter(tags=["sage oauth"])


@router.post("/oauth/token")
async def token(request: Request, sandbox: SandboxDep) -> JSONResponse:
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", ""):
        return _oauth_error("invalid_request", "expected a form-encoded body")
    form = dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
    try:
        tokens = _grant(sandbox, form)
    except OAuthError as exc:
        return _oauth_error(exc.error, exc.reason)
    return JSONResponse(
        {
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "expires_in": tokens.expires_in,
            "refresh_token_expires_in": tokens.refresh_token_expires_in,
            "token_type": "bearer",
            "scope": "full_access",
        },
        headers={"Cache-Control": "no-store"},
    )


def _grant(sandbox: SageSandbox, form: dict[str, str]) -> IssuedTokens:
    client = {
        "client_id": form.get("client_id", ""),
        "client_secret": form.get("client_secret", ""),
    }
    grant_type = form.get("grant_type")
    if grant_type == "authorization_code":
        return sandbox.oauth.exchange_code(
            **client, code=form.get("code", ""), redirect_uri=form.get("redirect_uri")
        )
    if grant_type == "refresh_token":
        return sandbox.oauth.refresh(**client, refresh_token=form.get("refresh_token", ""))
    # Sage answers a wrong grant_type with invalid_grant, not unsupported_grant_type.
    raise OAuthError("invalid_grant", f"unsupported grant_type {grant_type!r}")


def _oauth_error(error: str, reason: str) -> JSONResponse:
    log.info("sage.oauth.refused", error=error, reason=reason)
    status = 401 if error == "invalid_client" else 400
    return JSONResponse({"error": error}, status_code=status)
