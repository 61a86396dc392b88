"""Money arithmetic. Decimal end to end; each line rounded to 2 dp half-up, as Sage shows it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
HUNDRED = Decimal(100)


def round_money(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class LineAmounts:
    discount: Decimal
    net: Decimal
    tax: Decimal

    @property
    def total(self) -> Decimal:
        return self.net + self.tax


def shown_amount(amount: Decimal | None) -> str:
    """An amount as a person reads it: two decimal places (nothing known: 0.00)."""
    return f"{round_money(amount or Decimal(0)):.2f}"


def line_amounts(
    *,
    quantity: Decimal,
    unit_price: Decimal,
    tax_percent: Decimal,
    discount_percent: Decimal | None = None,
) -> LineAmounts:
    """Net = quantity × unit price − discount; tax = net × rate, each rounded per line."""
    gross = quantity * unit_price
    discount = round_money(gross * (discount_percent or Decimal(0)) / HUNDRED)
    net = round_money(gross) - discount
    return LineAmounts(discount=discount, net=net, tax=round_money(net * tax_percent / HUNDRED))


def totals_difference(
    *, ours: tuple[Decimal, Decimal, Decimal], theirs: tuple[Decimal | None, ...]
) -> dict[str, str]:
    """Net, tax and total where the accounting system's differ from ours (skipped if absent),
    as {"net_ours": "10.00", "net_theirs": "10.01", ...}; empty when they agree."""
    differences: dict[str, str] = {}
    for name, mine, other in zip(("net", "tax", "total"), ours, theirs, strict=True):
        if other is not None and other != mine:
            differences[f"{name}_ours"] = str(mine)
            differences[f"{name}_theirs"] = str(other)
    return differences
