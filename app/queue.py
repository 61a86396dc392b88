"""The one module that knows arq. The durable inbox is the record; Redis only delivers it.

arq is in maintenance mode, so nothing outside this module and `app/workers/` names an arq
type: the API, the CLI and the jobs use `Queue`.
Jobs are JSON, never arq's default pickle: a job carries an event id, and whoever can write to
Redis must not be able to run code in the worker, which holds the decrypted upstream tokens.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from arq.connections import ArqRedis, RedisSettings
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job as arq_job
from arq.utils import timestamp_ms
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

PROCESS_EVENT = "process_event"
QUEUE_NAME = "sagebridge:queue"
HEARTBEAT_SECONDS = 10
HEARTBEAT_KEY = f"{QUEUE_NAME}:health-check"  # arq's own key name for this queue
# A job that fires a moment before its row is due would find nothing to do; aim just after.
DEFER_SLACK = timedelta(seconds=1)


def job_id(event_id: int, attempt: int) -> str:
    """Deterministic: a duplicate enqueue of the same attempt is refused by arq itself."""
    return f"event:{event_id}:{attempt}"


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_retries = 1
    settings.conn_timeout = 2
    return settings


def serialize_job(data: dict[str, Any]) -> bytes:
    """arq's job and result records as JSON; a failed job's exception becomes its text."""
    return json.dumps(data, default=_describe).encode()


def deserialize_job(raw: bytes) -> dict[str, Any]:
    """Anything but a JSON object is refused (arq logs it and drops the job)."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("a job must be a JSON object")
    return data


def _describe(value: object) -> str:
    return f"{type(value).__name__}: {value}"


JOB_SERIALIZERS: dict[str, Any] = {
    "job_serializer": serialize_job,
    "job_deserializer": deserialize_job,
}


async def open_pool(url: str) -> ArqRedis:
    """A lazily connecting pool: the API starts, and stores webhooks, while Redis is down."""
    pool = ConnectionPool.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    return ArqRedis(pool, default_queue_name=QUEUE_NAME, **JOB_SERIALIZERS)


WEBHOOK_STATE_KEY = "sagebridge:kommo_webhook_state"

# arq's own enqueue (WATCH, EXISTS, MULTI/PSETEX/ZADD/EXEC: three round trips per job) as one
# script for any number of jobs: a job already queued, or already finished (its result kept),
# is left alone, exactly as `ArqRedis.enqueue_job` leaves it.
# KEYS[1] the queue; ARGV: job key prefix, result key prefix, score, expiry (ms), then pairs of
# job id and serialized job. Returns how many were added.
_ENQUEUE_MANY = """
local added = 0
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('EXISTS', ARGV[1] .. id, ARGV[2] .. id) == 0 then
    redis.call('PSETEX', ARGV[1] .. id, ARGV[4], ARGV[i + 1])
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    added = added + 1
  end
end
return added
"""


class Queue:
    """What the bridge asks of Redis: run an event, remember the CRM hook's state, and tell
    whether a worker is alive."""

    def __init__(self, redis: ArqRedis) -> None:
        self._redis = redis
        self._enqueue_many = redis.register_script(_ENQUEUE_MANY)

    @classmethod
    async def open(cls, url: str) -> Queue:
        return cls(await open_pool(url))

    async def close(self) -> None:
        await self._redis.aclose()

    async def enqueue_event(
        self, event_id: int, attempt: int = 0, at: datetime | None = None
    ) -> bool:
        """Ask a worker to run the event; False if Redis is unreachable (the sweeper will
        catch up) or the same attempt is already queued."""
        kwargs: dict[str, Any] = {"_job_id": job_id(event_id, attempt), "_queue_name": QUEUE_NAME}
        if at is not None:
            kwargs["_defer_until"] = at + DEFER_SLACK
        try:
            job = await self._redis.enqueue_job(PROCESS_EVENT, event_id, **kwargs)
        except (RedisError, OSError) as exc:
            log.warning("queue.enqueue_failed", event_id=event_id, error=type(exc).__name__)
            return False
        return job is not None

    async def enqueue_events(self, event_ids: list[int]) -> int:
        """Ask a worker to run each new event (first attempt, due now) in one Redis round trip;
        how many were added (0 if Redis is unreachable: the sweeper will catch up)."""
        if not event_ids:
            return 0
        now = timestamp_ms()
        argv: list[str | bytes | int] = [job_key_prefix, result_key_prefix, now, expires_extra_ms]
        for event_id in event_ids:
            job = arq_job(PROCESS_EVENT, (event_id,), {}, None, now, serializer=serialize_job)
            argv += [job_id(event_id, 0), job]
        try:
            added = await self._enqueue_many(keys=[QUEUE_NAME], args=argv)
        except (RedisError, OSError) as exc:
            log.warning("queue.enqueue_failed", event_ids=event_ids, error=type(exc).__name__)
            return 0
        return int(added)

    async def record_webhook_state(self, state: str) -> None:
        """What the last check found (enabled / disabled / not_registered), for ops."""
        value = json.dumps({"state": state, "checked_at": datetime.now(UTC).isoformat()})
        await self._redis.set(WEBHOOK_STATE_KEY, value, ex=24 * 3600)

    async def webhook_state(self) -> dict[str, Any] | None:
        raw = await self._redis.get(WEBHOOK_STATE_KEY)
        state: dict[str, Any] | None = json.loads(raw) if raw else None
        return state

    async def claim(self, name: str, *, seconds: int) -> bool:
        """True for the one caller in the fleet that claims `name` until it expires."""
        return bool(await self._redis.set(f"sagebridge:claim:{name}", "1", nx=True, ex=seconds))

    async def depth(self) -> int:
        """Jobs waiting in the queue (deferred retries included)."""
        return int(await self._redis.zcard(QUEUE_NAME))

    async def worker_alive(self) -> bool:
        """A worker wrote its heartbeat within the last HEARTBEAT_SECONDS (+1 s TTL slack)."""
        return bool(await self._redis.exists(HEARTBEAT_KEY))
