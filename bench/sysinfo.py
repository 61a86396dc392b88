"""What a result was measured on (machine, versions, commit) and CPU counters, read from /proc:
the benchmarks are for the Linux machines this project runs on, and need no extra package."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KEY_PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "arq",
    "redis",
    "hiredis",
    "limits",
    "httpx",
    "structlog",
)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live descendants (uvicorn's workers under the manager
    that `API_WORKERS` > 1 starts)."""
    return process_cpu_s(pid) + sum(tree_cpu_s(child) for child in _children(pid))


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and its live descendants, in MiB."""
    return _rss_mb(pid) + sum(tree_rss_mb(child) for child in _children(pid))


def _rss_mb(pid: int) -> float:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    kib = next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), 0)
    return round(kib / 1024, 1)


@dataclass(frozen=True)
class ProcessMatch:
    """Processes called `name` whose command line contains `needle`: the PostgreSQL backends of
    one database, or the redis-server on one port (other users of the same servers excluded)."""

    name: str
    needle: str


def matching_cpu_s(matches: tuple[ProcessMatch, ...]) -> dict[int, float]:
    """CPU seconds used so far by each process (by pid) that one of `matches` selects."""
    used: dict[int, float] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            name = (proc / "comm").read_text().strip()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        if any(m.name == name and m.needle in cmdline for m in matches):
            used[int(proc.name)] = process_cpu_s(int(proc.name))
    return used


def cpu_used_since(before: dict[int, float], matches: tuple[ProcessMatch, ...]) -> float:
    """CPU seconds the matching processes used since `before` (a backend that has exited
    since is not counted: an undercount, never a negative number)."""
    after = matching_cpu_s(matches)
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def load_average() -> str:
    """1, 5 and 15 minute load: other work on the machine shows up here, not in our numbers."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass(frozen=True)
class Environment:
    date: str
    cpu_model: str
    cores: int
    memory_gib: float
    kernel: str
    python: str
    packages: dict[str, str]
    database: str
    redis: str
    commit: str
    load_average_at_start: str


def describe(*, database: str, redis: str) -> Environment:
    return Environment(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 0,
        memory_gib=round(_memory_kib() / 1024 / 1024, 1),
        kernel=platform.release(),
        python=platform.python_version(),
        packages={name: _version(name) for name in KEY_PACKAGES},
        database=database,
        redis=redis,
        commit=_commit(),
        load_average_at_start=load_average(),
    )


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    """The checkout's commit, marked when the work tree has changes (read-only git calls)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = _git(root, "rev-parse", "--short", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' + local changes' if dirty else ''}"


def _git(root: Path, *args: str) -> str:
    out = subprocess.run(  # noqa: S603 - fixed git arguments, no shell
        ["git", *args],  # noqa: S607 - git from PATH, as a developer runs it
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()
