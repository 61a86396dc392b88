"""Simulator of Sage Business Cloud Accounting API v3.1 (see app/sandbox/README.md)."""

from app.sandbox.sage.app import build_sage, create_app
from app.sandbox.sage.config import SageConfig
from app.sandbox.sage.sandbox import SageSandbox
from app.sandbox.sage.state import SageState

__all__ = ["SageConfig", "SageSandbox", "SageState", "build_sage", "create_app"]
