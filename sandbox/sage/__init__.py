"""Simulator of Sage Business Cloud Accounting API v3.1 (see sandbox/README.md).

Its names load on first use (sandbox/common/lazy.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandbox.common.lazy import lazy_names

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

__getattr__ = lazy_names(__name__, _WHERE)
