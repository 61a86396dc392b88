"""Simulator of the Kommo (amoCRM) API v4 (see sandbox/README.md)."""

from sandbox.kommo.app import build_kommo, create_app
from sandbox.kommo.config import KommoConfig
from sandbox.kommo.sandbox import KommoSandbox
from sandbox.kommo.state import KommoState
from sandbox.kommo.webhooks import WebhookDelivery

__all__ = [
    "KommoConfig",
    "KommoSandbox",
    "KommoState",
    "WebhookDelivery",
    "build_kommo",
    "create_app",
]
