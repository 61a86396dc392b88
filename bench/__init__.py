"""Benchmarks for sagebridge: webhook ingest, end-to-end invoicing against the rate-limited
sandbox upstreams, and process footprint. Run `python -m bench --quick` (see docs/PERFORMANCE.md).
"""
