"""The demo a newcomer gets from `make run` with no credentials: the sandbox Sage and Kommo,
seeded, with Kommo's webhook pointing at this bridge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from app.settings import Settings
from sandbox.runner import RunningSandbox, run_sandbox
from sandbox.seed import register_webhook

log = structlog.get_logger(__name__)


@asynccontextmanager
async def serve_demo_sandbox(settings: Settings) -> AsyncIterator[RunningSandbox]:
    async with run_sandbox(
        host="127.0.0.1",
        sage_port=settings.sandbox_sage_port,
        kommo_port=settings.sandbox_kommo_port,
    ) as sandbox:
        secret = settings.secret("kommo_webhook_secret")
        hook = f"http://127.0.0.1:{settings.api_port}/webhooks/kommo/{secret}"
        register_webhook(sandbox.kommo.state, hook, ("status_lead", "delete_lead"))
        log.info(
            "sandbox.ready",
            kommo=sandbox.kommo_url,
            sage=sandbox.sage_api_url,
            try_it=f"curl -X POST {sandbox.kommo_url}/sandbox/leads/3000001/move "
            "-H 'Content-Type: application/json' -d '{\"status_id\": 7100003}'",
            see_invoices=f"curl -H 'Authorization: Bearer sandbox-sage-token' "
            f"{sandbox.sage_api_url}/sales_invoices?attributes=all",
        )
        yield sandbox
