"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.routes.deps import QueueDep, SessionDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(session: SessionDep, queue: QueueDep) -> JSONResponse:
    problems: dict[str, str] = {}
    try:
        await session.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        problems["database"] = f"unreachable: {type(exc).__name__}"
    try:
        await queue.ping()
    except (RedisError, OSError) as exc:
        problems["redis"] = f"unreachable: {type(exc).__name__}"
    status = 503 if problems else 200
    return JSONResponse({"ready": not problems, "problems": problems}, status_code=status)
