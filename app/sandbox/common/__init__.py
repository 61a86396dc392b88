"""Building blocks shared by the Sage and Kommo simulators: faults, rate limits, request log,
OAuth store, the instrumenting middleware and its control routes."""

from app.sandbox.common.control import control_router
from app.sandbox.common.faults import FaultKind, FaultPlan, FaultRegistry, FaultSpec
from app.sandbox.common.ids import Clock, new_hex_id, utc_now
from app.sandbox.common.middleware import ErrorRenderer, Instruments, SandboxMiddleware
from app.sandbox.common.oauth import IssuedTokens, OAuthError, OAuthPolicy, OAuthStore, TokenCheck
from app.sandbox.common.ratelimit import RateLimit, SlidingWindowLimiter
from app.sandbox.common.requestlog import RecordedRequest, RequestLog

__all__ = [
    "Clock",
    "ErrorRenderer",
    "FaultKind",
    "FaultPlan",
    "FaultRegistry",
    "FaultSpec",
    "Instruments",
    "IssuedTokens",
    "OAuthError",
    "OAuthPolicy",
    "OAuthStore",
    "RateLimit",
    "RecordedRequest",
    "RequestLog",
    "SandboxMiddleware",
    "SlidingWindowLimiter",
    "TokenCheck",
    "control_router",
    "new_hex_id",
    "utc_now",
]
