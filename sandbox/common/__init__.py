"""Building blocks shared by the Sage and Kommo simulators: faults, rate limits, request log,
OAuth store, the instrumenting middleware and its control routes."""

from sandbox.common.control import control_router
from sandbox.common.faults import FaultKind, FaultPlan, FaultRegistry, FaultSpec
from sandbox.common.ids import Clock, new_hex_id, utc_now
from sandbox.common.middleware import ErrorRenderer, Instruments, SandboxMiddleware
from sandbox.common.oauth import IssuedTokens, OAuthError, OAuthPolicy, OAuthStore, TokenCheck
from sandbox.common.ratelimit import RateLimit, SlidingWindowLimiter
from sandbox.common.requestlog import RecordedRequest, RequestLog

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
