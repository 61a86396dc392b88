"""run.json: what a running `sagebridge run` tells the CLI, and what a stale one must not."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from app import running


def stale(data_dir: Path, pid: int) -> None:
    data_dir.mkdir()
    (data_dir / "run.json").write_text(json.dumps({"pid": pid, "redis_url": "unix://:p@/x"}))


def test_a_file_left_by_a_killed_run_is_no_run(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])  # noqa: S607 - a process that has ended
    gone.wait()
    stale(tmp_path / "data", gone.pid)

    assert running.find(tmp_path / "data") is None


def test_a_pid_now_used_by_another_program_is_no_run(tmp_path: Path) -> None:
    """After a reboot the file's pid may belong to anything."""
    stranger = subprocess.Popen(["sleep", "30"])  # noqa: S607
    try:
        stale(tmp_path / "data", stranger.pid)
        found = running.find(tmp_path / "data")
    finally:
        stranger.kill()
        stranger.wait()

    assert found is None


def test_no_file_or_a_garbled_one_is_no_run(tmp_path: Path) -> None:
    assert running.find(tmp_path / "none") is None
    (tmp_path / "run.json").write_text("{not json")
    assert running.find(tmp_path) is None
