"""Request dependencies: the sandbox, bearer authentication, the X-Business book, JSON bodies."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any, cast

from fastapi import Depends, Request

from sandbox.common.oauth import TokenCheck
from sandbox.sage.errors import SageError
from sandbox.sage.models import Book
from sandbox.sage.sandbox import SageSandbox

_AUTH_HEADERS = {"WWW-Authenticate": "Bearer"}
_AUTH_MESSAGES = {
    TokenCheck.EXPIRED: "The access token has expired.",
    TokenCheck.UNKNOWN: "The access token is invalid.",
}


def get_sandbox(request: Request) -> SageSandbox:
    return cast(SageSandbox, request.app.state.sage_sandbox)


SandboxDep = Annotated[SageSandbox, Depends(get_sandbox)]


def require_token(request: Request, sandbox: SandboxDep) -> None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorised("No bearer token was sent.")
    check = sandbox.oauth.check_access(token.strip())
    if check is not TokenCheck.VALID:
        raise _unauthorised(_AUTH_MESSAGES[check])


def _unauthorised(message: str) -> SageError:
    error = SageError.one(401, "AuthorizationFailure", message)
    error.headers.update(_AUTH_HEADERS)
    return error


AuthDep = Annotated[None, Depends(require_token)]


def current_book(request: Request, sandbox: SandboxDep, _auth: AuthDep) -> Book:
    return sandbox.state.book_for(request.headers.get("x-business"))


BookDep = Annotated[Book, Depends(current_book)]


async def json_body(request: Request) -> Any:
    """Amounts keep their exact decimal text: floats are parsed as ``Decimal``."""
    raw = await request.body()
    try:
        return json.loads(raw, parse_float=Decimal)
    except ValueError as exc:
        raise SageError.one(400, "InvalidJSON", "The request body is not valid JSON.") from exc


BodyDep = Annotated[Any, Depends(json_body)]
