"""The console's own SQL: what the dashboard charts that no /ops endpoint asks for. Everything
else the console shows comes from the repositories the /ops endpoints use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.inbox.models import InboxEvent
from app.models import DealInvoice, SyncRecord


@dataclass(frozen=True)
class InvoiceTiming:
    triggered_at: datetime  # the webhook that asked for the invoice was received
    invoiced_at: datetime  # the deal's invoice record was created


@dataclass(frozen=True)
class RequestCount:
    api: str
    status: str  # an HTTP status, or `timeout` / `network_error`
    count: int


class ConsoleRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def invoices_since(self, since: datetime) -> list[InvoiceTiming]:
        """Invoices raised since `since` (a record with Sage's invoice id), each with the time
        its event was received."""
        rows = await self.session.execute(
            select(InboxEvent.received_at, DealInvoice.created_at)
            .join(InboxEvent, InboxEvent.id == DealInvoice.event_id)
            .where(DealInvoice.created_at >= since, DealInvoice.invoice_id.is_not(None))
        )
        return [InvoiceTiming(received, created) for received, created in rows.all()]

    async def requests_since(self, since: datetime) -> list[RequestCount]:
        """Upstream requests made for events since `since` (the sync log), by API and status."""
        api = SyncRecord.detail["api"].as_string()
        status = SyncRecord.detail["status"].as_string()
        rows = await self.session.execute(
            select(api, status, func.count())
            .where(SyncRecord.record == "request", SyncRecord.at >= since)
            .group_by(api, status)
        )
        return [RequestCount(str(a), str(s), int(n)) for a, s, n in rows.all()]
