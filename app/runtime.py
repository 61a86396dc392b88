"""Building the long-lived pieces from Settings, shared by the API lifespan and worker start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import httpx
import structlog
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.bridge import PipelineConfig
from app.clients.http import build_http_client
from app.clients.kommo.adapter import KommoConfig, KommoCrm
from app.clients.kommo.client import KommoClient
from app.clients.kommo.coalesce import no_wait
from app.clients.ratelimit import SharedRateLimit
from app.clients.sage.adapter import SageAccounting
from app.clients.sage.client import SageClient
from app.connections.models import Provider
from app.connections.runtime import Connections
from app.connections.store import ConnectionKey
from app.db import create_engine, create_sessionmaker
from app.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass
class Database:
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]

    @classmethod
    def open(cls, settings: Settings, *, for_worker: bool = False) -> Database:
        """The API's pool is small with a 1 s wait (a webhook must answer fast); a worker's
        job holds a session while the token store opens another, so it gets two per job and
        waits longer rather than failing the job for a purely local shortage."""
        if for_worker:
            size = max(10, settings.worker_max_jobs * 2 + 2)
            engine = create_engine(settings.resolved_database_url, pool_size=size, pool_timeout=30)
        else:
            engine = create_engine(settings.resolved_database_url)
        return cls(engine, create_sessionmaker(engine))

    async def close(self) -> None:
        await self.engine.dispose()


@dataclass
class Upstreams:
    crm: KommoCrm
    accounting: SageAccounting
    _clients: list[httpx.AsyncClient] = field(default_factory=list)
    _limits: list[SharedRateLimit] = field(default_factory=list)

    @classmethod
    def open(cls, settings: Settings, connections: Connections | None = None) -> Upstreams:
        timeout = settings.http_timeout_seconds
        business = _required(settings.sage_business_id, "SAGE_BUSINESS_ID")
        kommo_account = str(_required(settings.kommo_account_id, "KOMMO_ACCOUNT_ID"))
        kommo_headers, kommo_auth = _credentials(
            settings.kommo_access_token, connections, ConnectionKey(Provider.KOMMO, kommo_account)
        )
        sage_headers, sage_auth = _sage_credentials(settings, connections, business)
        kommo_limit = _limit(settings, settings.kommo_rate_limit, "kommo", kommo_account)
        sage_limit = _limit(settings, settings.sage_rate_limit, "sage", business)
        kommo_http = build_http_client(
            _required(settings.kommo_base_url, "KOMMO_BASE_URL"),
            headers=kommo_headers,
            auth=kommo_auth,
            timeout=timeout,
            limit=kommo_limit,
        )
        sage_http = build_http_client(
            settings.sage_base_url,
            headers={**sage_headers, "X-Business": business},
            auth=sage_auth,
            timeout=timeout,
            limit=sage_limit,
        )
        kommo = KommoClient(kommo_http, ready=kommo_limit.ready if kommo_limit else no_wait)
        crm = KommoCrm(kommo, kommo_config(settings))
        accounting = SageAccounting(
            SageClient(sage_http), invoice_url_template=settings.sage_invoice_url_template
        )
        limits = [limit for limit in (kommo_limit, sage_limit) if limit is not None]
        return cls(crm, accounting, [kommo_http, sage_http], limits)

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()
        for limit in self._limits:
            await limit.aclose()


def _credentials(
    static: SecretStr | None, connections: Connections | None, key: ConnectionKey
) -> tuple[dict[str, str], httpx.Auth | None]:
    """A static token from the settings wins; otherwise the stored connection's, refreshed."""
    if static is not None:
        return {"Authorization": f"Bearer {static.get_secret_value()}"}, None
    if connections is None:
        raise RuntimeError(f"no {key.provider.value} access token and no connections configured")
    return {}, connections.bearer(key)


def _sage_credentials(
    settings: Settings, connections: Connections | None, business: str
) -> tuple[dict[str, str], httpx.Auth | None]:
    """Outside the sandbox a stored OAuth grant wins; SAGE_ACCESS_TOKEN (a Sage access token,
    about 5 minutes of life, never refreshed) is used only while no grant is stored."""
    static = settings.sage_access_token
    # Only long-running processes (API, worker) hold connections: one-off commands stay quiet.
    if static is not None and not settings.sandbox_mode and connections is not None:
        log.warning(
            "sage.static_token",
            detail="SAGE_ACCESS_TOKEN expires minutes after Sage issued it and cannot be "
            "refreshed; it is used only while no OAuth grant is stored. Connect with OAuth "
            "(POST /ops/connections/sage/start) or `sagebridge connections import sage "
            "--refresh-token ...` (docs/OPERATIONS.md, Connecting real accounts).",
        )
        if connections is not None and connections.config.connection_encryption_keys:
            key = ConnectionKey(Provider.SAGE, business)
            return {}, connections.bearer(key, fallback=static.get_secret_value())
    return _credentials(static, connections, ConnectionKey(Provider.SAGE, business))


def _limit(settings: Settings, rate: str, api: str, account: str) -> SharedRateLimit | None:
    """Shared across processes through Redis; without Redis (a one-off script) there is none."""
    if not settings.redis_url:
        return None
    return SharedRateLimit(settings.redis_url, rate=rate, key=f"{api}:{account}")


def kommo_config(settings: Settings) -> KommoConfig:
    return KommoConfig(
        base_url=_required(settings.kommo_base_url, "KOMMO_BASE_URL"),
        account_id=str(settings.kommo_account_id),
        invoice_number_field_id=_required(
            settings.kommo_invoice_number_field_id, "KOMMO_INVOICE_NUMBER_FIELD_ID"
        ),
        invoice_link_field_id=_required(
            settings.kommo_invoice_link_field_id, "KOMMO_INVOICE_LINK_FIELD_ID"
        ),
        price_field_code=settings.kommo_price_field_code,
        sku_field_code=settings.kommo_sku_field_code,
        product_type_field_code=settings.kommo_product_type_field_code,
        discount_field_code=settings.kommo_discount_field_code,
        email_field_code=settings.kommo_email_field_code,
        task_type_id=settings.kommo_task_type_id,
        payment_status_field_id=settings.kommo_payment_status_field_id,
        payment_status_enums=settings.kommo_payment_status_enums,
        product_list_ids=tuple(settings.kommo_product_list_ids),
        currency=settings.kommo_currency,
        amount_paid_field_id=settings.kommo_amount_paid_field_id,
        amount_outstanding_field_id=settings.kommo_amount_outstanding_field_id,
        last_payment_date_field_id=settings.kommo_last_payment_date_field_id,
        credit_notes_field_id=settings.kommo_credit_notes_field_id,
        credited_amount_field_id=settings.kommo_credited_amount_field_id,
    )


def pipeline_config(settings: Settings) -> PipelineConfig:
    return PipelineConfig(
        trigger_pipeline_id=str(
            _required(settings.kommo_trigger_pipeline_id, "KOMMO_TRIGGER_PIPELINE_ID")
        ),
        trigger_status_id=str(
            _required(settings.kommo_trigger_status_id, "KOMMO_TRIGGER_STATUS_ID")
        ),
        retry_delays=tuple(timedelta(seconds=s) for s in settings.retry_delays_seconds),
        lease=timedelta(seconds=settings.job_timeout_seconds),
        due_days=settings.invoice_due_days,
        task_deadline=timedelta(hours=settings.kommo_task_deadline_hours),
        mapping_file=str(settings.ledger_mappings_path),
        currency_policy=settings.currency_policy,
        change_policy=settings.change_policy,
        cancel_policy=settings.cancel_policy,
    )


def _required(value: T | None, name: str) -> T:
    if value is None:
        raise RuntimeError(f"{name} is not configured (see docs/CONFIGURATION.md)")
    return value
