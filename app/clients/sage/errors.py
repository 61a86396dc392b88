from __future__ import annotations

from app.errors import UpstreamPermanentError, UpstreamTransientError


class SageTransientError(UpstreamTransientError):
    """429, 5xx, network trouble: try again later."""


class SageRequestError(UpstreamPermanentError):
    """Sage refused the request; `detail` quotes Sage's `$message`s."""


class SageResponseError(UpstreamPermanentError):
    """Sage answered with a body the bridge cannot use: the detail names the entity and field.

    Permanent: the same body would come back on a retry. It never closes an idempotency key
    (Sage did not refuse anything), so a replay after a fix is still found by reference."""

    def __init__(self, entity: str, problem: str) -> None:
        super().__init__("sage", f"Sage's {entity} cannot be read: {problem}")
        self.entity = entity
        self.problem = problem
