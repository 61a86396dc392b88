"""What a running `sagebridge run` tells the other commands on this machine.

`run` writes its process id and its embedded Redis URL (a private unix socket and a random
password) to DATA_DIR/run.json, readable by this user only, and removes the file when it
stops. `events replay` reaches that Redis through it, and `run` and `reset` see that a `run`
already uses the data directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from app.embedded_redis import process_alive

RUN_FILE = "run.json"


@dataclass(frozen=True)
class Running:
    pid: int
    redis_url: str | None


def run_file(data_dir: Path) -> Path:
    return data_dir / RUN_FILE


def announce(data_dir: Path, redis_url: str | None) -> None:
    """This process is `run` with that embedded Redis (None: REDIS_URL names one)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = run_file(data_dir)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"pid": os.getpid(), "redis_url": redis_url}, out)


def withdraw(data_dir: Path) -> None:
    """At stop, only this process's own announcement is removed."""
    running = find(data_dir)
    if running is not None and running.pid == os.getpid():
        run_file(data_dir).unlink(missing_ok=True)


def find(data_dir: Path) -> Running | None:
    """The `run` using this data directory, if one is alive (a killed one leaves its file)."""
    try:
        data = json.loads(run_file(data_dir).read_text())
        running = Running(int(data["pid"]), data.get("redis_url"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return running if _is_run(running.pid) else None


def _is_run(pid: int) -> bool:
    """Alive, and (where /proc tells) a sagebridge process: after a reboot a stale file's pid
    may belong to anything."""
    if not process_alive(pid):
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc here: alive is all that can be known
    return b"sagebridge" in command or b"app.cli" in command
