"""A lead's invoice lines: which linked list elements are products, and at which price.

A lead can carry elements of every kind of list (Kommo's lists page: `regular`, `invoices`,
`products`). Only elements of product lists become lines: lists of type `products`, plus the
ids in KOMMO_PRODUCT_LIST_IDS for accounts that keep products in a regular list. The others are
left out and noted in the sync log with the reason. A line's unit price is the element's price
field that the link's `metadata.price_id` names, else the field with the configured code.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog

from app import lineage
from app.clients.kommo.client import KommoClient
from app.clients.kommo.schemas import Catalog, CatalogElement, CatalogElementRef
from app.domain import LineItem
from app.errors import InvoiceBlocked

log = structlog.get_logger(__name__)

PRODUCTS_TYPE = "products"
LISTS_TTL_SECONDS = 300.0
AGAIN = "then move the deal to the invoice stage again"


@dataclass(frozen=True)
class FieldCodes:
    price: str = "PRICE"
    sku: str = "SKU"
    product_type: str = "TYPE"
    discount: str | None = None


class ProductLists:
    """The account's lists, read at most every LISTS_TTL_SECONDS (sooner when a lead links an
    element of a list not seen yet), and which of them hold products."""

    def __init__(
        self,
        client: KommoClient,
        extra_ids: Iterable[int] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._extra = frozenset(extra_ids)
        self._clock = clock
        self._lists: dict[int, Catalog] = {}
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def refresh(self, wanted: Iterable[int] = ()) -> None:
        ids = list(wanted)
        if not self._due(ids):
            return
        read_before = self._read_at
        async with self._lock:  # concurrent jobs share one read: the first reads, others wait
            if self._read_at == read_before:
                self._lists = {c.id: c for c in await self._client.list_catalogs()}
                self._read_at = self._clock()

    def _due(self, ids: list[int]) -> bool:
        unseen = any(i not in self._lists and i not in self._extra for i in ids)
        return unseen or self._read_at is None or self._clock() - self._read_at > LISTS_TTL_SECONDS

    def is_products(self, catalog_id: int) -> bool:
        known = self._lists.get(catalog_id)
        return catalog_id in self._extra or (known is not None and known.type == PRODUCTS_TYPE)

    def product_list_ids(self) -> list[int]:
        return sorted({i for i in self._lists if self.is_products(i)} | self._extra)

    def label(self, catalog_id: int) -> str:
        known = self._lists.get(catalog_id)
        return f"list '{known.name}' ({catalog_id})" if known else f"list {catalog_id}"

    def why_not_products(self, catalog_id: int) -> str:
        known = self._lists.get(catalog_id)
        if known is None:
            return f"list {catalog_id} is not among the lists Kommo returns (GET /api/v4/catalogs)"
        return f"{self.label(catalog_id)} is of type {known.type or 'unknown'}, not products"


class LineReader:
    def __init__(self, client: KommoClient, lists: ProductLists, codes: FieldCodes) -> None:
        self._client = client
        self._lists = lists
        self._codes = codes

    async def lines(self, refs: list[CatalogElementRef]) -> list[LineItem]:
        if not refs:
            return []
        await self._lists.refresh(r.metadata.catalog_id for r in refs)
        products = [r for r in refs if self._lists.is_products(r.metadata.catalog_id)]
        for ref in refs:
            if ref not in products:
                self._note_ignored(ref)
        if not products:
            raise _no_products(refs, self._lists)
        elements = await self._elements(products)
        _check_present(products, elements, self._lists)
        return [self._line(ref, elements[_key(ref)]) for ref in products]

    def product(self, element: CatalogElement) -> LineItem:
        """An element as a catalog entry, without a deal (for `mappings suggest`)."""
        return LineItem(
            element_id=str(element.id),
            name=element.name,
            quantity=Decimal(1),
            unit_price=parse_price(element.field_value(self._codes.price)) or Decimal(0),
            sku=as_text(element.field_value(self._codes.sku)),
            product_type=as_text(element.field_value(self._codes.product_type)),
        )

    def _note_ignored(self, ref: CatalogElementRef) -> None:
        catalog_id = ref.metadata.catalog_id
        reason = (
            f"{self._lists.why_not_products(catalog_id)}; add the list's id to "
            "KOMMO_PRODUCT_LIST_IDS if it holds products"
        )
        lineage.note(
            "line", "ignored", element_id=str(ref.id), catalog_id=catalog_id, reason=reason
        )
        log.info("deal.line_ignored", element_id=ref.id, catalog_id=catalog_id)

    async def _elements(
        self, refs: list[CatalogElementRef]
    ) -> dict[tuple[int, int], CatalogElement]:
        by_list: dict[int, list[int]] = defaultdict(list)
        for ref in refs:
            by_list[ref.metadata.catalog_id].append(ref.id)
        found: dict[tuple[int, int], CatalogElement] = {}
        for catalog_id, ids in by_list.items():
            elements = await self._client.get_catalog_elements(
                catalog_id=catalog_id, element_ids=sorted(set(ids))
            )
            found.update({(catalog_id, e.id): e for e in elements})
        return found

    def _line(self, ref: CatalogElementRef, element: CatalogElement) -> LineItem:
        discount = self._codes.discount
        return LineItem(
            element_id=str(element.id),
            name=element.name,
            quantity=ref.metadata.quantity,
            unit_price=self._unit_price(ref, element),
            sku=as_text(element.field_value(self._codes.sku)),
            product_type=as_text(element.field_value(self._codes.product_type)),
            discount_percent=parse_price(element.field_value(discount)) if discount else None,
        )

    def _unit_price(self, ref: CatalogElementRef, element: CatalogElement) -> Decimal:
        price_id = ref.metadata.price_id
        if price_id is not None:
            raw, source = element.field_value_by_id(price_id), f"price field {price_id}"
            source += " (the one the deal's link names in price_id)"
        else:
            raw, source = element.field_value(self._codes.price), f"{self._codes.price} field"
        what = f"product '{element.name}' (element {element.id}, {self._lists.label(_list(ref))})"
        if raw is None:
            raise InvoiceBlocked(
                f"{what} has no value in its {source}; set the price in Kommo, {AGAIN}"
            )
        price = parse_price(raw)
        if price is None:
            raise InvoiceBlocked(
                f"{what} has {raw!r} in its {source}, not a number; correct it, {AGAIN}"
            )
        lineage.note(
            "line", "priced", element_id=str(element.id), unit_price=str(price), source=source
        )
        return price


def _key(ref: CatalogElementRef) -> tuple[int, int]:
    return ref.metadata.catalog_id, ref.id


def _list(ref: CatalogElementRef) -> int:
    return ref.metadata.catalog_id


def _no_products(refs: list[CatalogElementRef], lists: ProductLists) -> InvoiceBlocked:
    linked = ", ".join(f"element {r.id} ({lists.label(_list(r))})" for r in refs)
    return InvoiceBlocked(
        f"none of the list elements linked to the deal is a product: {linked}. Add products "
        "from the Products list (or name the list that holds them in KOMMO_PRODUCT_LIST_IDS), "
        f"{AGAIN}",
    )


def _check_present(
    refs: list[CatalogElementRef],
    elements: dict[tuple[int, int], CatalogElement],
    lists: ProductLists,
) -> None:
    """A product deleted in Kommo (or gone from its list) stops the whole invoice."""
    problems = []
    for ref in refs:
        element = elements.get(_key(ref))
        if element is None:
            problems.append(f"element {ref.id} is no longer in {lists.label(_list(ref))}")
        elif element.is_deleted:
            label = lists.label(_list(ref))
            problems.append(f"'{element.name}' (element {element.id}, {label}) is deleted")
    if problems:
        raise InvoiceBlocked(
            f"products linked to the deal are gone from Kommo: {'; '.join(problems)}. Remove "
            f"them from the deal or restore them, {AGAIN}",
        )


def parse_price(value: Any) -> Decimal | None:
    """A custom field value as an exact Decimal: Kommo sends numbers or strings ("12",
    "1.5"); a decimal comma and spaces between thousands are read too."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return None
    text = value.replace(" ", "").replace("\u00a0", "")
    if "," in text and "." not in text:
        text = text.replace(",", ".")
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def as_text(value: Any) -> str | None:
    """A custom field value as trimmed text, or None when empty."""
    return str(value).strip() or None if value is not None else None
