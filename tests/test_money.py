from __future__ import annotations

from decimal import Decimal

import pytest

from app.money import line_amounts


@pytest.mark.parametrize(
    ("quantity", "price", "rate", "discount", "expected"),
    [
        ("2.5", "120.00", "20", None, ("0.00", "300.00", "60.00")),
        ("3", "0.125", "20", None, ("0.00", "0.38", "0.08")),  # 0.375 → 0.38, 0.076 → 0.08
        ("1", "249.50", "5", None, ("0.00", "249.50", "12.48")),  # 12.475 → 12.48 (half up)
        ("1", "100", "0", None, ("0.00", "100.00", "0.00")),
        ("4", "19.99", "20", "10", ("8.00", "71.96", "14.39")),  # 79.96 − 8.00 (7.996)
        ("0.333", "3", "20", None, ("0.00", "1.00", "0.20")),  # 0.999 → 1.00
    ],
)
def test_line_amounts_are_rounded_per_line_half_up(
    quantity: str, price: str, rate: str, discount: str | None, expected: tuple[str, str, str]
) -> None:
    amounts = line_amounts(
        quantity=Decimal(quantity),
        unit_price=Decimal(price),
        tax_percent=Decimal(rate),
        discount_percent=Decimal(discount) if discount else None,
    )
    assert (amounts.discount, amounts.net, amounts.tax) == tuple(Decimal(v) for v in expected)
    assert amounts.total == amounts.net + amounts.tax
