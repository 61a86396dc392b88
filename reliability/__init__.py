"""Reliability and security proof harness (issue 7): fault injection, load and hostile input
against real processes on 127.0.0.1. Entry point: ``python -m reliability.run`` (`make
reliability`); the small versions run in the normal suite from ``tests/reliability/``."""
