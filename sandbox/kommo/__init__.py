"""Simulator of the Kommo (amoCRM) API v4 (see sandbox/README.md).

Its names load on first use: the bridge reads the seed's ids and published tokens
(`sandbox.defaults`) in every process, and must not load the simulator's app for that."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandbox.kommo.app import build_kommo, create_app
    from sandbox.kommo.config import KommoConfig
    from sandbox.kommo.sandbox import KommoSandbox
    from sandbox.kommo.state import KommoState
    from sandbox.kommo.webhooks import WebhookDelivery

_WHERE = {
    "KommoConfig": "sandbox.kommo.config",
    "KommoSandbox": "sandbox.kommo.sandbox",
    "KommoState": "sandbox.kommo.state",
    "WebhookDelivery": "sandbox.kommo.webhooks",
    "build_kommo": "sandbox.kommo.app",
    "create_app": "sandbox.kommo.app",
}
__all__ = [
    "KommoConfig",
    "KommoSandbox",
    "KommoState",
    "WebhookDelivery",
    "build_kommo",
    "create_app",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
