"""Settings of one simulated Sage Accounting instance."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from sandbox.common.ratelimit import RateLimit

DEFAULT_SWAGGER = Path(__file__).parent / "contracts" / "sage-accounting-v3.1.swagger.json"
# Sage's v3.0 docs and staff both say 200 calls per 60 s per business; v3.1 is UNCONFIRMED.
DEFAULT_RATE_LIMIT = RateLimit(limit=200, window_seconds=60.0)


class SageConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    # OAuth: access tokens last 5 minutes by third-party accounts (UNCONFIRMED by Sage).
    access_token_ttl_seconds: float = Field(default=300, gt=0)
    refresh_token_ttl_seconds: float = Field(default=31 * 24 * 3600, gt=0)
    auth_code_ttl_seconds: float = Field(default=60, gt=0)
    clients: dict[str, str] = Field(
        default_factory=lambda: {"sandbox-sage-client": "sandbox-sage-secret"},
        description="OAuth client_id -> client_secret",
    )
    static_tokens: list[str] = Field(
        default_factory=list, description="Bearer tokens accepted forever (demo, tests)"
    )
    rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT
    default_items_per_page: int = Field(default=20, ge=1, le=200)
    # Where the simulator is reachable from a browser, for invoice links; default: request URL.
    public_base_url: str | None = None
    swagger_path: Path = DEFAULT_SWAGGER
    # Sage's customer_credit_days fallback when a contact has no credit_days of its own.
    default_credit_days: int = 30
