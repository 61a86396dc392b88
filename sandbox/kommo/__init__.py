"""Simulator of the Kommo (amoCRM) API v4 (see sandbox/README.md).

Its names load on first use (sandbox/common/lazy.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandbox.common.lazy import lazy_names

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

__getattr__ = lazy_names(__name__, _WHERE)
