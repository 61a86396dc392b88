"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.connections.models import ConnectionState
from app.connections.store import ConnectionStore
from app.queue import worker_alive
from app.routes.deps import MappingDep, QueueDep, SessionDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(session: SessionDep, queue: QueueDep, mapping: MappingDep) -> JSONResponse:
    """Ready to take and process work: database, Redis, a worker heartbeat, usable connections.
    A 503 body names every part that is not."""
    problems: dict[str, str] = {}
    try:
        await session.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        problems["database"] = f"unreachable: {type(exc).__name__}"
    try:
        if not await worker_alive(queue):
            problems["worker"] = "no worker heartbeat in the last 10 s: is a worker running?"
    except (RedisError, OSError) as exc:
        problems["redis"] = f"unreachable: {type(exc).__name__}"
    try:
        dead = [
            f"{c.provider.value}:{c.account}"
            for c in await ConnectionStore(session, None).list_all()
            if c.state == ConnectionState.NEEDS_REAUTH
        ]
    except (SQLAlchemyError, OSError):
        dead = []  # the database problem is reported above
    if dead:
        problems["connections"] = (
            f"{', '.join(dead)} need re-authorisation: POST /ops/connections/<provider>/start"
        )
    # A refused edit leaves the previous mapping in force: worth a warning, not an outage.
    warnings = {}
    if mapping.last_refusal:
        warnings["mapping"] = "the last edit was refused, the previous mapping is in force: " + (
            "; ".join(mapping.last_refusal)
        )
    body = {
        "ready": not problems,
        "problems": problems,
        "warnings": warnings,
        "mapping_sha256": mapping.get().sha256,
    }
    return JSONResponse(body, status_code=503 if problems else 200)
