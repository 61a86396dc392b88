"""Kommo as the bridge's CRM: a lead becomes a Deal, an invoice is written back, tasks opened."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

import structlog

from app.clients.kommo.client import PAGE_LIMIT, UPSTREAM, KommoClient
from app.clients.kommo.errors import KommoNotFound, KommoRequestError, KommoUnreadable
from app.clients.kommo.lines import FieldCodes, LineReader, ProductLists, as_text
from app.clients.kommo.schemas import (
    CustomFieldUpdate,
    FieldValueOut,
    Lead,
    LeadPatch,
    LeadUpdate,
    TaskCreate,
    TaskPatch,
    TaskResultOut,
)
from app.domain import (
    CrmTask,
    Customer,
    Deal,
    DealContents,
    DealInStage,
    InvoiceRef,
    LineItem,
    PaymentView,
)
from app.errors import InvoiceBlocked
from app.money import shown_amount
from app.ports import DealNotFound

log = structlog.get_logger(__name__)
_ISO_CURRENCY = re.compile(r"^[A-Z]{3}$")
UNREADABLE_ADVICE = (
    "The bridge cannot read the deal as Kommo sends it: check what this names in Kommo, then "
    "move the deal to the invoice stage again; if it looks right there, ask ops to report it."
)


@dataclass(frozen=True)
class KommoConfig:
    base_url: str
    account_id: str
    invoice_number_field_id: int
    invoice_link_field_id: int
    price_field_code: str = "PRICE"
    sku_field_code: str = "SKU"
    product_type_field_code: str = "TYPE"
    discount_field_code: str | None = None
    email_field_code: str = "EMAIL"
    task_type_id: int = 1
    payment_status_field_id: int | None = None
    # bridge payment status (unpaid, part_paid, paid, overdue, void) → the select field's enum id
    payment_status_enums: dict[str, int] = field(default_factory=dict)
    # Lists whose elements are products besides those of type `products` (KOMMO_PRODUCT_LIST_IDS).
    product_list_ids: tuple[int, ...] = ()
    # Lead fields for the invoice's money (numeric, numeric, date, text, numeric); None: not shown.
    amount_paid_field_id: int | None = None
    amount_outstanding_field_id: int | None = None
    last_payment_date_field_id: int | None = None
    credit_notes_field_id: int | None = None
    credited_amount_field_id: int | None = None
    # ISO 4217 code that overrides the account's own (KOMMO_CURRENCY).
    currency: str | None = None

    @property
    def field_codes(self) -> FieldCodes:
        return FieldCodes(
            price=self.price_field_code,
            sku=self.sku_field_code,
            product_type=self.product_type_field_code,
            discount=self.discount_field_code,
        )


BATCH_SIZE = 50  # Kommo recommends at most 50 entities per batch write
LOST_STATUS_ID = "143"  # every pipeline's "closed - lost" (Kommo's pipelines page)


class KommoCrm:
    name = "kommo"
    lost_status_id = LOST_STATUS_ID

    def __init__(self, client: KommoClient, config: KommoConfig) -> None:
        self._client = client
        self._config = config
        self._lists = ProductLists(client, config.product_list_ids)
        self._lines = LineReader(client, self._lists, config.field_codes)
        self._account_currency: str | None = None
        self._account_read = False
        self._account_lock = asyncio.Lock()

    async def get_deal(self, *, deal_id: str) -> Deal:
        with _readable():
            lead = await self._lead(deal_id)
        return Deal(
            id=str(lead.id),
            account_id=str(lead.account_id or self._config.account_id),
            name=lead.name,
            pipeline_id=str(lead.pipeline_id),
            status_id=str(lead.status_id),
            responsible_user_id=_text_id(lead.responsible_user_id),
            source=lead,
        )

    async def deal_contents(self, *, deal: Deal) -> DealContents:
        with _readable():
            lead = deal.source if isinstance(deal.source, Lead) else await self._lead(deal.id)
            return DealContents(
                customer=await self._main_customer(lead),
                lines=tuple(await self._lines.lines(lead.embedded.catalog_elements)),
                currency=await self._currency(),
            )

    async def _lead(self, deal_id: str) -> Lead:
        try:
            return await self._client.get_lead(lead_id=int(deal_id))
        except KommoNotFound as exc:
            raise DealNotFound(deal_id) from exc

    async def _currency(self) -> str | None:
        """KOMMO_CURRENCY if set, else the account's (read once per process), else None."""
        if self._config.currency:
            return self._config.currency
        async with self._account_lock:  # a burst's first jobs share one read
            if not self._account_read:
                account = await self._client.get_account()
                self._account_currency = _iso_code(account.currency)
                self._account_read = True
        return self._account_currency

    async def write_invoice(
        self,
        *,
        deal_id: str,
        invoice: InvoiceRef,
        payment_status: str | None = None,
        shown_number: str | None = None,
    ) -> None:
        values = [
            CustomFieldUpdate(
                field_id=self._config.invoice_number_field_id,
                values=[FieldValueOut(value=shown_number or invoice.number or invoice.id)],
            )
        ]
        if invoice.url:
            values.append(
                CustomFieldUpdate(
                    field_id=self._config.invoice_link_field_id,
                    values=[FieldValueOut(value=invoice.url)],
                )
            )
        status_field = self._status_field(payment_status)
        if status_field is not None:
            values.append(status_field)
        await self._client.update_lead(
            lead_id=int(deal_id), update=LeadUpdate(custom_fields_values=values)
        )

    def _status_field(self, status: str | None) -> CustomFieldUpdate | None:
        field_id = self._config.payment_status_field_id
        enum = self._config.payment_status_enums.get(status) if status else None
        if field_id is None or enum is None:
            return None
        return CustomFieldUpdate(field_id=field_id, values=[FieldValueOut(enum_id=enum)])

    async def create_task(
        self, *, deal_id: str, responsible_user_id: str | None, text: str, due: datetime
    ) -> str:
        task = TaskCreate(
            text=text,
            complete_till=int(due.timestamp()),
            entity_id=int(deal_id),
            entity_type="leads",
            responsible_user_id=int(responsible_user_id) if responsible_user_id else None,
            task_type_id=self._config.task_type_id,
            request_id=f"sagebridge-{deal_id}",
        )
        created = await self._client.create_tasks(tasks=[task])
        if not created:
            raise KommoRequestError(UPSTREAM, "POST /api/v4/tasks returned no task")
        return str(created[0].id)

    async def get_task(self, *, task_id: str) -> CrmTask | None:
        try:
            task = await self._client.get_task(task_id=int(task_id))
        except KommoNotFound:
            return None
        return CrmTask(id=str(task.id), text=task.text, is_completed=task.is_completed)

    async def update_task(self, *, task_id: str, text: str) -> None:
        await self._client.update_tasks(patches=[TaskPatch(id=int(task_id), text=text)])

    async def complete_tasks(self, *, task_ids: list[str], result: str) -> None:
        done = TaskResultOut(text=result)
        patches = [TaskPatch(id=int(i), is_completed=True, result=done) for i in task_ids]
        for start in range(0, len(patches), BATCH_SIZE):
            await self._client.update_tasks(patches=patches[start : start + BATCH_SIZE])

    async def write_payments(self, *, updates: list[tuple[str, PaymentView]]) -> None:
        """The payment status and money fields of many deals, 50 per PATCH /api/v4/leads; a
        deal with nothing this account has a field for is left out."""
        patches = [
            LeadPatch(id=int(deal_id), custom_fields_values=fields)
            for deal_id, view in updates
            if (fields := self._payment_fields(view))
        ]
        for start in range(0, len(patches), BATCH_SIZE):
            await self._client.update_leads(patches=patches[start : start + BATCH_SIZE])

    def _payment_fields(self, view: PaymentView) -> list[CustomFieldUpdate]:
        """Numbers as decimal text and the date as a unix timestamp, as Kommo's custom fields
        page fills numeric and date fields."""
        cfg = self._config
        status = self._status_field(view.status)
        day = view.last_payment
        given: list[tuple[int | None, str | int | None]] = [
            (cfg.amount_paid_field_id, _amount(view.paid)),
            (cfg.amount_outstanding_field_id, _amount(view.outstanding)),
            (cfg.last_payment_date_field_id, _timestamp(day) if day else None),
            (cfg.credit_notes_field_id, view.credit_notes),
            (cfg.credited_amount_field_id, _amount(view.credited)),
        ]
        fields = [
            CustomFieldUpdate(field_id=field_id, values=[FieldValueOut(value=value)])
            for field_id, value in given
            if field_id is not None and value is not None
        ]
        return [status, *fields] if status is not None else fields

    async def deals_in_stage(
        self, *, pipeline_id: str, status_id: str, updated_since: int
    ) -> list[DealInStage]:
        return await self.deals_in_stages(
            pipeline_id=pipeline_id, status_ids=[status_id], updated_since=updated_since
        )

    async def deals_in_stages(
        self, *, pipeline_id: str, status_ids: list[str], updated_since: int
    ) -> list[DealInStage]:
        deals: list[DealInStage] = []
        page = 1
        while True:
            result = await self._client.leads_in_stages(
                pipeline_id=int(pipeline_id),
                status_ids=[int(s) for s in status_ids],
                updated_from=updated_since,
                page=page,
            )
            deals += [self._in_stage(lead) for lead in result.embedded.leads]
            if result.links.next is None or not result.embedded.leads:
                return deals
            page += 1

    async def stages_from(self, *, pipeline_id: str, status_id: str) -> list[str]:
        pipeline = await self._client.get_pipeline(pipeline_id=int(pipeline_id))
        stages = sorted(pipeline.embedded.statuses, key=lambda s: s.sort)
        start = next((s.sort for s in stages if str(s.id) == status_id), None)
        if start is None:
            return [status_id]
        return [str(s.id) for s in stages if s.sort >= start and str(s.id) != LOST_STATUS_ID]

    async def existing_deals(self, *, deal_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(deal_ids), PAGE_LIMIT):
            chunk = [int(i) for i in deal_ids[start : start + PAGE_LIMIT]]
            page = await self._client.leads_by_ids(lead_ids=chunk)
            found |= {str(lead.id) for lead in page.embedded.leads}
        return found

    async def webhook_disabled(self, *, destination_part: str) -> bool | None:
        """True if Kommo disabled our hook, False if it is on, None if it is not registered."""
        hooks = [h for h in await self._client.list_webhooks() if destination_part in h.destination]
        return any(h.disabled for h in hooks) if hooks else None

    async def products(self, *, on_page: Callable[[int], None] | None = None) -> list[LineItem]:
        """Every element of every product list, as invoice lines would describe them."""
        await self._lists.refresh()
        items: list[LineItem] = []
        for catalog_id in self._lists.product_list_ids():
            page = 1
            while True:
                result = await self._client.catalog_elements_page(catalog_id=catalog_id, page=page)
                elements = result.embedded.elements
                items += [self._lines.product(e) for e in elements if not e.is_deleted]
                if on_page:
                    on_page(len(elements))
                if result.links.next is None or not elements:
                    break
                page += 1
        return items

    def _in_stage(self, lead: Lead) -> DealInStage:
        return DealInStage(
            id=str(lead.id),
            account_id=str(lead.account_id or self._config.account_id),
            pipeline_id=str(lead.pipeline_id),
            status_id=str(lead.status_id),
            responsible_user_id=_text_id(lead.responsible_user_id),
            updated_at=lead.updated_at or 0,
        )

    def deal_url(self, *, deal_id: str) -> str:
        return f"{self._config.base_url.rstrip('/')}/leads/detail/{deal_id}"

    async def _main_customer(self, lead: Lead) -> Customer | None:
        refs = lead.embedded.contacts
        main = next((c for c in refs if c.is_main), refs[0] if refs else None)
        if main is None:
            return None
        contact = await self._client.get_contact(contact_id=main.id)
        email = contact.field_value(self._config.email_field_code)
        return Customer(
            crm_id=str(contact.id),
            name=contact.name or " ".join(filter(None, [contact.first_name, contact.last_name])),
            email=str(email).strip() if email else None,
            phone=as_text(contact.field_value("PHONE")),
        )


def _text_id(value: int | None) -> str | None:
    return None if value is None else str(value)


def _amount(value: Decimal | None) -> str | None:
    return None if value is None else shown_amount(value)


def _timestamp(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


@contextmanager
def _readable() -> Iterator[None]:
    """An answer about the deal that lacks what the bridge needs is the deal's data, not a
    refusal by Kommo: the manager's task says what cannot be read."""
    try:
        yield
    except KommoUnreadable as exc:
        raise InvoiceBlocked(exc.detail, UNREADABLE_ADVICE) from exc


def _iso_code(value: str | None) -> str | None:
    code = (value or "").strip().upper()
    if _ISO_CURRENCY.match(code):
        return code
    log.warning(
        "kommo.currency_unknown",
        reported=value,
        detail="the Kommo account reports no ISO currency code; set KOMMO_CURRENCY",
    )
    return None
