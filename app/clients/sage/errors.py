from __future__ import annotations

from app.errors import UpstreamPermanentError, UpstreamTransientError


class SageTransientError(UpstreamTransientError):
    """429, 5xx, network trouble: try again later."""


class SageRequestError(UpstreamPermanentError):
    """Sage refused the request; `detail` quotes Sage's `$message`s."""
