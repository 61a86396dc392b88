"""What the bridge's jobs need, built once per worker process: the two upstreams behind their
ports, the mapping in force, the pipeline's settings, and a way to schedule a retry."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.invoice_currency import CurrencyPolicy
from app.mapping import LedgerMapping
from app.ports import Accounting, Crm

Schedule = Callable[[int, int, datetime | None], Awaitable[None]]


class ChangePolicy(enum.StrEnum):
    """An invoiced deal moved into the invoice stage again with other lines (CHANGE_POLICY)."""

    TASK = "task"  # a task listing the differences; nothing posted
    REISSUE = "reissue"  # a credit note for the old invoice, then a new invoice


class CancelPolicy(enum.StrEnum):
    """An invoiced deal lost (closed-lost) or deleted (CANCEL_POLICY)."""

    TASK = "task"  # the invoice stands; a task says so
    VOID = "void"  # an unpaid invoice is voided (never one with money paid or credited on it)


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
    change_policy: ChangePolicy = ChangePolicy.TASK
    cancel_policy: CancelPolicy = CancelPolicy.TASK


@dataclass(frozen=True)
class Bridge:
    crm: Crm
    accounting: Accounting
    mapping: Callable[[], Awaitable[LedgerMapping]]
    config: PipelineConfig
    schedule: Schedule
