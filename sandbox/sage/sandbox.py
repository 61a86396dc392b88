"""One running Sage simulator: its config, state, OAuth store and instruments."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from fastapi import FastAPI, Request
from starlette.datastructures import Headers

from sandbox.common.faults import FaultRegistry
from sandbox.common.middleware import Instrumented, Instruments
from sandbox.common.oauth import OAuthPolicy, OAuthStore
from sandbox.common.ratelimit import SlidingWindowLimiter
from sandbox.common.requestlog import RequestLog
from sandbox.sage.config import SageConfig
from sandbox.sage.errors import SageErrorRenderer
from sandbox.sage.state import SageState
from sandbox.sage.validation import BodyValidator, validator_for

API_PREFIX = "/v3.1"
INSTRUMENTED = (API_PREFIX, "/oauth")


@dataclass
class SageSandbox(Instrumented):
    config: SageConfig
    state: SageState
    oauth: OAuthStore
    instruments: Instruments
    validator: BodyValidator
    app: FastAPI = field(init=False)

    @classmethod
    def build(cls, config: SageConfig, state: SageState) -> SageSandbox:
        oauth = OAuthStore(_policy(config), static_tokens=config.static_tokens, clock=state.now)
        instruments = Instruments(
            requests=RequestLog(),
            faults=FaultRegistry(),
            limiter=SlidingWindowLimiter(config.rate_limit),
            renderer=SageErrorRenderer(),
            rate_limit_key=lambda headers: _business_key(state, headers),
            instrumented_prefixes=INSTRUMENTED,
        )
        return cls(config, state, oauth, instruments, validator_for(config.swagger_path))

    def site(self, request: Request) -> str:
        """Base URL for links a browser follows (the invoice's HTML view)."""
        return self.config.public_base_url or str(request.base_url).rstrip("/")


def _policy(config: SageConfig) -> OAuthPolicy:
    return OAuthPolicy(
        clients=dict(config.clients),
        access_ttl=timedelta(seconds=config.access_token_ttl_seconds),
        refresh_ttl=timedelta(seconds=config.refresh_token_ttl_seconds),
        code_ttl=timedelta(seconds=config.auth_code_ttl_seconds),
    )


def _business_key(state: SageState, headers: Headers) -> str | None:
    """Sage limits per business: the X-Business one, or the lead business when it is absent."""
    if not headers.get("authorization", "").strip():
        return None
    return headers.get("x-business") or state.lead_business_id
