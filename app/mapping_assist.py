"""Helping ops write the ledger mapping: which products have no rule yet, and a YAML skeleton."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from app.domain import LedgerAccountInfo, LineItem
from app.mapping import LedgerMapping


@dataclass(frozen=True)
class Suggestion:
    ledger_accounts: list[LedgerAccountInfo]
    tax_rates: dict[str, str]
    unmapped: list[LineItem]


def unmapped_products(products: list[LineItem], mapping: LedgerMapping) -> list[LineItem]:
    return [p for p in products if not mapping.covers(p)]


def yaml_skeleton(suggestion: Suggestion) -> str:
    """Rules for every unmapped product, by SKU where it has one, to be completed by ops."""
    placeholder = suggestion.ledger_accounts[0].id if suggestion.ledger_accounts else "TODO"
    rules = []
    for product in suggestion.unmapped:
        match = {"sku": product.sku} if product.sku else {"element_id": int(product.element_id)}
        rules.append({"match": match, "ledger_account_id": placeholder})
    body = yaml.safe_dump({"rules": rules}, sort_keys=False, allow_unicode=True)
    header = "\n".join(
        ["# Sales ledger accounts in Sage (id: code name):"]
        + [f"#   {a.id}: {a.code or '-'} {a.name}" for a in suggestion.ledger_accounts]
        + ["# Tax rates in Sage (id: name):"]
        + [f"#   {rid}: {name}" for rid, name in suggestion.tax_rates.items()]
        + ["# Products with no rule yet (replace each ledger_account_id; add tax_rate_id if the"]
        + ["# default does not fit):"]
        + [
            f"#   {p.element_id} {p.name!r} sku={p.sku} type={p.product_type}"
            for p in suggestion.unmapped
        ]
    )
    return f"{header}\n{body}"
