"""Serve the simulators over real sockets, in the current event loop.

``run_sandbox()`` is for tests and benchmarks (port 0 = an ephemeral port)::

    async with run_sandbox() as sb:
        sb.sage_api_url   # http://127.0.0.1:PORT/v3.1
        sb.kommo_url      # http://127.0.0.1:PORT
        sb.kommo.faults.fail_next("PATCH", "/api/v4/leads/{id}")

``main()`` (``python -m sandbox``) serves both on fixed ports for manual use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
import uvicorn
from fastapi import FastAPI

from sandbox.defaults import KOMMO_PORT, SAGE_PORT
from sandbox.kommo import KommoConfig, KommoSandbox, KommoState, build_kommo
from sandbox.sage import SageConfig, SageSandbox, SageState, build_sage
from sandbox.seed import demo_kommo_config, demo_kommo_state, demo_sage_config, demo_sage_state

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RunningSandbox:
    sage: SageSandbox
    kommo: KommoSandbox
    sage_url: str
    kommo_url: str

    @property
    def sage_api_url(self) -> str:
        """The base URL a Sage client uses (the API lives under /v3.1)."""
        return f"{self.sage_url}/v3.1"


@asynccontextmanager
async def run_sandbox(
    *,
    host: str = "127.0.0.1",
    sage_port: int = 0,
    kommo_port: int = 0,
    sage_config: SageConfig | None = None,
    kommo_config: KommoConfig | None = None,
    sage_state: SageState | None = None,
    kommo_state: KommoState | None = None,
) -> AsyncIterator[RunningSandbox]:
    """Both simulators, seeded with the demo data unless states are given."""
    sage = build_sage(sage_config or demo_sage_config(), sage_state or demo_sage_state())
    kommo = build_kommo(kommo_config or demo_kommo_config(), kommo_state or demo_kommo_state())
    async with (
        serve_app(sage.app, host=host, port=sage_port) as sage_url,
        serve_app(kommo.app, host=host, port=kommo_port) as kommo_url,
    ):
        log.info("sandbox.started", sage_url=sage_url, kommo_url=kommo_url)
        yield RunningSandbox(sage, kommo, sage_url, kommo_url)


@asynccontextmanager
async def serve_app(app: FastAPI, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a socket bound here (so port 0 works); yields its URL."""
    sock = _bind(host, port)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(_serve(server, sock))
    try:
        await _started(server, task)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    # Server.serve() would install signal handlers; several servers in one loop (and pytest)
    # must not fight over them, so run its phases directly.
    config = server.config
    if not config.loaded:
        config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    if server.should_exit:
        return
    await server.main_loop()
    await server.shutdown(sockets=[sock])


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox``: serve both simulators with the demo seed until interrupted."""
    parser = argparse.ArgumentParser(description="Sage and Kommo sandbox upstreams")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--sage-port", type=int, default=SAGE_PORT)
    parser.add_argument("--kommo-port", type=int, default=KOMMO_PORT)
    parser.add_argument("--no-rate-limits", action="store_true", help="switch both limiters off")
    args = parser.parse_args(argv)
    asyncio.run(_serve_forever(args))


async def _serve_forever(args: argparse.Namespace) -> None:
    limits = {"rate_limit": None} if args.no_rate_limits else {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with run_sandbox(
        host=args.host,
        sage_port=args.sage_port,
        kommo_port=args.kommo_port,
        sage_config=demo_sage_config(**limits),
        kommo_config=demo_kommo_config(**limits),
    ) as sandbox:
        print(f"Sage  {sandbox.sage_api_url}  (token sandbox-sage-token)", flush=True)
        print(f"Kommo {sandbox.kommo_url}  (token sandbox-kommo-token)", flush=True)
        await stop.wait()
