"""One running Kommo simulator: config, state, OAuth store, instruments, webhook sender."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from starlette.datastructures import Headers

from sandbox.common.faults import FaultRegistry
from sandbox.common.middleware import Instrumented, Instruments
from sandbox.common.oauth import OAuthPolicy, OAuthStore
from sandbox.common.ratelimit import SlidingWindowLimiter
from sandbox.common.requestlog import RequestLog
from sandbox.kommo.config import KommoConfig
from sandbox.kommo.errors import API_PREFIX, KommoErrorRenderer
from sandbox.kommo.patching import LeadPatch, apply_patches, validate_patches
from sandbox.kommo.state import KommoState
from sandbox.kommo.webhooks import WebhookSender

INSTRUMENTED = (API_PREFIX, "/oauth2")


@dataclass
class KommoSandbox(Instrumented):
    config: KommoConfig
    state: KommoState
    oauth: OAuthStore
    instruments: Instruments
    webhooks: WebhookSender
    app: FastAPI = field(init=False)

    @classmethod
    def build(cls, config: KommoConfig, state: KommoState) -> KommoSandbox:
        tokens = config.long_lived_tokens
        oauth = OAuthStore(_policy(config), static_tokens=tokens, clock=state.clock)
        instruments = Instruments(
            requests=RequestLog(),
            faults=FaultRegistry(),
            limiter=SlidingWindowLimiter(config.rate_limit),
            renderer=KommoErrorRenderer(),
            rate_limit_key=_token_key,
            instrumented_prefixes=INSTRUMENTED,
            limiter_sends_retry_after=False,
        )
        return cls(config, state, oauth, instruments, WebhookSender(state, config))

    def patch_leads(
        self, body: Any, *, user_id: int, site: str, path_id: int | None = None
    ) -> list[LeadPatch]:
        """Validate and apply lead changes, then send ``status_lead`` hooks for stage moves.

        Shared by ``PATCH /api/v4/leads`` and the UI-like ``/sandbox/leads/{id}/move``.
        """
        with self.state.lock:
            patches = validate_patches(self.state, body, path_id=path_id)
            changes = apply_patches(self.state, patches, now=self.state.now(), user_id=user_id)
        self.webhooks.lead_status_changed(changes, modified_by=user_id, site=site)
        return patches

    def delete_lead(self, lead_id: int, *, site: str) -> bool:
        """What deleting a deal in Kommo's UI does: into the trash, a ``delete_lead`` hook sent.
        False when there is no such lead."""
        with self.state.lock:
            lead = self.state.leads.pop(lead_id, None)
            if lead is None:
                return False
            lead.updated_at = self.state.now()
            self.state.deleted_leads[lead_id] = lead
        self.webhooks.leads_deleted([lead_id], site=site)
        return True

    def site(self, request: Request) -> str:
        """The account's base URL as clients see it (``_links``, ``account[_links][self]``)."""
        return self.config.public_base_url or str(request.base_url).rstrip("/")


def _policy(config: KommoConfig) -> OAuthPolicy:
    return OAuthPolicy(
        clients=dict(config.clients),
        access_ttl=timedelta(seconds=config.access_token_ttl_seconds),
        refresh_ttl=timedelta(seconds=config.refresh_token_ttl_seconds),
        code_ttl=timedelta(seconds=config.auth_code_ttl_seconds),
    )


def _token_key(headers: Headers) -> str | None:
    """Kommo limits per integration, i.e. per bearer token."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
