"""Settings of one simulated Kommo account."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sandbox.common.ratelimit import RateLimit

# "Not more than 7 requests per second" per integration (Kommo's limitations page).
DEFAULT_RATE_LIMIT = RateLimit(limit=7, window_seconds=1.0)


class KommoConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    long_lived_tokens: list[str] = Field(
        default_factory=list, description="Bearer tokens accepted forever (demo, tests)"
    )
    clients: dict[str, str] = Field(
        default_factory=lambda: {"sandbox-kommo-client": "sandbox-kommo-secret"},
        description="OAuth client_id -> client_secret",
    )
    # Kommo's samples show 24 h access tokens; codes live 20 minutes (both third-party facts).
    access_token_ttl_seconds: float = Field(default=86400, gt=0)
    refresh_token_ttl_seconds: float = Field(default=90 * 86400, gt=0)
    auth_code_ttl_seconds: float = Field(default=1200, gt=0)
    rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT
    # Kommo waits at most 2 s for a webhook answer.
    webhook_timeout_seconds: float = Field(default=2.0, gt=0)
    # ">100 invalid answers in the last 2 hours and the last one invalid" disables a hook.
    webhook_disable_after: int = Field(default=100, ge=1)
    webhook_disable_window_seconds: float = Field(default=7200, gt=0)
    # Where the simulator is reachable (account[_links][self], _links); default: request URL.
    public_base_url: str | None = None
