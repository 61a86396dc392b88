"""Helping ops write the ledger mapping: which products have no rule yet, and a YAML skeleton."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import yaml

from app.domain import LedgerAccountInfo, LineItem
from app.mapping import LedgerMapping

if TYPE_CHECKING:
    from app.runtime import Upstreams


@dataclass(frozen=True)
class Suggestion:
    ledger_accounts: list[LedgerAccountInfo]
    tax_rates: dict[str, str]
    unmapped: list[LineItem]


async def suggest(
    upstreams: Upstreams, mapping: LedgerMapping, *, on_page: Callable[[int], None] | None = None
) -> Suggestion:
    """Kommo's products with no rule in `mapping`, next to Sage's sales ledger accounts and tax
    rates: what `sagebridge mappings suggest` prints and the console's mapping page shows."""
    products = await upstreams.crm.products(on_page=on_page)
    accounts = await upstreams.accounting.sales_ledger_accounts()
    rates = await upstreams.accounting.tax_rate_names()
    return Suggestion(accounts, rates, unmapped_products(products, mapping))


def unmapped_products(products: list[LineItem], mapping: LedgerMapping) -> list[LineItem]:
    return [p for p in products if not mapping.covers(p)]


def yaml_skeleton(suggestion: Suggestion) -> str:
    """Rules for every unmapped product, by SKU where it has one, to be completed by ops.

    They are list items indented to paste under the file's existing `rules:` key: a `rules:` key
    of their own, appended to the file, would make YAML keep only the last one."""
    placeholder = suggestion.ledger_accounts[0].id if suggestion.ledger_accounts else "TODO"
    items = "".join(_rule(product, placeholder) for product in suggestion.unmapped)
    header = "\n".join(
        ["# Sales ledger accounts in Sage (id: code name):"]
        + [f"#   {a.id}: {a.code or '-'} {a.name}" for a in suggestion.ledger_accounts]
        + ["# Tax rates in Sage (id: name):"]
        + [f"#   {rid}: {name}" for rid, name in suggestion.tax_rates.items()]
        + _paste_hint(suggestion)
    )
    return f"{header}\n{items}"


def _paste_hint(suggestion: Suggestion) -> list[str]:
    if not suggestion.unmapped:
        return ["# Every product has a rule: nothing to paste."]
    return [
        "# Rules for the products with no rule yet. Paste them under the existing `rules:` key",
        "# (at the end of the file, or right below `rules:`), replace each ledger_account_id,",
        "# and add a tax_rate_id where the default does not fit:",
    ]


def _rule(product: LineItem, ledger_account_id: str) -> str:
    match = {"sku": product.sku} if product.sku else {"element_id": int(product.element_id)}
    rule = {"match": match, "ledger_account_id": ledger_account_id}
    # Flow style for the match, as in the shipped file: `- match: {sku: WID-01}`.
    item = yaml.safe_dump([rule], sort_keys=False, allow_unicode=True, default_flow_style=None)
    kind = f", type {product.product_type}" if product.product_type else ""
    about = f"# {product.name!r}: element {product.element_id}{kind}\n"
    return "".join(f"  {line}" for line in (about + item).splitlines(keepends=True))
