"""Every error family of the bridge, and the application errors the HTTP edge renders.

Adapters raise `UpstreamTransientError` (retry later: network, timeout, 429, 5xx) or
`UpstreamPermanentError` (the API refused: a validation error, a missing record) for what the
API did, and `InvoiceBlocked` for what the deal's own data (or the setup) makes impossible: a
product deleted or without a price, no email, a currency mismatch, an answer the bridge cannot
read. The worker turns the first into a retry and the others into a task for the deal's manager,
worded for what happened: only an upstream's refusal says the upstream refused.
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


class InvoiceBlocked(Exception):
    """The deal's own data, or the bridge's setup, stops its invoice: no retry can help, a person
    must change something. `detail` is what ops see; `task_text` is the manager's task."""

    def __init__(self, detail: str, advice: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        ending = f". {advice}" if advice else "."
        self.task_text = f"Sage invoice NOT raised: {detail}{ending}"


class AppError(Exception):
    """An expected failure at the HTTP edge, answered as `{"error": ..., "detail": ...}` with
    the status its class names: `class NotFound(AppError, status=404, error="not_found")`."""

    status_code = 400
    error = "bad_request"

    def __init_subclass__(cls, *, status: int = 400, error: str = "bad_request") -> None:
        super().__init_subclass__()
        cls.status_code = status
        cls.error = error

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(AppError):
    """The request cannot be used as it is; the detail says what to change."""


class Unauthorized(AppError, status=401, error="unauthorized"):
    """No, or the wrong, secret or token."""


class Forbidden(AppError, status=403, error="forbidden"):
    """Authenticated, but for another account."""


class NotFound(AppError, status=404, error="not_found"):
    """No such event, provider or record."""


class NotConfiguredError(AppError, status=409, error="not_configured"):
    """The feature needs settings this install does not have (an OAuth client, keys)."""


class PayloadTooLarge(AppError, status=413, error="payload_too_large"):
    """A body over the limit, refused before it is read whole."""


class MappingRefused(AppError, status=422, error="mapping_refused"):
    """The mapping file was refused; the version in force stays."""


class BadGateway(AppError, status=502, error="bad_gateway"):
    """An upstream (Sage, Kommo, an OAuth provider) failed the request ops made."""


class ServiceUnavailable(AppError, status=503, error="service_unavailable"):
    """The database (or Redis) cannot serve it now; try again."""
