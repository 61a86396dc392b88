"""A package's names loaded on first use (PEP 562): the bridge reads the seed's ids and published
tokens (`sandbox.defaults`) in every process, and must not load the simulators' apps for that."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """The package's `__getattr__`: each name in `where`, imported from the module it names."""

    def attribute(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name]), name)

    return attribute
