"""FastAPI factory for the Kommo API v4 simulator.

Routes: ``/api/v4/...`` (the API), ``/oauth2/access_token``, and ``/sandbox/...`` (control).
The app's ``state.kommo_sandbox`` holds the ``KommoSandbox``; its lifespan closes the webhook
sender's HTTP client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException

from sandbox.common.control import control_router
from sandbox.common.middleware import SandboxMiddleware
from sandbox.kommo.config import KommoConfig
from sandbox.kommo.errors import KommoError, handle_http_error, handle_kommo_error
from sandbox.kommo.routes import (
    account,
    catalogs,
    contacts,
    control,
    leads,
    oauth,
    tasks,
    webhooks,
)
from sandbox.kommo.sandbox import KommoSandbox
from sandbox.kommo.state import KommoState


def build_kommo(config: KommoConfig | None, state: KommoState) -> KommoSandbox:
    sandbox = KommoSandbox.build(config or KommoConfig(), state)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await sandbox.webhooks.aclose()

    app = FastAPI(title="Kommo API v4 sandbox", version="4", lifespan=lifespan)
    app.state.kommo_sandbox = sandbox
    app.add_exception_handler(KommoError, handle_kommo_error)
    app.add_exception_handler(HTTPException, handle_http_error)
    app.add_middleware(SandboxMiddleware, instruments=sandbox.instruments)
    # account (pipelines, custom fields) before leads, so /leads/pipelines is not a lead id.
    for module in (oauth, account, leads, contacts, catalogs, tasks, webhooks, control):
        app.include_router(module.router)
    app.include_router(control_router(sandbox.instruments, sandbox.oauth))
    sandbox.app = app
    return sandbox


def create_app(config: KommoConfig | None, state: KommoState) -> FastAPI:
    return build_kommo(config, state).app
