"""FastAPI factory for the Sage Business Cloud Accounting v3.1 simulator.

Routes: ``/v3.1/...`` (the API), ``/oauth/token``, and ``/sandbox/...`` (control). The app's
``state.sage_sandbox`` holds the ``SageSandbox`` (config, state, OAuth store, instruments).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from sandbox.common.control import control_router
from sandbox.common.middleware import SandboxMiddleware
from sandbox.sage.config import SageConfig
from sandbox.sage.errors import (
    SageError,
    handle_http_error,
    handle_sage_error,
    handle_validation_error,
)
from sandbox.sage.routes import (
    contacts,
    control,
    credit_notes,
    invoices,
    oauth,
    payments,
    reference,
)
from sandbox.sage.sandbox import SageSandbox
from sandbox.sage.state import SageState


def build_sage(config: SageConfig | None = None, state: SageState | None = None) -> SageSandbox:
    """A simulator and its app; an empty state unless one (e.g. the demo seed) is given."""
    sandbox = SageSandbox.build(config or SageConfig(), state or SageState())
    app = FastAPI(title="Sage Accounting v3.1 sandbox", version="3.1")
    app.state.sage_sandbox = sandbox
    app.add_exception_handler(SageError, handle_sage_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(HTTPException, handle_http_error)
    app.add_middleware(SandboxMiddleware, instruments=sandbox.instruments)
    for module in (oauth, reference, contacts, invoices, credit_notes, payments, control):
        app.include_router(module.router)
    app.include_router(control_router(sandbox.instruments, sandbox.oauth))
    sandbox.app = app
    return sandbox


def create_app(config: SageConfig | None = None, state: SageState | None = None) -> FastAPI:
    return build_sage(config, state).app
