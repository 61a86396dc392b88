"""Latency summaries, in milliseconds, shared by every benchmark."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Latency:
    """Percentiles in milliseconds over `count` samples (nearest rank, no interpolation)."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        if not seconds:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        ordered = sorted(seconds)
        return cls(
            count=len(ordered),
            p50_ms=_ms(percentile(ordered, 50)),
            p95_ms=_ms(percentile(ordered, 95)),
            p99_ms=_ms(percentile(ordered, 99)),
            max_ms=_ms(ordered[-1]),
        )


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)
