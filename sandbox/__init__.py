"""Simulators of the Kommo API v4 and Sage Accounting API v3.1 (see sandbox/README.md).

A package of its own: it imports nothing from the bridge (app/), which reads its defaults."""

from sandbox.defaults import KOMMO_PORT, SAGE_PORT, SANDBOX_DEFAULTS

__all__ = ["KOMMO_PORT", "SAGE_PORT", "SANDBOX_DEFAULTS"]
