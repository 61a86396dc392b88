"""Scenario 7 (configuration part) — issue 13's findings 1-6 against real processes: what a
careless operator's configuration or a process beside the bridge can do.

1. an empty or short OPS_API_TOKEN: `sagebridge api` refuses to start (one line, exit 2);
2. a pickle planted in the queue's Redis runs nothing and the worker goes on; `sagebridge run`'s
   embedded Redis takes no connection without its password and stops with `run` on SIGTERM;
3. `api` with no upstream credentials refuses to start; `run` with credentials and
   SANDBOX_MODE=true in its environment starts no simulator;
4-6. (over HTTP, in hostile.py's request list) a 5,000-digit index and 501 entries are 400s, a
   body without account[id] is a 400, and entities the bridge never acts on are not stored.
"""

# ruff: noqa: ASYNC109, ASYNC240 - a harness: bounded waits, its own log files

from __future__ import annotations

import asyncio
import json
import pickle
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.queue import QUEUE_NAME
from reliability.common import Result
from reliability.infra import free_port, port_open
from reliability.stack import ROOT, Stack

CREDENTIAL_VARS = ("KOMMO_ACCESS_TOKEN", "SAGE_ACCESS_TOKEN", "KOMMO_OAUTH_", "SAGE_OAUTH_")


async def run(stack: Stack, result: Result) -> None:
    """Adds this part's counts and checks to scenario 7's result."""
    counts: dict[str, Any] = {}
    counts["ops_token"] = await _ops_token_refused(stack, result)
    counts["planted_pickle"] = await _planted_pickle(stack, result)
    counts["api_without_credentials"] = await _no_credentials(stack, result)
    counts["run_with_sandbox_mode_env"] = await _sandbox_mode_env(stack, result)
    counts["embedded_redis"] = await _embedded_redis(stack, result)
    result.counts["configuration"] = counts


async def _command(
    stack: Stack, args: list[str], env: dict[str, str], timeout: float = 30
) -> tuple[int | None, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "app.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return None, out.decode(errors="replace")
    return proc.returncode, out.decode(errors="replace")


def _env(stack: Stack, **changes: str | None) -> dict[str, str]:
    env = stack.bridge.env()
    env["API_PORT"] = str(free_port())
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


async def _ops_token_refused(stack: Stack, result: Result) -> dict[str, Any]:
    answers: dict[str, dict[str, Any]] = {}
    refused = []
    for name, token in (("empty", ""), ("short", "x" * 31)):
        rc, out = await _command(stack, ["api"], _env(stack, OPS_API_TOKEN=token), timeout=30)
        answers[name] = {"exit": rc, "output": out[:200]}
        refused.append(rc == 2 and len(out.splitlines()) == 1 and "OPS_API_TOKEN" in out)
    result.check(
        "an empty or short OPS_API_TOKEN: api refuses to start (one line, exit 2)", all(refused)
    )
    return answers


async def _planted_pickle(stack: Stack, result: Result) -> dict[str, Any]:
    marker = stack.workdir / "planted-job-ran"

    class Planted:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path.touch, (marker,))

    job = {"t": 1, "f": "process_event", "a": [1], "k": {}, "et": 0, "x": Planted()}
    async with aioredis.Redis.from_url(stack.redis.url(0)) as r:
        await r.psetex("arq:job:planted", 60_000, pickle.dumps(job))
        await r.zadd(QUEUE_NAME, {"planted": time.time() * 1000})
        for _ in range(150):  # the worker polls every 50 ms: seconds at most
            if await r.zscore(QUEUE_NAME, "planted") is None:
                break
            await asyncio.sleep(0.2)
        left = await r.zscore(QUEUE_NAME, "planted")
    worker = stack.bridge.processes["worker-0"].proc
    outcome = {"ran": marker.exists(), "taken_off_queue": left is None}
    outcome["worker_alive"] = worker.poll() is None
    result.check("a pickle planted in Redis runs nothing", not outcome["ran"])
    result.check(
        "the worker drops the planted job and keeps running",
        outcome["taken_off_queue"] and outcome["worker_alive"],
    )
    return outcome


def _without_credentials(stack: Stack) -> dict[str, str]:
    env = _env(stack)
    return {k: v for k, v in env.items() if not k.startswith(CREDENTIAL_VARS)}


async def _no_credentials(stack: Stack, result: Result) -> dict[str, Any]:
    rc, out = await _command(stack, ["api"], _without_credentials(stack), timeout=30)
    result.check(
        "api with no upstream credentials refuses to start (no sandbox fallback)",
        rc == 2 and "no Kommo/Sage credentials are configured" in out,
    )
    return {"exit": rc, "first": out[:160]}


async def _sandbox_mode_env(stack: Stack, result: Result) -> dict[str, Any]:
    ports = {"SANDBOX_SAGE_PORT": free_port(), "SANDBOX_KOMMO_PORT": free_port()}
    env = _env(stack, SANDBOX_MODE="true", **{k: str(v) for k, v in ports.items()})
    log = stack.workdir / "logs" / "run-sandbox-mode-env.log"
    async with _Running(env, log) as proc:
        up = await _healthy(int(env["API_PORT"]), proc)
        simulators = [port_open(p) for p in ports.values()]
    text = log.read_text(errors="replace")
    started = any(f'"{e}"' in text for e in ("sandbox.mode", "sandbox.ready"))
    result.check(
        "run with credentials ignores SANDBOX_MODE=true (no simulator, no sandbox values)",
        up and not any(simulators) and not started,
    )
    return {"api_up": up, "simulators_listening": simulators, "sandbox_logged": started}


async def _embedded_redis(stack: Stack, result: Result) -> dict[str, Any]:
    env = _without_credentials(stack)
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    env.update(
        DATA_DIR=str(stack.workdir / "run-data"),
        SANDBOX_SAGE_PORT=str(free_port()),
        SANDBOX_KOMMO_PORT=str(free_port()),
        OPS_API_TOKEN="o" * 40,
    )
    log = stack.workdir / "logs" / "run-embedded.log"
    async with _Running(env, log) as proc:
        up = await _healthy(int(env["API_PORT"]), proc)
        started = _log_event(log, "redis.embedded_started")
        refused = await _refuses_without_password(started.get("socket"))
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), timeout=60)
    pid = int(started.get("pid") or 0)
    left = pid > 0 and Path(f"/proc/{pid}").exists() and not _zombie(pid)
    outcome = {"api_up": up, "no_password_refused": refused, "exit": rc, "redis_left": left}
    result.check("the embedded Redis refuses a client without its password", refused)
    result.check(
        "run stops on SIGTERM and leaves no redis-server behind", up and rc == 0 and not left
    )
    return outcome


async def _refuses_without_password(socket_path: str | None) -> bool:
    if not socket_path:
        return False
    try:
        async with aioredis.Redis(unix_socket_path=socket_path) as r:
            await r.ping()
    except RedisError as exc:  # redis-py wraps the refusal met while connecting
        return "Authentication required" in str(exc)
    return False


def _log_event(log: Path, event: str) -> dict[str, Any]:
    for line in log.read_text(errors="replace").splitlines():
        if f'"{event}"' in line:
            try:
                record: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            return record
    return {}


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return False


async def _healthy(port: int, proc: asyncio.subprocess.Process, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline and proc.returncode is None:
            try:
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    return False


class _Running:
    """`sagebridge run` as a process with its log in a file; killed on exit if still running."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = {**env, "LOG_JSON": "true", "PYTHONUNBUFFERED": "1"}
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> asyncio.subprocess.Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "app.cli",
                "run",
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=out,
            )
        return self.proc

    async def __aexit__(self, *_: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=30)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
