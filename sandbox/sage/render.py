"""Records → the JSON Sage returns. Nested references use the Base shape {id, displayed_as,
$path}; ``$path`` is relative to the API root (``/v3.1``) as in Sage's responses."""

from __future__ import annotations

import datetime as dt
from datetime import UTC, date
from decimal import Decimal
from typing import Any

from sandbox.sage.models import (
    CONTACT_TYPE_NAMES,
    CURRENCY_NAMES,
    STATUS_NAMES,
    ZERO,
    Allocation,
    AllocationKind,
    BankAccount,
    Book,
    Business,
    Contact,
    ContactAllocation,
    ContactPayment,
    ContactPerson,
    InvoiceLine,
    LedgerAccount,
    SalesArtefact,
    SalesCreditNote,
    SalesInvoice,
    Status,
    TaxKind,
    TaxRate,
)
from sandbox.sage.money import as_number

Json = dict[str, Any]
BASE_KEYS = ("id", "displayed_as", "$path")


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ref(collection: str, key: str, displayed_as: str) -> Json:
    return {"id": key, "displayed_as": displayed_as, "$path": f"/{collection}/{key}"}


def project(full: Json, attributes: str | None) -> Json:
    """List items carry the base attributes, plus those named in ``attributes`` (or ``all``)."""
    if attributes == "all":
        return full
    wanted = {a.strip() for a in (attributes or "").split(",") if a.strip()}
    return {k: v for k, v in full.items() if k in BASE_KEYS or k in wanted}


def currency_ref(code: str) -> Json:
    return ref("currencies", code, f"{CURRENCY_NAMES.get(code, code)} ({code})")


def financial_settings(item: Business) -> Json:
    """Every attribute of Sage's FinancialSettings definition (tests/contracts/sage)."""
    year_end = date(item.created_at.year, 12, 31).isoformat()
    return {
        "$path": "/financial_settings",
        "year_end_date": year_end,
        "year_end_lockdown_date": None,
        "accounting_type": "accrual",
        "accounts_start_date": item.created_at.date().isoformat(),
        "base_currency": currency_ref(item.currency_id),
        "multi_currency_enabled": item.multi_currency_enabled,
        "use_live_exchange_rates": False,
        "mtd_activation_status": None,
        "mtd_connected": False,
        "mtd_authenticated_date": None,
        "tax_scheme": None,
        "tax_return_frequency": None,
        "tax_number": None,
        "general_tax_number": None,
        "tax_office": None,
        "default_irpf_rate": None,
        "flat_rate_tax_percentage": None,
        "recoverable_percentage": None,
        "sales_tax_calculation": "invoice",
        "purchase_tax_calculation": "invoice",
        "updated_at": iso(item.created_at),
        "postponed_accounting": False,
        "destination_vat": False,
    }


def status_ref(status: Status) -> Json:
    return ref("artefact_statuses", status.value, STATUS_NAMES[status])


def business(item: Business) -> Json:
    return {
        **ref("businesses", item.id, item.name),
        "name": item.name,
        "country_of_registration": {"id": item.country_id, "displayed_as": item.country_id},
        "currency": currency_ref(item.currency_id),
        "created_at": iso(item.created_at),
        "updated_at": iso(item.created_at),
    }


def tax_rate(item: TaxRate) -> Json:
    return {
        **ref("tax_rates", item.id, f"{item.name} {item.percentage:.2f}%"),
        "created_at": iso(item.created_at),
        "updated_at": iso(item.created_at),
        "name": item.name,
        "agency": None,
        "percentage": as_number(item.percentage),
        "percentages": [
            {"percentage": as_number(item.percentage), "from_date": "2011-01-04", "to_date": None}
        ],
        "is_visible": True,
        "retailer": False,
        "editable": False,
        "deletable": False,
        "is_combined_rate": False,
        "component_tax_rates": [],
    }


def ledger_account(book: Book, item: LedgerAccount) -> Json:
    rate = book.tax_rates.get(item.default_tax_rate_id or "")
    return {
        **ref("ledger_accounts", item.id, f"{item.name} ({item.nominal_code})"),
        "created_at": iso(item.created_at),
        "updated_at": iso(item.created_at),
        "name": item.name,
        "display_name": item.name,
        "nominal_code": item.nominal_code,
        "ledger_account_type": ref("ledger_account_types", item.type_id, item.type_name),
        "tax_rate": _tax_ref(rate) if rate else None,
        "fixed_tax_rate": False,
        "visible_scopes": list(item.visible_scopes),
        **{f"visible_in_{scope}": scope in item.visible_scopes for scope in _SCOPES},
        "included_in_chart": True,
        "is_control_account": False,
    }


_SCOPES = (
    "banking",
    "expenses",
    "journals",
    "other_payments",
    "other_receipts",
    "reporting",
    "sales",
)


def bank_account(item: BankAccount) -> Json:
    return {
        **ref("bank_accounts", item.id, f"{item.name} ({item.nominal_code})"),
        "created_at": iso(item.created_at),
        "updated_at": iso(item.created_at),
        "bank_account_type": ref("bank_account_types", "CHECKING", "Current"),
        "nominal_code": item.nominal_code,
        "editable": False,
        "deletable": False,
    }


def contact(book: Book, item: Contact) -> Json:
    return {
        **ref("contacts", item.id, f"{item.name} ({item.reference})"),
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
        "links": [],
        "deleted_at": None,
        "contact_types": [
            ref("contact_types", t, CONTACT_TYPE_NAMES[t]) for t in item.contact_type_ids
        ],
        "name": item.name,
        "reference": item.reference,
        "email": item.email,
        "main_contact_person": _person(item.main_contact_person, item.contact_type_ids),
        "balance": as_number(_balance(book, item)),
        "currency": currency_ref(item.currency_id or book.business.currency_id),
        "credit_days": item.credit_days,
        "notes": None,
        "tax_number": None,
        "main_address": None,
        "delivery_address": None,
        **item.extra,
        "system": False,
        "is_active": True,
        "deletable": True,
    }


def _person(person: ContactPerson | None, type_ids: list[str]) -> Json | None:
    if person is None:
        return None
    return {
        **ref("contact_persons", person.id, person.name or person.email or ""),
        "contact_person_types": [
            ref("contact_person_types", t, CONTACT_TYPE_NAMES[t]) for t in type_ids
        ],
        "name": person.name,
        "job_title": person.job_title,
        "telephone": person.telephone,
        "mobile": person.mobile,
        "email": person.email,
        "is_main_contact": True,
        "is_preferred_contact": True,
    }


def _balance(book: Book, item: Contact) -> Decimal:
    owed = (i.outstanding_amount for i in book.invoices.values() if i.contact_id == item.id)
    credit = (c.outstanding_amount for c in book.credit_notes.values() if c.contact_id == item.id)
    return sum(owed, ZERO) - sum(credit, ZERO)


def invoice(book: Book, item: SalesInvoice, *, site: str) -> Json:
    head = {
        **ref("sales_invoices", item.id, item.invoice_number),
        **_stamps(item),
        "links": [_ui_link(item, site)],
        "editable": item.status in (Status.DRAFT, Status.UNPAID),
        "transaction": None if item.status is Status.DRAFT else _transaction(item),
        "transaction_type": ref("transaction_types", "SALES_INVOICE", "Sales Invoice"),
        "tax_calculation_method": None,
        "invoice_number_prefix": "SI-",
        "invoice_number": item.invoice_number,
    }
    dates = {"date": item.date.isoformat(), "due_date": item.due_date.isoformat()}
    return {**head, **_body(book, item, dates), "invoice_lines": _lines(book, item)}


def credit_note(book: Book, item: SalesCreditNote, *, site: str) -> Json:
    """A credit note has the invoice's representation (Sage's invoicing guide, 'Other Document
    Types'), with the names of the spec's SalesCreditNote."""
    original = item.original_invoice_date
    head = {
        **ref("sales_credit_notes", item.id, item.credit_note_number),
        **_stamps(item),
        "links": [_ui_link(item, site)],
        "editable": item.status in (Status.DRAFT, Status.UNPAID),
        "transaction": None if item.status is Status.DRAFT else _transaction(item),
        "transaction_type": ref("transaction_types", "SALES_CREDIT_NOTE", "Sales Credit Note"),
        "tax_calculation_method": None,
        "credit_note_number_prefix": "SCN-",
        "credit_note_number": item.credit_note_number,
    }
    dates = {
        "date": item.date.isoformat(),
        "original_invoice_date": original.isoformat() if original else None,
    }
    return {**head, **_body(book, item, dates), "credit_note_lines": _lines(book, item)}


def _stamps(item: SalesArtefact) -> Json:
    return {
        "created_at": iso(item.created_at),
        "updated_at": iso(item.updated_at),
        "deleted_at": iso(item.deleted_at) if item.deleted_at else None,
    }


def _body(book: Book, item: SalesArtefact, dates: Json) -> Json:
    """Everything after the number that invoices and credit notes share."""
    return {
        "contact": ref(
            "contacts", item.contact_id, f"{item.contact_name} ({item.contact_reference})"
        ),
        "contact_name": item.contact_name,
        "contact_reference": item.contact_reference,
        **dates,
        "reference": item.reference,
        "main_address_free_form": "",
        "main_address": _blank_address(book, item),
        "notes": item.notes,
        "terms_and_conditions": "",
        **_shipping(book),
        **_invoice_amounts(item),
        "currency": currency_ref(item.currency_id),
        "exchange_rate": as_number(item.exchange_rate),
        "inverse_exchange_rate": as_number(item.inverse_exchange_rate),
        "status": status_ref(item.status),
        "sent": False,
        "sent_by_email": False,
        "void_reason": item.void_reason,
        "tax_analysis": _tax_analysis(book, item),
        "payments_allocations": [_allocation(a) for a in item.allocations],
        "last_paid": _last_paid(item),
        "tax_reconciled": False,
    }


def _lines(book: Book, item: SalesArtefact) -> list[Json]:
    return [_line(book, item, line) for line in item.lines]


def _transaction(item: SalesArtefact) -> Json:
    return ref("transactions", item.id, item.number)


def _blank_address(book: Book, item: SalesArtefact) -> Json:
    """The invoice's copy of the customer's address (the sandbox keeps no addresses)."""
    country = book.business.country_id
    return {
        **ref("addresses", item.id, ""),
        "address_type": ref("address_types", "SALES", "Sales"),
        "address_line_1": "",
        "address_line_2": "",
        "city": "",
        "region": "",
        "postal_code": "",
        "country": ref("countries", country, country),
        "country_group": ref("country_groups", country, country),
    }


def _shipping(book: Book) -> Json:
    """No shipping: zero amounts at the business's no-tax rate (or its first rate)."""
    rates = list(book.tax_rates.values())
    rate = next((r for r in rates if r.kind is TaxKind.NO_TAX), rates[0] if rates else None)
    zero = as_number(ZERO)
    return {
        "shipping_net_amount": zero,
        "shipping_tax_rate": _tax_ref(rate) if rate else None,
        "shipping_tax_amount": zero,
        "shipping_tax_breakdown": [],
        "shipping_total_amount": zero,
        "base_currency_shipping_net_amount": zero,
        "base_currency_shipping_tax_amount": zero,
        "base_currency_shipping_tax_breakdown": [],
        "base_currency_shipping_total_amount": zero,
        "payments_allocations_total_discount": zero,
    }


def _tax_analysis(book: Book, item: SalesArtefact) -> list[Json]:
    by_rate: dict[str, list[InvoiceLine]] = {}
    for line in item.lines:
        by_rate.setdefault(line.tax_rate_id, []).append(line)
    analysis = []
    for rate_id, lines in by_rate.items():
        net = sum((line.net_amount for line in lines), ZERO)
        tax = sum((line.tax_amount for line in lines), ZERO)
        analysis.append(
            {
                "tax_rate": _tax_ref(book.tax_rates[rate_id]),
                "net_amount": as_number(net),
                "tax_amount": as_number(tax),
                "total_amount": as_number(net + tax),
                "goods_amount": as_number(ZERO),
                "service_amount": as_number(ZERO),
            }
        )
    return analysis


def ui_path(invoice_id: str, collection: str = "sales_invoices") -> str:
    return f"/sandbox/ui/{collection}/{invoice_id}"


def _ui_link(item: SalesArtefact, site: str) -> Json:
    collection = "sales_credit_notes" if isinstance(item, SalesCreditNote) else "sales_invoices"
    href = f"{site}{ui_path(item.id, collection)}"
    return {"href": href, "rel": "alternate", "type": "text/html"}


def _invoice_amounts(item: SalesArtefact) -> Json:
    amounts = {
        "net_amount": item.net_amount,
        "tax_amount": item.tax_amount,
        "total_amount": item.total_amount,
        "total_paid": item.total_paid,
        "payments_allocations_total_amount": item.total_paid,
        "outstanding_amount": item.outstanding_amount,
        "total_quantity": sum((line.quantity for line in item.lines), ZERO),
        "total_discount_amount": sum((line.discount_amount for line in item.lines), ZERO),
        "base_currency_net_amount": item.in_base(item.net_amount),
        "base_currency_tax_amount": item.in_base(item.tax_amount),
        "base_currency_total_amount": item.in_base(item.total_amount),
        "base_currency_outstanding_amount": item.in_base(item.outstanding_amount),
        "base_currency_total_discount_amount": item.in_base(
            sum((line.discount_amount for line in item.lines), ZERO)
        ),
    }
    return {key: as_number(value) for key, value in amounts.items()}


def _line(book: Book, item: SalesArtefact, line: InvoiceLine) -> Json:
    ledger = book.ledger_accounts[line.ledger_account_id]
    rate = book.tax_rates[line.tax_rate_id]
    gross = line.quantity * line.unit_price
    percentage = line.discount_amount / gross * 100 if gross else ZERO
    return {
        "id": line.id,
        "displayed_as": line.description,
        "description": line.description,
        "product": None,
        "service": None,
        "ledger_account": ref(
            "ledger_accounts", ledger.id, f"{ledger.name} ({ledger.nominal_code})"
        ),
        "trade_of_asset": False,
        "quantity": as_number(line.quantity),
        "unit_price": as_number(line.unit_price),
        "unit_price_includes_tax": line.unit_price_includes_tax,
        "net_amount": as_number(line.net_amount),
        "tax_rate": _tax_ref(rate),
        "tax_amount": as_number(line.tax_amount),
        "tax_breakdown": [_breakdown(rate, line.tax_amount)],
        "total_amount": as_number(line.total_amount),
        "base_currency_unit_price": as_number(item.in_base(line.unit_price)),
        "base_currency_net_amount": as_number(item.in_base(line.net_amount)),
        "base_currency_tax_amount": as_number(item.in_base(line.tax_amount)),
        "base_currency_tax_breakdown": [_breakdown(rate, item.in_base(line.tax_amount))],
        "base_currency_total_amount": as_number(item.in_base(line.total_amount)),
        "eu_goods_services_type": None,
        "discount_amount": as_number(line.discount_amount),
        "base_currency_discount_amount": as_number(item.in_base(line.discount_amount)),
        "discount_percentage": as_number(percentage.quantize(ZERO)),
        "eu_sales_description": None,
    }


def _breakdown(rate: TaxRate, amount: Decimal) -> Json:
    return {
        "tax_rate": _tax_ref(rate),
        "percentage": as_number(rate.percentage),
        "amount": as_number(amount),
    }


def _last_paid(item: SalesArtefact) -> str | None:
    dates = [a.date for a in item.allocations if a.kind is AllocationKind.RECEIPT]
    return max(dates).isoformat() if dates else None


def _tax_ref(rate: TaxRate) -> Json:
    return ref("tax_rates", rate.id, f"{rate.name} {rate.percentage:.2f}%")


def _allocation(item: Allocation) -> Json:
    """One entry of ``payments_allocations``, in the spec's PaymentAllocation shape
    (tests/contracts/sage/sales_invoice_part_paid_and_credited.json): a receipt names its
    contact payment; an allocation names itself and the artefact on the other side."""
    receipt = item.kind is AllocationKind.RECEIPT
    other = ref(*item.counterpart) if item.counterpart else None
    shown = item.reference or (other["displayed_as"] if other else "Customer Receipt")
    return {
        "links": [],
        "date": item.date.isoformat(),
        "type": item.kind.value,
        "reference": item.reference,
        "amount": as_number(item.amount),
        "discount": "0.0",
        "stripe_transaction_id": None,
        "contact_allocation": None
        if receipt
        else ref("contact_allocations", item.payment_id, "Customer Allocation"),
        "artefact": None if receipt else other,
        "contact_payment": ref("contact_payments", item.payment_id, shown) if receipt else None,
        "displayed_as": shown,
        "negative_payment": False,
    }


def contact_allocation(book: Book, item: ContactAllocation) -> Json:
    """The spec's ContactAllocation (tests/contracts/sage/contact_allocation_created.json)."""
    contact = book.contacts[item.contact_id]
    return {
        **ref("contact_allocations", item.id, "Customer Allocation"),
        "created_at": iso(item.created_at),
        "updated_at": iso(item.created_at),
        "links": [],
        "transaction": ref("transactions", item.id, "Customer Allocation"),
        "transaction_type": ref("transaction_types", "CUSTOMER_ALLOCATION", "Customer Allocation"),
        "deleted_at": None,
        "date": item.date.isoformat(),
        "contact": ref("contacts", contact.id, f"{contact.name} ({contact.reference})"),
        "allocated_artefacts": [
            {
                "id": f"{item.id[:24]}{index:08x}",
                "artefact": ref(collection, key, _number(book, collection, key)),
                "amount": as_number(amount),
            }
            for index, (collection, key, amount) in enumerate(item.artefacts)
        ],
    }


def _number(book: Book, collection: str, key: str) -> str:
    found = book.credit_notes if collection == "sales_credit_notes" else book.invoices
    return found[key].number


def payment(book: Book, item: ContactPayment) -> Json:
    bank = book.bank_accounts[item.bank_account_id]
    customer = book.contacts[item.contact_id]
    return {
        **ref("contact_payments", item.id, item.reference or "Customer Receipt"),
        "created_at": iso(item.created_at),
        "updated_at": iso(item.created_at),
        "transaction_type": ref("transaction_types", "CUSTOMER_RECEIPT", "Customer Receipt"),
        "payment_method": ref("payment_methods", item.payment_method_id, item.payment_method_id)
        if item.payment_method_id
        else None,
        "contact": ref("contacts", customer.id, f"{customer.name} ({customer.reference})"),
        "bank_account": ref("bank_accounts", bank.id, f"{bank.name} ({bank.nominal_code})"),
        "date": item.date.isoformat(),
        "net_amount": as_number(item.total_amount),
        "tax_amount": "0.0",
        "total_amount": as_number(item.total_amount),
        "currency": currency_ref(book.business.currency_id),
        "reference": item.reference,
        "allocated_artefacts": [
            {
                "artefact": ref("sales_invoices", key, book.invoices[key].invoice_number),
                "amount": as_number(amount),
            }
            for key, amount in item.allocations
        ],
        "editable": True,
    }
