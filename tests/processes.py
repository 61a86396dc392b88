"""`sagebridge` commands as real processes, started as an operator starts them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no upstream or ops settings inherited from the machine."""
    drop = ("KOMMO_", "SAGE_", "OPS_", "DATABASE_URL", "REDIS_URL", "SANDBOX_", "DOCS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(DATA_DIR=str(tmp_path / "data"), LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


async def command(
    *args: str, env: dict[str, str], timeout: float = 30, stdin: bytes | None = None
) -> tuple[int | None, str]:
    """Run `sagebridge ARGS`; a command still running after `timeout` is killed (rc None)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout=timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        return None, (out + err).decode()
    return proc.returncode, (out + err).decode()


async def wait_for(url: str, proc: asyncio.subprocess.Process, timeout: float = 60) -> None:
    """Until `url` answers 200; a process that exits meanwhile fails the wait."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise RuntimeError(f"exited with {proc.returncode} during start-up")
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise TimeoutError(url)


@asynccontextmanager
async def running(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`sagebridge run`, its output in `log`; stopped on the way out if still running (SIGTERM
    first, so it stops its embedded Redis, which a kill would leave running)."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app.cli", "run", cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
