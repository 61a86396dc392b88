"""Simulator of Sage Business Cloud Accounting API v3.1 (see sandbox/README.md).

Its names load on first use: the bridge reads the seed's ids and published tokens
(`sandbox.defaults`) in every process, and must not load the simulator's app for that."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.sage.app import build_sage, create_app
    from sandbox.sage.config import SageConfig
    from sandbox.sage.sandbox import SageSandbox
    from sandbox.sage.state import SageState

_WHERE = {
    "SageConfig": "sandbox.sage.config",
    "SageSandbox": "sandbox.sage.sandbox",
    "SageState": "sandbox.sage.state",
    "build_sage": "sandbox.sage.app",
    "create_app": "sandbox.sage.app",
}
__all__ = ["SageConfig", "SageSandbox", "SageState", "build_sage", "create_app"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
