from __future__ import annotations

from app.errors import UpstreamPermanentError, UpstreamTransientError


class KommoTransientError(UpstreamTransientError):
    """429, 5xx, network trouble: try again later."""


class KommoRequestError(UpstreamPermanentError):
    """Kommo refused the request (validation, rights, a blocked account): retrying cannot help."""


class KommoNotFound(KommoRequestError):
    """Kommo answered 204 or 404 for a single entity."""


class KommoUnreadable(KommoRequestError):
    """Kommo answered 2xx with JSON that lacks what the bridge needs (a field missing or of
    another type). Permanent: the same record gives the same answer until someone changes it
    in Kommo, or the bridge's reading of Kommo is wrong; retrying only delays the task."""
