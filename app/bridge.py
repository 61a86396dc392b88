"""What the bridge's jobs need, built once per worker process: the two upstreams behind their
ports, the mapping in force, the pipeline's settings, and a way to schedule a retry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.invoice_currency import CurrencyPolicy
from app.mapping import LedgerMapping
from app.ports import Accounting, Crm

Schedule = Callable[[int, int, datetime | None], Awaitable[None]]


@dataclass(frozen=True)
class PipelineConfig:
    # The invoice stage, as the CRM identifies its pipeline and stage (see `Deal`).
    trigger_pipeline_id: str
    trigger_status_id: str
    retry_delays: tuple[timedelta, ...]
    lease: timedelta
    # None: Sage applies the customer's terms; a number overrides them (INVOICE_DUE_DAYS).
    due_days: int | None
    task_deadline: timedelta
    mapping_file: str
    currency_policy: CurrencyPolicy = CurrencyPolicy.TASK


@dataclass(frozen=True)
class Bridge:
    crm: Crm
    accounting: Accounting
    mapping: Callable[[], Awaitable[LedgerMapping]]
    config: PipelineConfig
    schedule: Schedule
