"""Sage idempotency: ``idempotency_id`` inside the entity namespace of a POST body.

A repeated id returns the first *successful* answer (same status and body) and creates
nothing. Failed attempts are not remembered, so a client may fix its data and retry with the
same id (Sage's retention rules are UNCONFIRMED; this is the behaviour the bridge needs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from fastapi.responses import JSONResponse

from sandbox.sage.models import Book
from sandbox.sage.sandbox import SageSandbox

log = structlog.get_logger(__name__)

Creator = Callable[[dict[str, Any]], dict[str, Any]]


def create_once(
    sandbox: SageSandbox, book: Book, body: Any, *, entity: str, definition: str, create: Creator
) -> JSONResponse:
    """Validate ``body`` against ``definition`` and run ``create`` on its ``entity`` namespace."""
    key = _idempotency_id(body, entity)
    with sandbox.state.lock:
        saved = book.idempotent.get((entity, key)) if key else None
        if saved is not None:
            log.info("sage.idempotent.replayed", entity=entity, idempotency_id=key)
            return JSONResponse(saved[1], status_code=saved[0])
        sandbox.validator.validate(definition, body)
        payload = create(body[entity])
        if key:
            book.idempotent[(entity, key)] = (201, payload)
    log.info("sage.created", entity=entity, id=payload.get("id"), idempotency_id=key)
    return JSONResponse(payload, status_code=201)


def _idempotency_id(body: Any, entity: str) -> str | None:
    namespace = body.get(entity) if isinstance(body, dict) else None
    key = namespace.get("idempotency_id") if isinstance(namespace, dict) else None
    return key if isinstance(key, str) and key else None
