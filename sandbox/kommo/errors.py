"""Kommo's wire shapes: ``application/hal+json`` answers, ``application/problem+json`` errors
(with ``validation-errors`` on 400), 204 for empty results, nginx pages for 429/502-504."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

API_PREFIX = "/api/v4"
HAL_JSON = "application/hal+json"
PROBLEM_JSON = "application/problem+json"
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


class HalResponse(JSONResponse):
    media_type = HAL_JSON


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def no_content() -> Response:
    """Kommo's answer for an empty list or an unknown single entity."""
    return Response(status_code=204)


@dataclass(frozen=True)
class FieldError:
    """One entry of ``validation-errors[].errors``."""

    code: str
    path: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "detail": self.detail}


class KommoError(Exception):
    def __init__(self, status: int, detail: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.extra = extra or {}

    @classmethod
    def validation(cls, errors: dict[str, list[FieldError]]) -> KommoError:
        """400 with ``validation-errors``, one group per request_id (batch item)."""
        groups = [
            {"request_id": request_id, "errors": [e.as_json() for e in field_errors]}
            for request_id, field_errors in errors.items()
        ]
        return cls(400, "Request validation failed", extra={"validation-errors": groups})

    def response(self) -> Response:
        return problem(self.status, self.detail, **self.extra)


def problem(status: int, detail: str, **extra: Any) -> ProblemResponse:
    body = {
        **extra,
        "title": TITLES.get(status, "Error"),
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
    }
    return ProblemResponse(body, status_code=status)


async def handle_kommo_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KommoError)
    return exc.response()


async def handle_http_error(request: Request, exc: Exception) -> Response:
    """Unknown API paths answer as problem+json; control routes keep FastAPI's shape."""
    assert isinstance(exc, HTTPException)
    if not request.url.path.startswith(API_PREFIX):
        return await http_exception_handler(request, exc)
    return problem(exc.status_code, str(exc.detail))


def nginx_page(status: int, reason: str) -> HTMLResponse:
    """What Kommo's edge answers for throttling and gateway errors: HTML, not JSON."""
    title = f"{status} {reason}"
    body = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return HTMLResponse(body, status_code=status)


_GATEWAY_REASONS = {
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


class KommoErrorRenderer:
    """Errors the instrumenting middleware produces (injected faults, rate limiting)."""

    def server_error(self, status: int) -> Response:
        if status in _GATEWAY_REASONS:
            return nginx_page(status, _GATEWAY_REASONS[status])
        return problem(status, "Internal server error")

    def rate_limited(self, retry_after: str | None) -> Response:
        response = nginx_page(429, "Too Many Requests")
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        return response

    def client_error(self, status: int, code: str | None, message: str | None) -> Response:
        """problem+json; ``code`` has no place in it (Kommo's codes live in validation-errors)."""
        return problem(status, message or TITLES.get(status, "Error"))
