"""Counts and settings for a run. `FULL` holds the issue's numbers (the defaults of
`make reliability`); `FAST` is what tests/reliability/ runs inside the normal suite."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Profile:
    name: str
    redelivery_deals: int  # per mode (sequential, concurrent)
    kill_deals: int
    kill_every_s: float
    kill_spread_s: float  # the 500 webhooks arrive over this long
    redis_deals: int
    redis_down_s: float
    db_deals: int
    db_down_s: float
    fault_deals: int  # per phase
    fault_phases: str  # A commit-then-timeout, B 5xx burst, C 429, D exhausted
    ladder: tuple[int, ...]  # RETRY_DELAYS_SECONDS in scenario 5
    # 429 Retry-After values: ≤ 5 s is absorbed in the request, longer goes to the ladder.
    retry_after: tuple[int, ...]
    sage_http_timeout: float
    ladder_tolerance_s: float
    check_timing: bool  # timing bounds are pass/fail only in the full run
    hostile_body_mb: int
    hostile_bodies: int
    hypothesis_examples: int
    schemathesis_examples: int
    secrets_deals: int
    settle_timeout_s: float
    # Bridge settings for every scenario (on top of the stack's), and per scenario.
    base_settings: dict[str, str] = field(default_factory=dict)
    scenario_settings: dict[str, dict[str, str]] = field(default_factory=dict)

    def settings_for(self, scenario: str) -> dict[str, str]:
        return {**self.base_settings, **self.scenario_settings.get(scenario, {})}

    def with_counts(self, **counts: Any) -> Profile:
        return replace(self, **{k: v for k, v in counts.items() if v is not None})


FULL = Profile(
    name="full",
    redelivery_deals=1000,
    kill_deals=500,
    kill_every_s=5.0,
    kill_spread_s=60.0,
    redis_deals=500,
    redis_down_s=5.0,
    db_deals=500,
    db_down_s=20.0,
    fault_deals=5,
    fault_phases="ABCD",
    ladder=(6, 30, 90),  # the real 60/300/900 ladder, scaled down ×10 by configuration
    retry_after=(12, 3),
    sage_http_timeout=3.0,
    ladder_tolerance_s=5.0,
    check_timing=True,
    hostile_body_mb=64,
    hostile_bodies=8,
    hypothesis_examples=1000,
    schemathesis_examples=50,
    secrets_deals=20,
    settle_timeout_s=900,
    # Production defaults otherwise (job timeout/lease 30 s, sweeper 15 s, ladder 60/300/900).
    base_settings={},
    scenario_settings={
        "5": {"RETRY_DELAYS_SECONDS": "[6,30,90]", "HTTP_TIMEOUT_SECONDS": "3"},
        # Parked events are offered again by the sweeper once the grant is back.
        "6": {"SWEEPER_INTERVAL_SECONDS": "5"},
        "8": {"RETRY_DELAYS_SECONDS": "[1,1]", "HTTP_TIMEOUT_SECONDS": "2"},
    },
)

FAST = Profile(
    name="fast",
    redelivery_deals=6,
    kill_deals=30,
    kill_every_s=1.0,
    kill_spread_s=6.0,  # slow enough that the killer finds the worker busy
    redis_deals=30,
    redis_down_s=2.0,
    db_deals=30,
    db_down_s=3.0,
    fault_deals=1,
    fault_phases="ACD",  # B is D's path with fewer failures
    ladder=(1, 2),
    retry_after=(2,),
    sage_http_timeout=2.0,
    ladder_tolerance_s=5.0,
    check_timing=False,
    hostile_body_mb=8,
    hostile_bodies=2,
    hypothesis_examples=200,
    schemathesis_examples=10,
    secrets_deals=4,
    settle_timeout_s=120,
    # Short lease and sweeper so a killed worker's events come back in seconds, not a minute.
    base_settings={
        "JOB_TIMEOUT_SECONDS": "5",
        "SWEEPER_INTERVAL_SECONDS": "1",
        "RETRY_DELAYS_SECONDS": json.dumps([1, 2]),
        "HTTP_TIMEOUT_SECONDS": "2",
    },
)
