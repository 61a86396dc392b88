"""Which currency an invoice is raised in, or why it is not raised at all.

Three currencies meet: the deal's (the CRM account's), the accounting business's base currency
and the currency the customer trades in. The policy (`CURRENCY_POLICY`):

* `task` (default): all three must agree; otherwise no invoice and a task saying which differ.
* `deal_currency`: the invoice is raised in the deal's currency (`currency_id`, at the exchange
  rate the accounting system applies), provided multi-currency is on there and the customer
  trades in that currency (a new customer is created in it).

A deal whose currency the CRM does not report is taken to be in the base currency (the bridge
cannot know better, and that is how every invoice was raised before currencies were read); the
log says so (`invoice.currency_assumed`), and a customer who trades in another currency still
stops the invoice.
"""

from __future__ import annotations

import enum

import structlog

from app.domain import BusinessCurrency
from app.errors import InvoiceBlocked

log = structlog.get_logger(__name__)

RETRY_HINT = "then move the deal to the invoice stage again"


class CurrencyPolicy(enum.StrEnum):
    TASK = "task"
    DEAL_CURRENCY = "deal_currency"


class CurrencyMismatch(InvoiceBlocked):
    """No invoice: the currencies differ in a way the policy does not allow."""


def invoice_currency(
    deal_currency: str | None, business: BusinessCurrency, policy: CurrencyPolicy
) -> str:
    """The ISO 4217 code to invoice in (the base currency unless the policy says otherwise)."""
    wanted = (deal_currency or "").upper()
    if not wanted:
        log.warning("invoice.currency_assumed", currency=business.base, reason="the deal has none")
        return business.base
    if wanted == business.base:
        return wanted
    if policy is CurrencyPolicy.TASK:
        raise CurrencyMismatch(
            f"the deal is in {wanted} but the Sage business books in {business.base}",
            f"Raise this invoice in Sage by hand, or ask ops to set CURRENCY_POLICY=deal_currency "
            f"(with multi-currency enabled in Sage) to invoice in {wanted}; {RETRY_HINT}.",
        )
    if not business.multi_currency:
        raise CurrencyMismatch(
            f"the deal is in {wanted} but the Sage business books in {business.base} and has "
            "multi-currency switched off",
            f"Enable foreign currency transactions in Sage (Settings, Financial settings, "
            f"Currencies) or raise this invoice by hand; {RETRY_HINT}.",
        )
    return wanted


def check_customer(customer_id: str, trades_in: str, invoice_in: str) -> None:
    """Sage issues an invoice in its contact's currency: the two must be the same."""
    if trades_in == invoice_in:
        return
    raise CurrencyMismatch(
        f"the Sage customer {customer_id} trades in {trades_in} but this invoice would be in "
        f"{invoice_in}",
        f"Change the customer's currency in Sage (or give the deal a contact whose Sage customer "
        f"trades in {invoice_in}), or raise this invoice by hand; {RETRY_HINT}.",
    )
