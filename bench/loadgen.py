"""An open-loop HTTP/1.1 load generator on raw asyncio streams.

Open loop: request i is due at `start + i / rate` whether or not earlier ones have been answered,
and its latency is measured from that due time. A server that stalls is therefore charged for
every request that queued behind the stall. A closed-loop tool (wrk, locust users) sends the next
request only after an answer, so it slows down with the server and hides that queueing
("coordinated omission"). Kommo sends its webhooks on its own schedule: open loop is its shape.

The client is deliberately minimal (pre-encoded requests, Content-Length framing only) so that
one core can offer well over 1,000 requests/s; `RunResult.lag` shows when it could not.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.stats import Latency

# Kommo waits 2 s for an answer; a slower one is a failed delivery.
DEFAULT_TIMEOUT_S = 2.0
# Enough that the generator, not the server, is never the one making requests wait.
DEFAULT_MAX_CONNECTIONS = 512
# uvicorn closes a keep-alive connection after 5 s idle; reusing one that old races that close
# and fails a POST that a real client would not have sent on it.
MAX_IDLE_S = 3.0


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str

    def request(self, body: bytes, *, keep_alive: bool = True) -> bytes:
        """A complete POST as Kommo sends it (form body, its User-Agent), ready to write."""
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/x-www-form-urlencoded",
            "User-Agent: amoCRM-WebHook-client/1.0",
            f"Content-Length: {len(body)}",
        ]
        if not keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


@dataclass(frozen=True)
class RunResult:
    """One fixed-rate run. `latency` covers successful requests only, from their due time."""

    offered_rate: float
    sent: int
    ok: int
    errors: dict[str, int]
    achieved_rate: float
    latency: Latency
    lag: Latency  # how late the generator itself sent (its own health, not the server's)
    connections: int

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class _Outcome:
    kind: str  # "ok", or the error class
    latency: float
    lag: float
    done_at: float


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        self.writer.close()


@dataclass
class _Pool:
    """Idle keep-alive connections, opened on demand up to `limit` at a time."""

    target: Target
    limit: int
    idle: list[_Connection] = field(default_factory=list)
    opened: int = 0
    slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.limit)

    async def acquire(self) -> _Connection:
        await self.slots.acquire()
        now = asyncio.get_running_loop().time()
        while self.idle:
            conn = self.idle.pop()
            if now - conn.idle_since < MAX_IDLE_S:
                return conn
            conn.close()
        try:
            reader, writer = await asyncio.open_connection(self.target.host, self.target.port)
        except BaseException:
            self.slots.release()
            raise
        self.opened += 1
        return _Connection(reader, writer)

    def release(self, conn: _Connection, *, reusable: bool) -> None:
        if reusable:
            conn.idle_since = asyncio.get_running_loop().time()
            self.idle.append(conn)
        else:
            conn.close()
        self.slots.release()

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class ProtocolError(Exception):
    """The answer was not an HTTP/1.1 response this client can frame."""


async def _exchange(conn: _Connection, payload: bytes) -> tuple[int, bool]:
    """Write one request, read one response; returns (status, connection reusable)."""
    conn.writer.write(payload)
    head = await conn.reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError) as exc:
        raise ProtocolError(lines[0]) from exc
    headers = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    )
    if "content-length" not in headers:
        raise ProtocolError("no Content-Length")
    await conn.reader.readexactly(int(headers["content-length"]))
    return status, headers.get("connection", "").lower() != "close"


async def _one(
    pool: _Pool, payload: bytes, due: float, answer_within_s: float, keep_alive: bool
) -> _Outcome:
    loop = asyncio.get_running_loop()
    lag = loop.time() - due
    conn: _Connection | None = None
    kind, reusable = "ok", False
    try:
        # The deadline runs from the due time, as Kommo's 2 s would from its send.
        async with asyncio.timeout_at(due + answer_within_s):
            conn = await pool.acquire()
            status, reusable = await _exchange(conn, payload)
        kind = "ok" if 200 <= status < 300 else f"http_{status}"
    except TimeoutError:
        kind = "timeout"
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError) as exc:
        kind = type(exc).__name__
    finally:
        if conn is not None:
            pool.release(conn, reusable=reusable and keep_alive and kind == "ok")
    now = loop.time()
    return _Outcome(kind, now - due, lag, now)


async def run_open_loop(
    target: Target,
    bodies: Sequence[bytes],
    rate: float,
    *,
    answer_within_s: float = DEFAULT_TIMEOUT_S,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    keep_alive: bool = True,
) -> RunResult:
    """Send every body once at `rate` per second; bounded by len(bodies)/rate + answer_within_s."""
    payloads = [target.request(body, keep_alive=keep_alive) for body in bodies]
    pool = _Pool(target, max_connections)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    tasks: list[asyncio.Task[_Outcome]] = []
    try:
        for i, payload in enumerate(payloads):
            due = start + i / rate
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(pool, payload, due, answer_within_s, keep_alive)))
        outcomes = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        pool.close()
    return _summarise(outcomes, rate, start, pool.opened)


def _summarise(outcomes: Sequence[_Outcome], rate: float, start: float, opened: int) -> RunResult:
    ok = [o for o in outcomes if o.kind == "ok"]
    errors = Counter(o.kind for o in outcomes if o.kind != "ok")
    # Achieved = answered per second over the whole run, so a backlog that drains late counts.
    span = max((o.done_at for o in outcomes), default=start) - start
    return RunResult(
        offered_rate=rate,
        sent=len(outcomes),
        ok=len(ok),
        errors=dict(errors),
        achieved_rate=round(len(ok) / span, 1) if span > 0 else 0.0,
        latency=Latency.of([o.latency for o in ok]),
        lag=Latency.of([max(0.0, o.lag) for o in outcomes]),
        connections=opened,
    )
