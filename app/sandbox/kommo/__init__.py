"""Simulator of the Kommo (amoCRM) API v4 (see app/sandbox/README.md)."""

from app.sandbox.kommo.app import build_kommo, create_app
from app.sandbox.kommo.config import KommoConfig
from app.sandbox.kommo.sandbox import KommoSandbox
from app.sandbox.kommo.state import KommoState
from app.sandbox.kommo.webhooks import WebhookDelivery

__all__ = [
    "KommoConfig",
    "KommoSandbox",
    "KommoState",
    "WebhookDelivery",
    "build_kommo",
    "create_app",
]
