"""Simulator of Sage Business Cloud Accounting API v3.1 (see sandbox/README.md)."""

from sandbox.sage.app import build_sage, create_app
from sandbox.sage.config import SageConfig
from sandbox.sage.sandbox import SageSandbox
from sandbox.sage.state import SageState

__all__ = ["SageConfig", "SageSandbox", "SageState", "build_sage", "create_app"]
