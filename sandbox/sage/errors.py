"""Sage's error shape: a JSON array of ``{$severity, $dataCode, $message, $source}``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

API_PREFIX = "/v3.1"
NOT_FOUND_MESSAGE = "Couldn't find record."


@dataclass(frozen=True)
class Issue:
    data_code: str
    message: str
    source: str = ""

    def as_json(self) -> dict[str, str]:
        return {
            "$severity": "error",
            "$dataCode": self.data_code,
            "$message": self.message,
            "$source": self.source,
        }


class SageError(Exception):
    def __init__(
        self, status: int, issues: list[Issue], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status}: {issues[0].message if issues else ''}")
        self.status = status
        self.issues = issues
        self.headers = headers or {}

    @classmethod
    def one(cls, status: int, data_code: str, message: str, source: str = "") -> SageError:
        return cls(status, [Issue(data_code, message, source)])

    @classmethod
    def not_found(cls, source: str = "") -> SageError:
        return cls.one(404, "RecordNotFound", NOT_FOUND_MESSAGE, source)

    @classmethod
    def invalid(cls, message: str, source: str = "") -> SageError:
        return cls.one(422, "RecordInvalid", message, source)

    @classmethod
    def bad_parameter(cls, name: str, message: str) -> SageError:
        return cls.one(400, "InvalidParameter", message, name)

    def response(self) -> JSONResponse:
        body = [issue.as_json() for issue in self.issues]
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def error_response(status: int, data_code: str, message: str) -> JSONResponse:
    return SageError.one(status, data_code, message).response()


async def handle_sage_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SageError)
    return exc.response()


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's own parameter errors, re-spelled as Sage would answer them (API paths only)."""
    assert isinstance(exc, RequestValidationError)
    if not request.url.path.startswith(API_PREFIX):
        return await request_validation_exception_handler(request, exc)
    issues = [_issue_from_pydantic(err) for err in exc.errors()]
    return SageError(400, issues).response()


async def handle_http_error(request: Request, exc: Exception) -> Response:
    """Unknown API paths and methods answer in Sage's shape; control routes keep FastAPI's."""
    assert isinstance(exc, HTTPException)
    if not request.url.path.startswith(API_PREFIX):
        return await http_exception_handler(request, exc)
    code = "RecordNotFound" if exc.status_code == 404 else "RequestNotHandled"
    message = NOT_FOUND_MESSAGE if exc.status_code == 404 else str(exc.detail)
    return error_response(exc.status_code, code, message)


def _issue_from_pydantic(err: Any) -> Issue:
    location = [str(part) for part in err.get("loc", ()) if part not in ("query", "path", "body")]
    return Issue("InvalidParameter", str(err.get("msg", "Invalid value")), ".".join(location))


class SageErrorRenderer:
    """Errors the instrumenting middleware produces (injected faults, rate limiting)."""

    def server_error(self, status: int) -> Response:
        return error_response(status, "UnexpectedError", "An unexpected error has occurred.")

    def rate_limited(self, retry_after: str | None) -> Response:
        response = error_response(
            429, "TooManyRequests", "Rate limit exceeded, please retry after a short while."
        )
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        return response

    def client_error(self, status: int, code: str | None, message: str | None) -> Response:
        default_code, default_message = _CLIENT_ERRORS.get(status, ("RecordInvalid", "Invalid."))
        return error_response(status, code or default_code, message or default_message)


_CLIENT_ERRORS = {
    400: ("InvalidParameter", "Invalid parameter."),
    401: ("AuthorizationFailure", "Unauthorized."),
    403: ("AccessDenied", "You do not have access to this business."),
    404: ("RecordNotFound", NOT_FOUND_MESSAGE),
    422: ("RecordInvalid", "Validation failed."),
}
