"""Supply chain: every import is a declared dependency, every dependency is pinned with hashes,
and the Makefile and the Dockerfile install only from those locks."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OWN = {"app", "sandbox", "tests", "reliability", "bench", "migrations"}


def _name(requirement: str) -> str:
    """`uvicorn[standard]>=0.30` → `uvicorn` (PEP 503 normalised)."""
    bare = re.split(r"[\[<>=!~; ]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", bare).lower()


RUNTIME = {_name(r) for r in PROJECT["dependencies"]}
DEV = RUNTIME | {_name(r) for r in PROJECT["optional-dependencies"]["dev"]}


def _imported(folder: str) -> set[str]:
    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in OWN}


def _undeclared(folder: str, declared: set[str]) -> list[str]:
    distributions = packages_distributions()
    return sorted(
        module
        for module in _imported(folder)
        if not {_name(d) for d in distributions.get(module, [module])} & declared
    )


def test_every_import_of_the_app_is_a_declared_dependency() -> None:
    assert _undeclared("app", RUNTIME) == []


def test_every_import_of_the_sandbox_is_a_declared_dependency() -> None:
    """The image ships the sandbox too (`sagebridge run` serves it)."""
    assert _undeclared("sandbox", RUNTIME) == []


@pytest.mark.parametrize("folder", ["tests", "reliability", "bench"])
def test_every_import_of_the_tooling_is_declared(folder: str) -> None:
    assert _undeclared(folder, DEV) == []


def _pins(lock: str) -> dict[str, str]:
    """name → version of every `name==version \\` entry, each of which must carry a hash."""
    text = (ROOT / "requirements" / lock).read_text()
    entries = re.findall(
        r"^([A-Za-z0-9_.-]+)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}.*\n)+)", text, re.M
    )
    pinned = {_name(name): version for name, version, _ in entries}
    assert len(pinned) == len(re.findall(r"^[A-Za-z0-9_.-]+==", text, re.M)), "a pin has no hash"
    return pinned


def test_the_locks_pin_every_dependency_with_hashes_and_agree() -> None:
    runtime, dev = _pins("runtime.txt"), _pins("dev.txt")

    assert RUNTIME - runtime.keys() == set()
    assert DEV - dev.keys() == set()
    assert {"pip", "setuptools"} <= runtime.keys()
    assert {name: v for name, v in runtime.items() if dev.get(name) != v} == {}


def test_the_makefile_and_the_image_install_from_the_locks_only() -> None:
    makefile = (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()

    assert "pip install --quiet --require-hashes -r $(LOCK)" in makefile
    assert "pip install --quiet --no-deps --no-build-isolation -e ." in makefile
    assert "--upgrade pip" not in makefile
    assert "pip install --no-cache-dir --require-hashes -r requirements/runtime.txt" in dockerfile
    assert "--no-deps --no-build-isolation ." in dockerfile
    assert re.search(r"^FROM python:[\w.-]+@sha256:[0-9a-f]{64}$", dockerfile, re.M)
