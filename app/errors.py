"""Error families shared by every adapter, and the one application error the HTTP edge renders.

Adapters raise `UpstreamTransientError` (retry later: network, timeout, 429, 5xx) or
`UpstreamPermanentError` (retrying cannot help: a validation error, a missing record). The worker
turns the first into a retry and the second into a task for the deal's manager.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """An external API call failed. `upstream` names the API, `detail` is safe to show a user."""

    def __init__(self, upstream: str, detail: str, *, status: int | None = None) -> None:
        super().__init__(f"{upstream}: {detail}")
        self.upstream = upstream
        self.detail = detail
        self.status = status


class UpstreamTransientError(UpstreamError):
    def __init__(
        self,
        upstream: str,
        detail: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(upstream, detail, status=status)
        self.retry_after = retry_after


class UpstreamPermanentError(UpstreamError):
    pass


class AppError(Exception):
    """An expected failure at the HTTP edge, answered as `{"error": ..., "detail": ...}`."""

    status_code = 400
    error = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(AppError):
    pass


class Unauthorized(AppError):
    status_code = 401
    error = "unauthorized"


class Forbidden(AppError):
    status_code = 403
    error = "forbidden"


class NotFound(AppError):
    status_code = 404
    error = "not_found"


class PayloadTooLarge(AppError):
    status_code = 413
    error = "payload_too_large"


class ServiceUnavailable(AppError):
    status_code = 503
    error = "service_unavailable"
