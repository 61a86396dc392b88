"""The ledger mapping file: validated as a whole, problems named by line, precedence by kind."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import pytest

from app.domain import LineItem
from app.mapping import MappingError, load_mapping, parse_mapping

ROOT = Path(__file__).parent.parent


def line(**kw: object) -> LineItem:
    values: dict[str, object] = {
        "element_id": "1",
        "name": "Thing",
        "quantity": Decimal(1),
        "unit_price": Decimal(1),
    }
    values.update(kw)
    return LineItem(**values)  # type: ignore[arg-type]


MAPPING = """\
version: 1
defaults:
  tax_rate_id: T20
rules:
  - match: {product_type: goods}
    ledger_account_id: by-type
  - match: {sku: ABC}
    ledger_account_id: by-sku
    tax_rate_id: T5
  - match: {element_id: 7}
    ledger_account_id: by-id
"""


def test_the_most_specific_match_wins_element_then_sku_then_type() -> None:
    mapping = parse_mapping(MAPPING, source="m.yaml")

    assert mapping.resolve(line(element_id="7", sku="ABC", product_type="goods")) is not None
    by_id = mapping.resolve(line(element_id="7", sku="ABC", product_type="goods"))
    by_sku = mapping.resolve(line(sku="abc", product_type="goods"))
    by_type = mapping.resolve(line(product_type="GOODS"))
    assert by_id and (by_id.ledger_account_id, by_id.tax_rate_id) == ("by-id", "T20")
    assert by_sku and (by_sku.ledger_account_id, by_sku.tax_rate_id) == ("by-sku", "T5")
    assert by_type and (by_type.ledger_account_id, by_type.matched_by) == (
        "by-type",
        "product_type=GOODS",
    )
    assert mapping.resolve(line(sku="OTHER")) is None


def test_no_catch_all_unless_ops_configure_one() -> None:
    mapping = parse_mapping(
        "version: 1\ndefaults: {tax_rate_id: T0, ledger_account_id: suspense}\nrules: []\n",
        source="m.yaml",
    )
    fallback = mapping.resolve(line(sku="ANY"))
    assert fallback and (fallback.ledger_account_id, fallback.matched_by) == ("suspense", "default")


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (
            "version: 1\nrules:\n"
            "  - match: {sku: A}\n    ledger_account_id: x\n    tax_rate_id: T\n"
            "  - match: {sku: a}\n    ledger_account_id: y\n    tax_rate_id: T\n",
            [
                "line 6: rule 'match: {sku: a}': matches sku 'a' like the rule on line 3 "
                "('match: {sku: A}') (compared ignoring case): keep one"
            ],
        ),
        (
            "version: 1\nrules:\n  - match: {sku: A, element_id: 3}\n    ledger_account_id: x\n",
            [
                "line 3: rule 'match: {sku: A, element_id: 3}': match: Value error, match needs "
                "exactly one of element_id, sku, product_type"
            ],
        ),
        (
            "version: 1\nrules:\n  - match: {sku: A}\n    ledger_acount_id: x\n",
            [
                "line 3: rule 'match: {sku: A}': ledger_account_id: Field required",
                "line 4: rule 'match: {sku: A}': ledger_acount_id: Extra inputs are not permitted",
            ],
        ),
        (
            "version: 1\nrules:\n  - match: {sku: A}\n    ledger_account_id: x\n",
            [
                "line 3: rule 'match: {sku: A}': names no tax_rate_id and defaults.tax_rate_id "
                "is unset"
            ],
        ),
        ("version: 2\nrules: []\n", ["line 1: version: Input should be less than or equal to 1"]),
        ("- just\n- a list\n", ["the file must be a mapping with 'version' and 'rules'"]),
    ],
)
def test_invalid_files_are_refused_naming_each_problem_and_its_line(
    text: str, problems: list[str]
) -> None:
    with pytest.raises(MappingError) as caught:
        parse_mapping(text, source="m.yaml")
    assert caught.value.problems == problems


def test_broken_yaml_names_the_file_and_a_missing_file_is_refused() -> None:
    with pytest.raises(MappingError) as broken:
        parse_mapping("version: 1\nrules:\n  - match: {sku: a\n    ledger: x\n", source="m.yaml")
    with pytest.raises(MappingError, match="cannot read the file"):
        load_mapping(Path("/nonexistent/mapping.yaml"))

    assert broken.value.problems == [
        "line 4, column 11: not valid YAML in m.yaml: expected ',' or '}', but got ':' (while "
        "parsing a flow mapping from line 3, column 12)"
    ]


def test_every_problem_is_named_at_once_in_the_files_order_rules_as_written() -> None:
    text = (
        "version: 1\n"
        "rules:\n"
        "  - match: {sku: Gift-Card}   # the card\n"
        "    ledger_account_id: x\n"
        "    ledger_account_id: y\n"
        "  - match:\n"
        "      product_type: Service\n"
        "    ledger_account_id: ''\n"
        "  - match: {sku: GIFT-CARD}\n"
        "    ledger_account_id: z\n"
        "    tax_rate_id: T20\n"
        "  - match: {element_id: 9, sku: X}\n"
        "    ledger_account_id: w\n"
    )

    with pytest.raises(MappingError) as caught:
        parse_mapping(text, source="m.yaml")

    assert caught.value.problems == [
        "line 3: rule 'match: {sku: Gift-Card}': names no tax_rate_id and defaults.tax_rate_id "
        "is unset",
        f"line 5: duplicate key 'ledger_account_id' (first on line 4): {DROPPED}",
        "line 8: rule 'match: product_type: Service': ledger_account_id: String should have at "
        "least 1 character",
        "line 9: rule 'match: {sku: GIFT-CARD}': matches sku 'GIFT-CARD' like the rule on line 3 "
        "('match: {sku: Gift-Card}') (compared ignoring case): keep one",
        "line 12: rule 'match: {element_id: 9, sku: X}': match: Value error, match needs exactly "
        "one of element_id, sku, product_type",
    ]
    valid = caught.value.valid_part
    assert valid is not None
    assert [r.ledger_account_id for r in valid.file.rules] == ["y", "z"]


def test_the_shipped_mapping_is_valid_and_covers_the_sandbox_products() -> None:
    mapping = load_mapping(ROOT / "config/ledger_mappings.yaml")
    assert mapping.resolve(line(element_id="4200001")) is not None
    assert mapping.resolve(line(element_id="4200002", sku="WID-01")) is not None
    assert mapping.resolve(line(element_id="4200003", product_type="subscription")) is not None
    assert mapping.resolve(line(element_id="4200004", sku="MYST-1", product_type="other")) is None


DROPPED = (
    "YAML keeps only the last one and silently drops the others; keep one and put everything "
    "under it"
)


def test_a_second_rules_key_is_refused_with_both_lines() -> None:
    """Issue 14, bug 4: YAML keeps only the last `rules:`; the file said valid with 1 rule of 4."""
    text = MAPPING + "rules:\n  - match: {sku: NEW}\n    ledger_account_id: by-new\n"

    with pytest.raises(MappingError) as caught:
        parse_mapping(text, source="m.yaml")

    assert caught.value.problems == [f"line 12: duplicate key 'rules' (first on line 4): {DROPPED}"]


def test_keys_repeated_anywhere_are_refused_each_with_its_lines() -> None:
    text = (
        "version: 1\n"
        "defaults: {tax_rate_id: T0, tax_rate_id: T20}\n"
        "rules:\n"
        "  - match: {sku: A}\n"
        "    ledger_account_id: first\n"
        "    ledger_account_id: second\n"
        "  - match:\n"
        "      sku: B\n"
        "      sku: C\n"
        "    ledger_account_id: x\n"
    )

    with pytest.raises(MappingError) as caught:
        parse_mapping(text, source="m.yaml")

    assert caught.value.problems == [
        f"line 2: duplicate key 'tax_rate_id' (first on line 2): {DROPPED}",
        f"line 6: duplicate key 'ledger_account_id' (first on line 5): {DROPPED}",
        f"line 9: duplicate key 'sku' (first on line 8): {DROPPED}",
    ]


def test_the_sha256_is_the_files_bytes_crlf_included(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(MAPPING.replace("\n", "\r\n").encode())

    assert load_mapping(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
