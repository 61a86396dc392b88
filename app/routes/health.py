"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.connections.models import ConnectionState
from app.connections.store import ConnectionStore
from app.mapping_store import Mappings, NoMappingInForce
from app.routes.deps import MappingsDep, QueueDep, SessionDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(session: SessionDep, queue: QueueDep, mappings: MappingsDep) -> JSONResponse:
    """Ready to take and process work: database, Redis, a worker heartbeat, usable connections.
    A 503 body names every part that is not."""
    problems: dict[str, str] = {}
    try:
        await session.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        problems["database"] = f"unreachable: {type(exc).__name__}"
    try:
        if not await queue.worker_alive():
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
    warnings: dict[str, str] = {}
    mapping_sha256 = await _mapping_state(mappings, problems, warnings)
    body = {
        "ready": not problems,
        "problems": problems,
        "warnings": warnings,
        "mapping_sha256": mapping_sha256,
    }
    return JSONResponse(body, status_code=503 if problems else 200)


async def _mapping_state(
    mappings: Mappings, problems: dict[str, str], warnings: dict[str, str]
) -> str | None:
    """The sha256 in force. A refused edit is a warning (the previous mapping stays in force);
    no mapping at all is a problem; without the database (reported above) there is neither."""
    try:
        current = await mappings.current()
        refusal = await mappings.last_refusal()
    except NoMappingInForce as exc:
        problems["mapping"] = exc.problems[0]
        return None
    except (SQLAlchemyError, OSError):
        return None
    if mappings.file_problem is not None:
        warnings["mapping_file"] = (
            f"{mappings.path}: {mappings.file_problem}; version {current.id} stays in force, "
            "restore the file to edit the mapping"
        )
    if refusal is not None:
        warnings["mapping"] = (
            f"the last edit was refused ({refusal.refused_by}), the previous mapping is in "
            "force: " + "; ".join(refusal.problems)
        )
    return current.sha256
