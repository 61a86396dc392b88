"""Recovering lost CRM webhooks, and noticing when the CRM has switched our hook off.

Kommo sometimes never sends a status hook, and disables a hook after too many bad answers. A
scheduled run lists the deals now in the invoice stage (only those changed since the last run)
and gives each one with no invoice an inbox event, so the normal pipeline handles it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.bridge import Bridge
from app.domain import DealInStage
from app.inbox.intake import recovered_event
from app.inbox.repository import InboxRepository, NewEvent
from app.repositories import CursorRepository, InvoiceRepository

log = structlog.get_logger(__name__)

CURSOR = "kommo.trigger_stage.updated"
FIRST_RUN_LOOKBACK = timedelta(days=7)
HOOK_PATH = "/webhooks/kommo/"  # any destination containing it is ours


async def reconcile_trigger_stage(
    session: AsyncSession, bridge: Bridge, *, now: datetime
) -> list[int]:
    """Create inbox events for deals in the stage that have neither an invoice nor an event."""
    cfg = bridge.config
    cursors = CursorRepository(session)
    since = await cursors.get(CURSOR) or now - FIRST_RUN_LOOKBACK
    deals = await bridge.crm.deals_in_stage(
        pipeline_id=cfg.trigger_pipeline_id,
        status_id=cfg.trigger_status_id,
        updated_since=int(since.timestamp()),
    )
    due = await _record_missing(session, bridge, deals)
    newest = max((d.updated_at for d in deals), default=int(since.timestamp()))
    await cursors.set(CURSOR, datetime.fromtimestamp(newest, UTC))
    await session.commit()
    if due:
        log.warning("reconcile.lost_webhooks", recovered=len(due), deals_in_stage=len(deals))
    return due


async def _record_missing(
    session: AsyncSession, bridge: Bridge, deals: list[DealInStage]
) -> list[int]:
    by_account: dict[str, list[DealInStage]] = {}
    for deal in deals:
        by_account.setdefault(deal.account_id, []).append(deal)
    trigger = {
        "trigger_pipeline_id": bridge.config.trigger_pipeline_id,
        "trigger_status_id": bridge.config.trigger_status_id,
    }
    events: list[NewEvent] = []
    for account_id, group in by_account.items():
        invoiced = await InvoiceRepository(session).has_invoice(
            crm=bridge.crm.name, account_id=account_id, deal_ids=[d.id for d in group]
        )
        events += [recovered_event(d, **trigger) for d in group if d.id not in invoiced]
    return await InboxRepository(session).record(events)


async def check_webhook(bridge: Bridge) -> str:
    """'enabled', 'disabled' (Kommo switched it off: alert) or 'not_registered'."""
    disabled = await bridge.crm.webhook_disabled(destination_part=HOOK_PATH)
    state = {None: "not_registered", True: "disabled", False: "enabled"}[disabled]
    if disabled:
        log.error(
            "kommo.webhook_disabled",
            detail="Kommo has disabled the bridge's webhook; re-enable it in Kommo → Settings → "
            "Integrations → Web hooks. Reconciliation keeps invoicing meanwhile.",
        )
    return state
