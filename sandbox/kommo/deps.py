"""Request dependencies: the sandbox, bearer authentication (→ the acting user), JSON bodies."""

from __future__ import annotations

import json
from typing import Annotated, Any, cast

from fastapi import Depends, Request

from sandbox.common.oauth import TokenCheck
from sandbox.kommo.errors import KommoError
from sandbox.kommo.sandbox import KommoSandbox


def get_sandbox(request: Request) -> KommoSandbox:
    return cast(KommoSandbox, request.app.state.kommo_sandbox)


SandboxDep = Annotated[KommoSandbox, Depends(get_sandbox)]


def require_user(request: Request, sandbox: SandboxDep) -> int:
    """Every token (long-lived or OAuth) acts as the account's admin user."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise KommoError(401, "Authorization required")
    check = sandbox.oauth.check_access(token.strip())
    if check is TokenCheck.EXPIRED:
        raise KommoError(401, "The access token has expired")
    if check is not TokenCheck.VALID:
        raise KommoError(401, "The access token is invalid")
    return sandbox.state.admin_user_id


UserDep = Annotated[int, Depends(require_user)]


def site_of(request: Request, sandbox: SandboxDep) -> str:
    return sandbox.site(request)


SiteDep = Annotated[str, Depends(site_of)]


async def json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError as exc:
        raise KommoError(400, "The request body is not valid JSON") from exc


BodyDep = Annotated[Any, Depends(json_body)]
