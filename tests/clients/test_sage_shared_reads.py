"""Sage's tax rates and financial settings: jobs that ask at once share one read (a burst of deals
must not spend Sage's first minute reading them ten times), a failed read is not kept, and a
job cancelled while it waits does not fail the others."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import cast

import pytest

from app.clients.sage.adapter import SageAccounting
from app.clients.sage.client import SageClient
from app.clients.sage.schemas import FinancialSettings, TaxRate
from app.errors import UpstreamTransientError


class _SlowSage:
    """The two reads, each answering when `go` is set; `fail_next` makes the next one a 503."""

    def __init__(self) -> None:
        self.calls = {"financial_settings": 0, "tax_rates": 0}
        self.go = asyncio.Event()
        self.fail_next = False

    async def financial_settings(self) -> FinancialSettings:
        await self._answer("financial_settings")
        return FinancialSettings.model_validate(
            {"base_currency": {"id": "gbp"}, "multi_currency_enabled": True}
        )

    async def list_tax_rates(self) -> list[TaxRate]:
        await self._answer("tax_rates")
        return [TaxRate.model_validate({"id": "GB_STANDARD", "percentage": "20.0"})]

    async def _answer(self, name: str) -> None:
        self.calls[name] += 1
        await self.go.wait()
        if self.fail_next:
            self.fail_next = False
            raise UpstreamTransientError("sage", "503 Service Unavailable", status=503)


def _adapter(sage: _SlowSage) -> SageAccounting:
    return SageAccounting(cast(SageClient, sage), invoice_url_template="{id}")


async def test_ten_jobs_asking_at_once_share_one_read_of_each() -> None:
    sage = _SlowSage()
    accounting = _adapter(sage)
    rates = [asyncio.create_task(accounting.tax_rates()) for _ in range(10)]
    currencies = [asyncio.create_task(accounting.business_currency()) for _ in range(10)]
    await asyncio.sleep(0)
    sage.go.set()

    answers = await asyncio.gather(*rates)
    bases = {c.base for c in await asyncio.gather(*currencies)}
    await accounting.tax_rates()  # and a later job reads the kept answer

    assert sage.calls == {"financial_settings": 1, "tax_rates": 1}
    assert all(a["GB_STANDARD"].percentage == Decimal("20.0") for a in answers)
    assert bases == {"GBP"}


async def test_a_failed_read_fails_its_waiters_and_the_next_job_reads_again() -> None:
    sage = _SlowSage()
    accounting = _adapter(sage)
    sage.fail_next = True
    waiting = [asyncio.create_task(accounting.tax_rates()) for _ in range(3)]
    await asyncio.sleep(0)
    sage.go.set()

    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    later = await accounting.tax_rates()

    assert all(isinstance(o, UpstreamTransientError) for o in outcomes)
    assert "GB_STANDARD" in later and sage.calls["tax_rates"] == 2


async def test_a_job_cancelled_while_waiting_does_not_fail_the_others() -> None:
    sage = _SlowSage()
    accounting = _adapter(sage)
    first = asyncio.create_task(accounting.business_currency())  # the one that started the read
    second = asyncio.create_task(accounting.business_currency())
    await asyncio.sleep(0)
    first.cancel()
    sage.go.set()

    with pytest.raises(asyncio.CancelledError):
        await first
    assert (await second).base == "GBP"
    assert sage.calls["financial_settings"] == 1
