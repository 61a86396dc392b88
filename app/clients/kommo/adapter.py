"""Kommo as the bridge's CRM: a lead becomes a Deal, an invoice is written back, tasks opened."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from app.clients.kommo.client import UPSTREAM, KommoClient
from app.clients.kommo.errors import KommoNotFound, KommoRequestError
from app.clients.kommo.schemas import (
    CatalogElement,
    CatalogElementRef,
    CustomFieldUpdate,
    FieldValueOut,
    Lead,
    LeadPatch,
    LeadUpdate,
    TaskCreate,
)
from app.domain import Customer, Deal, DealInStage, InvoiceRef, LineItem
from app.ports import DealNotFound


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


BATCH_SIZE = 50  # Kommo recommends at most 50 entities per batch write


class KommoCrm:
    name = "kommo"

    def __init__(self, client: KommoClient, config: KommoConfig) -> None:
        self._client = client
        self._config = config

    async def get_deal(self, *, deal_id: str) -> Deal:
        try:
            lead = await self._client.get_lead(lead_id=int(deal_id))
        except KommoNotFound as exc:
            raise DealNotFound(deal_id) from exc
        return Deal(
            id=str(lead.id),
            account_id=str(lead.account_id or self._config.account_id),
            name=lead.name,
            pipeline_id=lead.pipeline_id,
            status_id=lead.status_id,
            responsible_user_id=lead.responsible_user_id,
            customer=await self._main_customer(lead),
            lines=tuple(await self._lines(lead)),
        )

    async def write_invoice(
        self, *, deal_id: str, invoice: InvoiceRef, payment_status: str | None = None
    ) -> None:
        values = [
            CustomFieldUpdate(
                field_id=self._config.invoice_number_field_id,
                values=[FieldValueOut(value=invoice.number or invoice.id)],
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
        self, *, deal_id: str, responsible_user_id: int | None, text: str, due: datetime
    ) -> str:
        task = TaskCreate(
            text=text,
            complete_till=int(due.timestamp()),
            entity_id=int(deal_id),
            entity_type="leads",
            responsible_user_id=responsible_user_id,
            task_type_id=self._config.task_type_id,
            request_id=f"sagebridge-{deal_id}",
        )
        created = await self._client.create_tasks(tasks=[task])
        if not created:
            raise KommoRequestError(UPSTREAM, "POST /api/v4/tasks returned no task")
        return str(created[0].id)

    async def write_payment_statuses(self, *, updates: list[tuple[str, str]]) -> None:
        """Set the payment status select field on many deals, in batches."""
        field_id = self._config.payment_status_field_id
        if field_id is None or not updates:
            return
        patches = [
            LeadPatch(id=int(deal_id), custom_fields_values=[status_field])
            for deal_id, status in updates
            if (status_field := self._status_field(status)) is not None
        ]
        for start in range(0, len(patches), BATCH_SIZE):
            await self._client.update_leads(patches=patches[start : start + BATCH_SIZE])

    async def deals_in_stage(
        self, *, pipeline_id: int, status_id: int, updated_since: int
    ) -> list[DealInStage]:
        deals: list[DealInStage] = []
        page = 1
        while True:
            result = await self._client.leads_in_stage(
                pipeline_id=pipeline_id, status_id=status_id, updated_from=updated_since, page=page
            )
            deals += [self._in_stage(lead) for lead in result.embedded.leads]
            if result.links.next is None or not result.embedded.leads:
                return deals
            page += 1

    async def webhook_disabled(self, *, destination_part: str) -> bool | None:
        """True if Kommo disabled our hook, False if it is on, None if it is not registered."""
        hooks = [h for h in await self._client.list_webhooks() if destination_part in h.destination]
        return any(h.disabled for h in hooks) if hooks else None

    async def products(self, *, on_page: Callable[[int], None] | None = None) -> list[LineItem]:
        """Every product in every catalog, as invoice lines would describe them."""
        items: list[LineItem] = []
        for catalog in await self._client.list_catalogs():
            page = 1
            while True:
                result = await self._client.catalog_elements_page(catalog_id=catalog.id, page=page)
                items += [self._product(e) for e in result.embedded.elements if not e.is_deleted]
                if on_page:
                    on_page(len(result.embedded.elements))
                if result.links.next is None or not result.embedded.elements:
                    break
                page += 1
        return items

    def _product(self, element: CatalogElement) -> LineItem:
        return LineItem(
            element_id=str(element.id),
            name=element.name,
            quantity=Decimal(1),
            unit_price=_decimal(element.field_value(self._config.price_field_code)) or Decimal(0),
            sku=_str(element.field_value(self._config.sku_field_code)),
            product_type=_str(element.field_value(self._config.product_type_field_code)),
        )

    def _in_stage(self, lead: Lead) -> DealInStage:
        return DealInStage(
            id=str(lead.id),
            account_id=str(lead.account_id or self._config.account_id),
            pipeline_id=lead.pipeline_id,
            status_id=lead.status_id,
            responsible_user_id=lead.responsible_user_id,
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
            phone=_str(contact.field_value("PHONE")),
        )

    async def _lines(self, lead: Lead) -> list[LineItem]:
        by_catalog: dict[int, list[CatalogElementRef]] = defaultdict(list)
        for ref in lead.embedded.catalog_elements:
            by_catalog[ref.metadata.catalog_id].append(ref)
        elements: dict[int, CatalogElement] = {}
        for catalog_id, refs in by_catalog.items():
            found = await self._client.get_catalog_elements(
                catalog_id=catalog_id, element_ids=[r.id for r in refs]
            )
            elements.update({e.id: e for e in found})
        return [self._line(ref, elements.get(ref.id)) for ref in lead.embedded.catalog_elements]

    def _line(self, ref: CatalogElementRef, element: CatalogElement | None) -> LineItem:
        if element is None or element.is_deleted:
            raise KommoRequestError(
                UPSTREAM,
                f"product {ref.id} linked to the deal no longer exists in catalog "
                f"{ref.metadata.catalog_id}; remove it from the deal or restore it",
            )
        price = _decimal(element.field_value(self._config.price_field_code))
        if price is None:
            raise KommoRequestError(
                UPSTREAM,
                f"product {element.name!r} ({element.id}) has no {self._config.price_field_code} "
                "value in Kommo; set its price and move the deal to the invoice stage again",
            )
        discount_code = self._config.discount_field_code
        return LineItem(
            element_id=str(element.id),
            name=element.name,
            quantity=ref.metadata.quantity,
            unit_price=price,
            sku=_str(element.field_value(self._config.sku_field_code)),
            product_type=_str(element.field_value(self._config.product_type_field_code)),
            discount_percent=_decimal(element.field_value(discount_code))
            if discount_code
            else None,
        )


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value).replace(" ", "").replace(",", "."))
    except InvalidOperation:
        return None


def _str(value: Any) -> str | None:
    return str(value).strip() or None if value is not None else None
