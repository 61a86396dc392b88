"""The Kommo and Sage every test talks to: the sandbox simulators (sandbox/), in-process.

`upstreams()` builds a Kommo account and a Sage business shaped like the tests' settings
(tests/conftest.py `make_settings`) and routes each upstream's host to its simulator with respx,
so the bridge's own clients, built from those settings, reach them unchanged. `Kommo` and `Sage`
seed a simulator's state through its models and read what the bridge sent from its request
log: they answer nothing themselves, the sandbox does.

The Kommo account (29000001, testco.kommo.com): manager 42 (and 77), pipeline 500 whose stage
503 is the trigger, lead fields 900/901 (invoice number, link), 950 (payment status, options
11-16) and 951-955 (amount paid, outstanding, last payment date, credit notes, credited),
contact 7001 Ada Lovelace (ada@example.com), a products list (77) with PRICE, SKU and
TYPE fields and the elements 101-105 of tests/data/ledger_mappings.yaml, next to an invoices
list (78). The Sage business ("b" * 32, GBP): the ledger accounts and tax rates that mapping
names, and a bank account for payments.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NamedTuple
from urllib.parse import urlencode

import httpx
import respx
from starlette.types import ASGIApp

from sandbox.common.ids import Clock, utc_now
from sandbox.common.middleware import Instrumented
from sandbox.common.requestlog import RecordedRequest
from sandbox.kommo import KommoConfig, KommoSandbox, KommoState, build_kommo
from sandbox.kommo.models import (
    Account,
    Catalog,
    CatalogElement,
    Contact,
    CustomField,
    ElementLink,
    EnumOption,
    Lead,
    Pipeline,
    Status,
    Task,
    User,
    Webhook,
)
from sandbox.sage import SageConfig, SageSandbox, SageState, build_sage
from sandbox.sage.crediting import credit_by_hand
from sandbox.sage.invoicing import create_invoice, void_invoice
from sandbox.sage.models import (
    BankAccount,
    Book,
    Business,
    ContactPerson,
    LedgerAccount,
    SalesCreditNote,
    SalesInvoice,
    TaxKind,
    TaxRate,
)
from sandbox.sage.models import Contact as SageContact
from sandbox.sage.models import Status as InvoiceStatus
from sandbox.sage.payments import record_payment
from sandbox.seed import STATUS_LOST, STATUS_WON
from sandbox.transport import SandboxTransport

KOMMO_HOST = "testco.kommo.com"
SAGE_HOST = "api.accounting.sage.com"
SAGE_OAUTH_HOST = "oauth.accounting.sage.com"
KOMMO_TOKEN = "kommo-token-xyz"
SAGE_TOKEN = "sage-token-abc"
ACCOUNT_ID = 29000001
BUSINESS_ID = "b" * 32
MANAGER, OTHER_MANAGER = 42, 77
PIPELINE, TRIGGER_STATUS = 500, 503
PRODUCTS, INVOICES = 77, 78
CONTACT_ADA = 7001
PAYMENT_ENUMS = {
    "unpaid": 11,
    "part_paid": 12,
    "paid": 13,
    "overdue": 14,
    "void": 15,
    "credited": 16,
}
# The lead fields of the invoice's money: setting name → field id.
MONEY_FIELDS = {
    "kommo_amount_paid_field_id": 951,
    "kommo_amount_outstanding_field_id": 952,
    "kommo_last_payment_date_field_id": 953,
    "kommo_credit_notes_field_id": 954,
    "kommo_credited_amount_field_id": 955,
}
BANK_ACCOUNT = "ba" + "0" * 30
CREATED = 1_760_000_000
# (id, name, price, SKU, type): the products tests/data/ledger_mappings.yaml maps (104 it doesn't).
ELEMENTS = (
    (101, "Consulting hour", "120.00", "CONS-HR", "service"),
    (102, "Widget", "19.99", "WID-01", "goods"),
    (103, "Support plan", "499", "SUP-12", "subscription"),
    (104, "Mystery box", "10", "MYST-1", "other"),
    (105, "Handbook", "12.50", "BOOK-1", "goods"),
)
# Field ids of the element fields, by code, in every list (others are added by id).
ELEMENT_FIELDS = {"PRICE": (1, "price"), "SKU": (2, "text"), "TYPE": (3, "text")}
INVOICE_FIELDS = {"BILL_PRICE": (21, "numeric")}
EMAIL_FIELD = 11
TAX_RATES = (
    ("GB_STANDARD", "20.0", TaxKind.STANDARD),
    ("GB_LOWER", "5.0", TaxKind.REDUCED),
    ("GB_ZERO", "0.0", TaxKind.ZERO),
)
LEDGER_ACCOUNTS = ("la-services", "la-goods", "la-subscriptions")


def answered(entry_status: int) -> bool:
    return 200 <= entry_status < 300


def sent(sandbox: Instrumented, method: str, path: str, *, refused: bool = False) -> list[Any]:
    """The bodies of the `method` requests to exactly `path` the simulator received, in order:
    those it accepted (2xx), or every one with `refused`."""
    return [
        entry.body
        for entry in sandbox.requests.entries(method=method)
        if entry.path == path and (refused or answered(entry.status))
    ]


def request_line(entry: RecordedRequest) -> str:
    query = urlencode(entry.query, doseq=True)
    return f"{entry.method} {entry.path}?{query}" if query else f"{entry.method} {entry.path}"


class Kommo:
    """The sandbox Kommo of one test: its state seeded, its request log read."""

    def __init__(self, sandbox: KommoSandbox) -> None:
        self.sandbox = sandbox
        self.state = sandbox.state
        self.faults = sandbox.faults

    def add_contact(self, contact_id: int, name: str, email: str | None) -> None:
        first, _, last = name.partition(" ")
        contact = Contact(contact_id, name, first, last, MANAGER, MANAGER, CREATED, CREATED)
        if email:
            contact.fields[EMAIL_FIELD] = [{"value": email, "enum_id": 3, "enum_code": "WORK"}]
        self.state.contacts[contact_id] = contact

    def add_catalog(self, catalog_id: int, name: str, catalog_type: str) -> None:
        sort = 10 * (len(self.state.catalogs) + 1)
        self.state.catalogs[catalog_id] = Catalog(
            catalog_id, name, catalog_type, sort, MANAGER, CREATED
        )

    def add_element(
        self,
        element_id: int,
        name: str,
        price: Any,
        *,
        sku: str | None = None,
        product_type: str | None = None,
        catalog_id: int = PRODUCTS,
        price_code: str = "PRICE",
        other_prices: Mapping[int, Any] | None = None,
        is_deleted: bool | None = None,
    ) -> None:
        """An element of a list; `other_prices` adds price fields without a code (field id →
        value), as a user-made price field is."""
        catalog = self.state.catalogs[catalog_id]
        element = CatalogElement(element_id, catalog_id, name, MANAGER, CREATED, CREATED)
        element.is_deleted = is_deleted
        coded = {price_code: price, "SKU": sku, "TYPE": product_type}
        for code, value in coded.items():
            if value is not None:
                element.fields[_coded_field(catalog, code)] = [{"value": value}]
        for field_id, value in (other_prices or {}).items():
            catalog.fields.setdefault(
                field_id, _catalog_field(catalog, field_id, f"Price {field_id}", "price", None)
            )
            element.fields[field_id] = [{"value": value}]
        catalog.elements[element_id] = element

    def add_lead(
        self,
        lead_id: int,
        *,
        status_id: int = TRIGGER_STATUS,
        pipeline_id: int = PIPELINE,
        contact_id: int | None = CONTACT_ADA,
        products: list[tuple[Any, ...]] | None = None,
        responsible_user_id: int = MANAGER,
        updated_at: int = CREATED,
    ) -> Lead:
        """`products`: (element id, quantity) or (element id, quantity, price_id) per link."""
        stage = (pipeline_id, status_id)
        lead = Lead.created(
            lead_id, f"Deal {lead_id}", by=responsible_user_id, at=CREATED, stage=stage
        )
        lead.updated_at = updated_at
        links = [self._link(*product) for product in products or []]
        self.state.leads[lead_id] = lead.link(contact_id, links)
        return lead

    def _link(self, element_id: int, quantity: Any, price_id: int | None = None) -> ElementLink:
        catalog = next(c for c in self.state.catalogs.values() if element_id in c.elements)
        return ElementLink(element_id, catalog.id, Decimal(str(quantity)), price_id)

    def set_products(self, lead_id: int, products: list[tuple[Any, ...]]) -> None:
        """The deal's products edited in Kommo: (element id, quantity[, price_id]) per link."""
        lead = self.state.leads[lead_id]
        lead.elements = [self._link(*product) for product in products]

    def delete_lead(self, lead_id: int) -> None:
        """The deal deleted in Kommo's UI: into the trash (the test sends the hook itself)."""
        self.state.deleted_leads[lead_id] = self.state.leads.pop(lead_id)

    def shown(self, lead_id: int) -> dict[int, Any]:
        """The deal's custom field values now, by field id (one value each)."""
        fields = self.state.leads[lead_id].fields
        return {key: (v[0].get("enum_id") or v[0]["value"]) for key, v in fields.items() if v}

    def element(self, element_id: int) -> CatalogElement:
        return next(
            c.elements[element_id] for c in self.state.catalogs.values() if element_id in c.elements
        )

    def add_webhook(self, destination: str, *, disabled: bool = False) -> None:
        hook_id = self.state.next_webhook_id()
        hook = Webhook(hook_id, destination, ["status_lead"], 1, MANAGER, CREATED, CREATED)
        hook.disabled = disabled
        self.state.webhooks[hook_id] = hook

    @property
    def patches(self) -> list[tuple[int, Any]]:
        """(lead id, body) of each accepted PATCH /api/v4/leads/{id}."""
        return [
            (int(entry.path.rsplit("/", 1)[1]), entry.body)
            for entry in self.sandbox.requests.entries(method="PATCH")
            if entry.path.startswith("/api/v4/leads/") and answered(entry.status)
        ]

    @property
    def batch_patches(self) -> list[Any]:
        return sent(self.sandbox, "PATCH", "/api/v4/leads")

    @property
    def tasks(self) -> list[dict[str, Any]]:
        """Every task of every accepted POST /api/v4/tasks, as sent."""
        return [task for body in sent(self.sandbox, "POST", "/api/v4/tasks") for task in body]

    @property
    def task_reads(self) -> list[int]:
        """The task id of each GET /api/v4/tasks/{id} Kommo answered (a 204 for a gone one
        included)."""
        return [
            int(entry.path.rsplit("/", 1)[1])
            for entry in self.sandbox.requests.entries(method="GET")
            if entry.path.startswith("/api/v4/tasks/") and answered(entry.status)
        ]

    @property
    def task_patches(self) -> list[Any]:
        """The body of each accepted PATCH /api/v4/tasks (a list of edits)."""
        return sent(self.sandbox, "PATCH", "/api/v4/tasks")

    def task(self, task_id: int) -> Task:
        """A task as Kommo now holds it (a manager may complete or delete it in the state)."""
        return self.state.tasks[task_id]

    @property
    def requested(self) -> list[str]:
        """Every request that reached Kommo, as "METHOD path?query", in order."""
        return [request_line(entry) for entry in self.sandbox.requests.entries()]

    def calls(self, path: str) -> int:
        return sum(1 for entry in self.sandbox.requests.entries() if entry.path == path)


class Sage:
    """The sandbox Sage of one test: its business's book seeded, its request log read."""

    def __init__(self, sandbox: SageSandbox) -> None:
        self.sandbox = sandbox
        self.book: Book = sandbox.state.books[BUSINESS_ID]
        self.faults = sandbox.faults

    def add_customer(self, contact_id: str, email: str, **terms: Any) -> None:
        """A customer whose main contact has `email`; `terms`: currency_id, credit_days."""
        now = self.sandbox.state.now()
        person = ContactPerson(id=contact_id[::-1], name=email, email=email)
        reference = email.split("@")[0].upper()[:8]
        self.book.contacts[contact_id] = SageContact(
            contact_id, email, reference, ["CUSTOMER"], person, now, now, **terms
        )

    def add_invoice(
        self,
        at: datetime,
        *,
        total: str = "10.00",
        due: date | None = None,
        status: InvoiceStatus = InvoiceStatus.UNPAID,
        reference: str | None = None,
    ) -> str:
        """An invoice for a customer, created at `at` (net = `total`, zero-rated)."""
        data: dict[str, Any] = {
            "contact_id": self._customer(),
            "status_id": status.value,
            "date": at.date().isoformat(),
            "reference": reference,
            "invoice_lines": [
                {
                    "description": "Goods",
                    "ledger_account_id": "la-goods",
                    "quantity": "1",
                    "unit_price": total,
                    "tax_rate_id": "GB_ZERO",
                }
            ],
        }
        if due is not None:
            data["due_date"] = due.isoformat()
        invoice = create_invoice(self.book, data, now=at, default_credit_days=30)
        return invoice.id

    def pay(self, invoice_id: str, amount: str, at: datetime) -> None:
        invoice = self.book.invoices[invoice_id]
        data = {
            "transaction_type_id": "CUSTOMER_RECEIPT",
            "contact_id": invoice.contact_id,
            "bank_account_id": BANK_ACCOUNT,
            "date": at.date().isoformat(),
            "total_amount": amount,
            "allocated_artefacts": [{"artefact_id": invoice_id, "amount": amount}],
        }
        record_payment(self.book, data, now=at)

    def credit(self, invoice_id: str, amount: str | None, at: datetime) -> SalesCreditNote:
        """A credit note made by hand in Sage for the invoice, allocated to it (None: whole)."""
        invoice = self.book.invoices[invoice_id]
        given = Decimal(amount) if amount is not None else None
        return credit_by_hand(self.book, invoice, given, at.date(), None, now=at)

    def void(self, invoice_id: str, reason: str, at: datetime) -> None:
        """The invoice voided by hand in Sage."""
        void_invoice(self.book.invoices[invoice_id], reason, now=at)

    def delete_draft(self, at: datetime) -> str:
        """A DRAFT invoice created and deleted at `at` (it is then listed by deleted_since)."""
        invoice_id = self.add_invoice(at, status=InvoiceStatus.DRAFT)
        void_invoice(self.book.invoices[invoice_id], None, now=at)
        return invoice_id

    def _customer(self) -> str:
        if not self.book.contacts:
            self.add_customer("c" * 32, "customer@example.com")
        return next(iter(self.book.contacts))

    @property
    def invoices(self) -> list[SalesInvoice]:
        return list(self.book.invoices.values())

    @property
    def contacts(self) -> list[SageContact]:
        return list(self.book.contacts.values())

    @property
    def invoice_posts(self) -> list[Any]:
        return sent(self.sandbox, "POST", "/v3.1/sales_invoices")

    @property
    def invoice_attempts(self) -> list[Any]:
        """Every POST /sales_invoices that reached Sage, refused ones included."""
        return sent(self.sandbox, "POST", "/v3.1/sales_invoices", refused=True)

    @property
    def contact_posts(self) -> list[Any]:
        return sent(self.sandbox, "POST", "/v3.1/contacts")

    @property
    def credit_notes(self) -> list[SalesCreditNote]:
        return list(self.book.credit_notes.values())

    @property
    def credit_note_posts(self) -> list[Any]:
        return sent(self.sandbox, "POST", "/v3.1/sales_credit_notes")

    @property
    def allocation_posts(self) -> list[Any]:
        return sent(self.sandbox, "POST", "/v3.1/contact_allocations")

    def deletes(self) -> list[RecordedRequest]:
        """Every DELETE that reached Sage (voids)."""
        return self.sandbox.requests.entries(method="DELETE")

    def queries(self, path: str) -> list[dict[str, str]]:
        """The query of each GET to `path`, one value per parameter."""
        return [
            {name: values[-1] for name, values in entry.query.items()}
            for entry in self.sandbox.requests.entries(method="GET")
            if entry.path == path
        ]


class Upstreams(NamedTuple):
    kommo: Kommo
    sage: Sage


def kommo_sandbox(
    *, config: KommoConfig | None = None, clock: Clock = utc_now, account_id: int = ACCOUNT_ID
) -> KommoSandbox:
    state = KommoState(
        Account(account_id, "testco", "Test Co", CREATED, "GBP", "£"),
        User(MANAGER, "Manager", "manager@example.com"),
        clock=clock,
    )
    state.users[OTHER_MANAGER] = User(OTHER_MANAGER, "Other manager", "other@example.com")
    _seed_pipeline(state)
    _seed_lead_fields(state)
    state.contact_fields[EMAIL_FIELD] = CustomField(
        EMAIL_FIELD,
        "Email",
        "multitext",
        "EMAIL",
        4,
        "contacts",
        [EnumOption(3, "WORK", 2)],
    )
    config = config or KommoConfig(long_lived_tokens=[KOMMO_TOKEN], rate_limit=None)
    kommo = Kommo(build_kommo(config, state))
    kommo.add_catalog(PRODUCTS, "Products", "products")
    kommo.add_catalog(INVOICES, "Invoices", "invoices")
    kommo.add_contact(CONTACT_ADA, "Ada Lovelace", "ada@example.com")
    for element_id, name, price, sku, kind in ELEMENTS:
        kommo.add_element(element_id, name, price, sku=sku, product_type=kind)
    return kommo.sandbox


def _seed_pipeline(state: KommoState) -> None:
    names = ((501, "New lead"), (502, "Negotiation"), (503, "Raise Invoice"))
    closed = (
        (STATUS_WON, "Closed - won"),
        (STATUS_LOST, "Closed - lost"),
    )
    statuses = [
        Status(status_id, name, 10 * (i + 1), "#99ccff", PIPELINE)
        for i, (status_id, name) in enumerate((*names, *closed))
    ]
    state.pipelines[PIPELINE] = Pipeline(PIPELINE, "Sales", 1, True, statuses)


def _seed_lead_fields(state: KommoState) -> None:
    options = [
        EnumOption(enum_id, status.replace("_", " ").capitalize(), 10 * enum_id)
        for status, enum_id in PAYMENT_ENUMS.items()
    ]
    for field in (
        CustomField(900, "Invoice number", "text", None, 10, "leads"),
        CustomField(901, "Invoice link", "url", None, 20, "leads"),
        CustomField(950, "Payment status", "select", None, 30, "leads", options),
        CustomField(951, "Amount paid", "numeric", None, 40, "leads"),
        CustomField(952, "Amount outstanding", "numeric", None, 50, "leads"),
        CustomField(953, "Last payment", "date", None, 60, "leads"),
        CustomField(954, "Credit notes", "text", None, 70, "leads"),
        CustomField(955, "Amount credited", "numeric", None, 80, "leads"),
    ):
        state.lead_fields[field.id] = field


def _coded_field(catalog: Catalog, code: str) -> int:
    field_id, kind = {**ELEMENT_FIELDS, **INVOICE_FIELDS}[code]
    if field_id not in catalog.fields:
        catalog.fields[field_id] = _catalog_field(catalog, field_id, code.title(), kind, code)
    return field_id


def _catalog_field(
    catalog: Catalog, field_id: int, name: str, kind: str, code: str | None
) -> CustomField:
    sort = 10 * (len(catalog.fields) + 1)
    return CustomField(field_id, name, kind, code, sort, "catalogs", catalog_id=catalog.id)


def sage_sandbox(*, config: SageConfig | None = None, clock: Clock = utc_now) -> SageSandbox:
    state = SageState(clock=clock)
    created = datetime(2025, 1, 1, tzinfo=UTC)
    book = state.add_business(Business(BUSINESS_ID, "Test Trading Ltd", "GBP", "GB", created))
    for rate_id, percentage, kind in TAX_RATES:
        book.tax_rates[rate_id] = TaxRate(rate_id, rate_id, Decimal(percentage), kind, created)
    scopes = ("sales", "journals", "other_receipts", "reporting")
    for code, ledger_id in enumerate(LEDGER_ACCOUNTS, start=4000):
        book.ledger_accounts[ledger_id] = LedgerAccount(
            ledger_id, ledger_id, code, "SALES", "Sales", scopes, "GB_STANDARD", created
        )
    book.bank_accounts[BANK_ACCOUNT] = BankAccount(BANK_ACCOUNT, "Current", 1200, created)
    return build_sage(config or SageConfig(static_tokens=[SAGE_TOKEN], rate_limit=None), state)


def route(router: respx.MockRouter, host: str, app: ASGIApp) -> None:
    """Requests to `host` reach the simulator in-process, with a socket's timeouts and drops."""
    transport = SandboxTransport(app=app)

    async def reach(request: httpx.Request) -> httpx.Response:
        return await transport.handle_async_request(request)

    router.route(host=host).mock(side_effect=reach)


@asynccontextmanager
async def upstreams(*, pass_through: str | None = None) -> AsyncIterator[Upstreams]:
    """Both simulators for one test, answering the hosts of the tests' settings; every other
    outbound request fails the test, but those to `pass_through` (a host the test serves for
    real, such as a receiver on 127.0.0.1)."""
    kommo, sage = kommo_sandbox(), sage_sandbox()
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        if pass_through:
            router.route(host=pass_through).pass_through()
        route(router, KOMMO_HOST, kommo.app)
        route(router, SAGE_HOST, sage.app)
        try:
            yield Upstreams(Kommo(kommo), Sage(sage))
        finally:
            await kommo.webhooks.aclose()
