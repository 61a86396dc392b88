"""Outgoing account webhooks, sent as Kommo sends them.

On a lead stage change every enabled webhook subscribed to ``status_lead`` gets one POST,
``application/x-www-form-urlencoded`` with ``User-Agent: amoCRM-WebHook-client/1.0``, carrying
``leads[status][N][...]`` for each changed lead plus ``account[...]``. A lead deleted in the
UI sends ``leads[delete][N][id]`` (the key public handlers read; Kommo's webhooks page says only
that a deletion carries the entity's id) to the hooks subscribed to ``delete_lead``. Kommo waits
2 s for an answer; anything but 100-299 in time is invalid, and >100 invalid answers in 2 hours
(the last one invalid too) disable the hook. Retries are not simulated (Kommo's ladder is
UNCONFIRMED).

Sending runs in background tasks so the PATCH that caused it answers at once; tests await
``wait_idle()`` and read ``deliveries()``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlencode

import httpx
import structlog
from pydantic import BaseModel

from sandbox.kommo.config import KommoConfig
from sandbox.kommo.models import Lead
from sandbox.kommo.state import KommoState

log = structlog.get_logger(__name__)

USER_AGENT = "amoCRM-WebHook-client/1.0"
STATUS_EVENT = "status_lead"
DELETE_EVENT = "delete_lead"
Outcome = Literal["delivered", "bad_status", "timeout", "error"]


@dataclass(frozen=True)
class StatusChange:
    lead_id: int
    old_status_id: int


class WebhookDelivery(BaseModel):
    webhook_id: int
    destination: str
    lead_ids: list[int]
    outcome: Outcome
    status_code: int | None
    error: str | None
    started_at: datetime
    duration_ms: float
    form: list[tuple[str, str]]


class WebhookSender:
    def __init__(self, state: KommoState, config: KommoConfig) -> None:
        self._state = state
        self._config = config
        self._pending: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._deliveries: list[WebhookDelivery] = []
        self._lock = threading.Lock()

    def lead_status_changed(
        self, changes: list[StatusChange], *, modified_by: int, site: str
    ) -> int:
        """Schedule one POST per subscribed hook; returns how many were scheduled."""
        if not changes:
            return 0
        with self._state.lock:
            form = status_form(self._state, changes, modified_by=modified_by, site=site)
        return self._send(STATUS_EVENT, form, [change.lead_id for change in changes])

    def leads_deleted(self, lead_ids: list[int], *, site: str) -> int:
        """Schedule one POST per hook subscribed to ``delete_lead``."""
        if not lead_ids:
            return 0
        pairs = [(f"leads[delete][{i}][id]", str(lead_id)) for i, lead_id in enumerate(lead_ids)]
        with self._state.lock:
            form = pairs + account_pairs(self._state, site)
        return self._send(DELETE_EVENT, form, lead_ids)

    def _send(self, event: str, form: list[tuple[str, str]], lead_ids: list[int]) -> int:
        with self._state.lock:
            targets = [
                (hook.id, hook.destination)
                for hook in self._state.webhooks.values()
                if event in hook.settings and not hook.disabled
            ]
        for hook_id, destination in targets:
            task = asyncio.get_running_loop().create_task(
                self._deliver(hook_id, destination, form, lead_ids)
            )
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return len(targets)

    async def wait_idle(self) -> None:
        """Return once every scheduled delivery has finished (answered, failed or timed out)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        await self.wait_idle()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def deliveries(self) -> list[WebhookDelivery]:
        with self._lock:
            return list(self._deliveries)

    def clear(self) -> None:
        with self._lock:
            self._deliveries.clear()

    async def _deliver(
        self, hook_id: int, destination: str, form: list[tuple[str, str]], lead_ids: list[int]
    ) -> None:
        started_at, started = self._state.clock(), time.perf_counter()
        outcome, code, error = await self._post(destination, form)
        delivery = WebhookDelivery(
            webhook_id=hook_id,
            destination=destination,
            lead_ids=lead_ids,
            outcome=outcome,
            status_code=code,
            error=error,
            started_at=started_at,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            form=form,
        )
        self._record(delivery)

    async def _post(
        self, destination: str, form: list[tuple[str, str]]
    ) -> tuple[Outcome, int | None, str | None]:
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": USER_AGENT,
            "Connection": "close",
        }
        try:
            response = await self._http().post(
                destination, content=urlencode(form), headers=headers
            )
        except httpx.TimeoutException:
            return "timeout", None, f"no answer within {self._config.webhook_timeout_seconds}s"
        except httpx.HTTPError as exc:
            return "error", None, f"{type(exc).__name__}: {exc}"
        valid = 100 <= response.status_code <= 299
        return ("delivered" if valid else "bad_status"), response.status_code, None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._config.webhook_timeout_seconds)
        return self._client

    def _record(self, delivery: WebhookDelivery) -> None:
        with self._lock:
            self._deliveries.append(delivery)
            invalid = self._recent_invalid(delivery)
        log.info(
            "kommo.webhook.delivered",
            webhook_id=delivery.webhook_id,
            outcome=delivery.outcome,
            status_code=delivery.status_code,
            lead_ids=delivery.lead_ids,
        )
        if delivery.outcome != "delivered" and invalid > self._config.webhook_disable_after:
            self._disable(delivery.webhook_id, invalid)

    def _recent_invalid(self, latest: WebhookDelivery) -> int:
        window = self._config.webhook_disable_window_seconds
        return sum(
            1
            for d in self._deliveries
            if d.webhook_id == latest.webhook_id
            and d.outcome != "delivered"
            and (latest.started_at - d.started_at).total_seconds() <= window
        )

    def _disable(self, hook_id: int, invalid: int) -> None:
        with self._state.lock:
            hook = self._state.webhooks.get(hook_id)
            if hook is not None and not hook.disabled:
                hook.disabled = True
                hook.updated_at = self._state.now()
                log.warning("kommo.webhook.disabled", webhook_id=hook_id, invalid_answers=invalid)


def status_form(
    state: KommoState, changes: list[StatusChange], *, modified_by: int, site: str
) -> list[tuple[str, str]]:
    """The decoded form of a status-change hook, keys in the order Kommo's captures show."""
    pairs: list[tuple[str, str]] = []
    for index, change in enumerate(changes):
        lead = state.leads[change.lead_id]
        pairs.extend(_lead_pairs(state, f"leads[status][{index}]", lead, change, modified_by))
    return pairs + account_pairs(state, site)


def account_pairs(state: KommoState, site: str) -> list[tuple[str, str]]:
    account = state.account
    return [
        ("account[subdomain]", account.subdomain),
        ("account[id]", str(account.id)),
        ("account[_links][self]", site),
    ]


def _lead_pairs(
    state: KommoState, prefix: str, lead: Lead, change: StatusChange, modified_by: int
) -> list[tuple[str, str]]:
    fields = {
        "id": lead.id,
        "name": lead.name,
        "status_id": lead.status_id,
        "old_status_id": change.old_status_id,
        "price": lead.price,
        "responsible_user_id": lead.responsible_user_id,
        "last_modified": lead.updated_at,
        "modified_user_id": modified_by,
        "created_user_id": lead.created_by,
        "date_create": lead.created_at,
        "pipeline_id": lead.pipeline_id,
        "account_id": state.account.id,
    }
    pairs = [(f"{prefix}[{key}]", str(value)) for key, value in fields.items()]
    pairs += _custom_field_pairs(state, prefix, lead)
    pairs += [(f"{prefix}[created_at]", str(lead.created_at))]
    pairs += [(f"{prefix}[updated_at]", str(lead.updated_at))]
    return pairs


def _custom_field_pairs(state: KommoState, prefix: str, lead: Lead) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    filled = [(fid, values) for fid, values in lead.fields.items() if values]
    for i, (field_id, values) in enumerate(filled):
        base = f"{prefix}[custom_fields][{i}]"
        pairs += [
            (f"{base}[id]", str(field_id)),
            (f"{base}[name]", state.lead_fields[field_id].name),
        ]
        pairs += [
            (f"{base}[values][{j}][value]", str(v.get("value", ""))) for j, v in enumerate(values)
        ]
    return pairs
