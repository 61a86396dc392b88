"""`mappings suggest --yaml`: rules that paste under the file's existing `rules:` key."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from app.domain import LedgerAccountInfo, LineItem
from app.mapping import MappingError, parse_mapping
from app.mapping_assist import Suggestion, yaml_skeleton

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "ledger_mappings.yaml"
GOODS = "9a0e2f1c4b5d4e6f8a7b6c5d4e3f4000"


def product(element_id: str, name: str, sku: str | None, kind: str | None = None) -> LineItem:
    return LineItem(
        element_id=element_id,
        name=name,
        quantity=Decimal(1),
        unit_price=Decimal(1),
        sku=sku,
        product_type=kind,
    )


SUGGESTION = Suggestion(
    ledger_accounts=[LedgerAccountInfo(GOODS, "Sales Type A", "4000")],
    tax_rates={"GB_STANDARD": "Standard 20.00%"},
    unmapped=[
        product("4200004", "Mystery box", "MYST-1", "other"),
        product("4200005", "Bob's 'odd' item: #1", None),
        product("4200006", "Numbered", "007"),
    ],
)


def paste_below_rules(text: str, pasted: str) -> str:
    head, rules, tail = text.partition("\nrules:\n")
    assert rules, "the shipped file has a top-level rules: key"
    return head + rules + pasted + tail


def append(text: str, pasted: str) -> str:
    return text + pasted


@pytest.mark.parametrize("paste", [append, paste_below_rules])
def test_the_suggested_rules_pasted_into_the_shipped_file_are_all_kept(
    paste: Callable[[str, str], str],
) -> None:
    shipped = SHIPPED.read_text()
    before = parse_mapping(shipped, source="shipped").file.rules

    pasted = paste(shipped, yaml_skeleton(SUGGESTION))
    rules = parse_mapping(pasted, source="pasted").file.rules

    assert len(rules) == len(before) + 3
    assert set(before) < set(rules)
    added = [(r.match.kind, r.match.key[1], r.ledger_account_id) for r in rules if r not in before]
    assert added == [
        ("sku", "myst-1", GOODS),
        ("element_id", "4200005", GOODS),
        ("sku", "007", GOODS),
    ]


def test_the_rules_are_list_items_under_rules_with_the_comments_kept() -> None:
    assert yaml_skeleton(SUGGESTION) == (
        "# Sales ledger accounts in Sage (id: code name):\n"
        f"#   {GOODS}: 4000 Sales Type A\n"
        "# Tax rates in Sage (id: name):\n"
        "#   GB_STANDARD: Standard 20.00%\n"
        "# Rules for the products with no rule yet. Paste them under the existing `rules:` key\n"
        "# (at the end of the file, or right below `rules:`), replace each ledger_account_id,\n"
        "# and add a tax_rate_id where the default does not fit:\n"
        "  # 'Mystery box': element 4200004, type other\n"
        "  - match: {sku: MYST-1}\n"
        f"    ledger_account_id: {GOODS}\n"
        "  # \"Bob's 'odd' item: #1\": element 4200005\n"
        "  - match: {element_id: 4200005}\n"
        f"    ledger_account_id: {GOODS}\n"
        "  # 'Numbered': element 4200006\n"
        "  - match: {sku: '007'}\n"
        f"    ledger_account_id: {GOODS}\n"
    )


def test_nothing_to_paste_when_every_product_has_a_rule() -> None:
    empty = Suggestion(SUGGESTION.ledger_accounts, SUGGESTION.tax_rates, [])

    skeleton = yaml_skeleton(empty)

    assert skeleton.endswith("# Every product has a rule: nothing to paste.\n")
    assert len(parse_mapping(SHIPPED.read_text() + skeleton, source="m").file.rules) == 3


def test_a_skeleton_with_its_own_rules_key_would_now_be_refused() -> None:
    """What the old output did when appended: refused, no longer one rule instead of four."""
    old_style = f"rules:\n- match: {{sku: MYST-1}}\n  ledger_account_id: {GOODS}\n"

    with pytest.raises(MappingError, match="duplicate key 'rules'"):
        parse_mapping(SHIPPED.read_text() + old_style, source="m")
