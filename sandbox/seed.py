"""The demo data both simulators start from. The bridge's sandbox settings and
``config/ledger_mappings.yaml`` refer to these exact ids: change them together."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sandbox.common.ids import Clock, utc_now
from sandbox.kommo.config import KommoConfig
from sandbox.kommo.models import (
    LOST_STATUS_ID,
    WON_STATUS_ID,
    Account,
    Catalog,
    CatalogElement,
    CustomField,
    ElementLink,
    EnumOption,
    Lead,
    Pipeline,
    User,
    Webhook,
)
from sandbox.kommo.models import Contact as KommoContact
from sandbox.kommo.models import Status as KommoStatus
from sandbox.kommo.state import KommoState
from sandbox.sage.config import SageConfig
from sandbox.sage.models import (
    BankAccount,
    Business,
    Contact,
    ContactPerson,
    LedgerAccount,
    TaxKind,
    TaxRate,
)
from sandbox.sage.state import SageState

# --- Sage -------------------------------------------------------------------------------------
SAGE_TOKEN = "sandbox-sage-token"  # noqa: S105 - the public demo token, not a secret
SAGE_BUSINESS_ID = "5a9d1a3bb3f94b4e8b2c0e1f7d6a0001"
LEDGER_SALES_A = "9a0e2f1c4b5d4e6f8a7b6c5d4e3f4000"
LEDGER_SERVICES = "9a0e2f1c4b5d4e6f8a7b6c5d4e3f4010"
LEDGER_SUBSCRIPTIONS = "9a0e2f1c4b5d4e6f8a7b6c5d4e3f4020"
LEDGER_BANK_CHARGES = "9a0e2f1c4b5d4e6f8a7b6c5d4e3f7000"
SAGE_BANK_ACCOUNT = "9a0e2f1c4b5d4e6f8a7b6c5d4e3f1200"
SAGE_GRACE_CONTACT = "7c1e5d2a9b3f4e6d8c0a1b2c3d4e0001"

_SALES_SCOPES = ("sales", "journals", "other_receipts", "reporting")
_EXPENSE_SCOPES = ("expenses", "journals", "other_payments", "reporting")
_TAX_RATES = (
    ("GB_STANDARD", "Standard", "20.00", TaxKind.STANDARD),
    ("GB_LOWER", "Lower Rate", "5.00", TaxKind.REDUCED),
    ("GB_ZERO", "Zero Rated", "0.00", TaxKind.ZERO),
    ("GB_EXEMPT", "Exempt", "0.00", TaxKind.EXEMPT),
    ("GB_NO_TAX", "No Tax", "0.00", TaxKind.NO_TAX),
)
_LEDGERS = (
    (LEDGER_SALES_A, "Sales Type A", 4000, "SALES", "Sales", _SALES_SCOPES, "GB_STANDARD"),
    (LEDGER_SERVICES, "Services", 4010, "SALES", "Sales", _SALES_SCOPES, "GB_STANDARD"),
    (LEDGER_SUBSCRIPTIONS, "Subscriptions", 4020, "SALES", "Sales", _SALES_SCOPES, "GB_STANDARD"),
    (
        LEDGER_BANK_CHARGES,
        "Bank charges",
        7900,
        "OVERHEADS",
        "Overheads",
        _EXPENSE_SCOPES,
        "GB_EXEMPT",
    ),
)


def demo_sage_config(**overrides: object) -> SageConfig:
    """The demo's config: the seed's static token, everything else at Sage's defaults."""
    return SageConfig.model_validate({"static_tokens": [SAGE_TOKEN], **overrides})


def demo_sage_state(*, clock: Clock = utc_now) -> SageState:
    state = SageState(clock=clock)
    seed_sage(state)
    return state


def seed_sage(state: SageState) -> None:
    """Load the demo business into ``state`` (which should be empty)."""
    now = state.now()
    business = Business(SAGE_BUSINESS_ID, "Sandbox Trading Ltd", "GBP", "GB", now)
    book = state.add_business(business)
    with state.lock:
        for key, name, pct, kind in _TAX_RATES:
            book.tax_rates[key] = TaxRate(key, name, Decimal(pct), kind, now)
        for key, name, code, type_id, type_name, scopes, rate in _LEDGERS:
            book.ledger_accounts[key] = LedgerAccount(
                key, name, code, type_id, type_name, scopes, rate, now
            )
        book.bank_accounts[SAGE_BANK_ACCOUNT] = BankAccount(SAGE_BANK_ACCOUNT, "Current", 1200, now)
        book.contacts[SAGE_GRACE_CONTACT] = _grace(now)


def _grace(now: datetime) -> Contact:
    person = ContactPerson(
        id="7c1e5d2a9b3f4e6d8c0a1b2c3d4e0101", name="Grace Hopper", email="grace@example.com"
    )
    return Contact(
        id=SAGE_GRACE_CONTACT,
        name="Grace Hopper",
        reference="GRACEH001",
        contact_type_ids=["CUSTOMER"],
        main_contact_person=person,
        created_at=now,
        updated_at=now,
    )


# --- Kommo ------------------------------------------------------------------------------------
KOMMO_TOKEN = "sandbox-kommo-token"  # noqa: S105 - the public demo token, not a secret
KOMMO_ACCOUNT_ID = 31000001
KOMMO_SUBDOMAIN = "sandbox"
KOMMO_USER_ID = 9000001
PIPELINE_SALES = 7000001
STATUS_NEW_LEAD = 7100001
STATUS_NEGOTIATION = 7100002
STATUS_RAISE_INVOICE = 7100003
STATUS_WON = WON_STATUS_ID
STATUS_LOST = LOST_STATUS_ID
FIELD_INVOICE_NUMBER = 6000001
FIELD_INVOICE_LINK = 6000002
FIELD_PAYMENT_STATUS = 6000003
FIELD_AMOUNT_PAID = 6000004
FIELD_AMOUNT_OUTSTANDING = 6000005
FIELD_LAST_PAYMENT_DATE = 6000006
FIELD_CREDIT_NOTES = 6000007
FIELD_CREDITED_AMOUNT = 6000008
ENUM_UNPAID, ENUM_PART_PAID, ENUM_PAID, ENUM_OVERDUE, ENUM_VOID, ENUM_CREDITED = range(
    6000101, 6000107
)
FIELD_CONTACT_PHONE = 6100001
FIELD_CONTACT_EMAIL = 6100002
ENUM_PHONE_WORK = 6100101
ENUM_EMAIL_WORK = 6100201
CONTACT_ADA = 5000001
CONTACT_GRACE = 5000002
CATALOG_PRODUCTS = 4000001
CATALOG_INVOICES = 4000002
CATALOG_REGULAR = 4000003
FIELD_PRICE = 4100001
FIELD_SKU = 4100002
FIELD_TYPE = 4100003
FIELD_WHOLESALE_PRICE = 4100004
FIELD_BILL_STATUS = 4110001
FIELD_BILL_PRICE = 4110002
ENUM_BILL_CREATED = 4110101
FIELD_DELIVERY_COST = 4120001
ELEMENT_CONSULTING = 4200001
ELEMENT_WIDGET = 4200002
ELEMENT_SUPPORT = 4200003
ELEMENT_MYSTERY = 4200004
ELEMENT_INVOICE = 4300001
ELEMENT_COURIER = 4400001
LEAD_SAMPLE = 3000001
LEAD_SECOND = 3000002
LEAD_UNMAPPED = 3000003
LEAD_WHOLESALE = 3000004

_STAGES = (
    (STATUS_NEW_LEAD, "New lead", 10, "#99ccff"),
    (STATUS_NEGOTIATION, "Negotiation", 20, "#ffff99"),
    (STATUS_RAISE_INVOICE, "Raise Invoice", 30, "#ffcc66"),
    (STATUS_WON, "Closed - won", 10000, "#ccff66"),
    (STATUS_LOST, "Closed - lost", 11000, "#d5d8db"),
)
_PAYMENT_OPTIONS = (
    (ENUM_UNPAID, "Unpaid"),
    (ENUM_PART_PAID, "Part paid"),
    (ENUM_PAID, "Paid"),
    (ENUM_OVERDUE, "Overdue"),
    (ENUM_VOID, "Void"),
    (ENUM_CREDITED, "Credited"),
)
_PHONE_KINDS = ("WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER")
_EMAIL_KINDS = ("WORK", "PRIV", "OTHER")
# id, name, SKU, type, PRICE, wholesale price, is_deleted (Kommo shows null for live elements)
_PRODUCTS = (
    (ELEMENT_CONSULTING, "Consulting hour", "CONS-HR", "service", "120.00", None, False),
    (ELEMENT_WIDGET, "Widget", "WID-01", "goods", "19.99", "15.50", None),
    (ELEMENT_SUPPORT, "Support plan", "SUP-12", "subscription", "499.00", None, None),
    (ELEMENT_MYSTERY, "Mystery box", "MYST-1", "other", "10.00", None, False),
)


def demo_kommo_config(**overrides: object) -> KommoConfig:
    """The demo's config: the seed's long-lived token, everything else at Kommo's defaults."""
    return KommoConfig.model_validate({"long_lived_tokens": [KOMMO_TOKEN], **overrides})


def demo_kommo_state(*, clock: Clock = utc_now) -> KommoState:
    account = Account(
        KOMMO_ACCOUNT_ID, KOMMO_SUBDOMAIN, "Sandbox", int(clock().timestamp()), "GBP", "£"
    )
    admin = User(KOMMO_USER_ID, "Sam Manager", "sam@example.com")
    state = KommoState(account, admin, clock=clock)
    seed_kommo(state)
    return state


def seed_kommo(state: KommoState) -> None:
    """Load the demo pipeline, fields, contacts, catalog and leads into ``state``."""
    now = state.now()
    with state.lock:
        _seed_pipeline(state)
        _seed_lead_fields(state)
        _seed_contacts(state, now)
        _seed_products(state, now)
        _seed_other_lists(state, now)
        _seed_leads(state, now)


def _seed_pipeline(state: KommoState) -> None:
    stages = [
        KommoStatus(key, name, sort, color, PIPELINE_SALES) for key, name, sort, color in _STAGES
    ]
    state.pipelines[PIPELINE_SALES] = Pipeline(PIPELINE_SALES, "Sales", 1, True, stages)


def _seed_lead_fields(state: KommoState) -> None:
    options = [
        EnumOption(key, value, (i + 1) * 10) for i, (key, value) in enumerate(_PAYMENT_OPTIONS)
    ]
    for field in (
        CustomField(FIELD_INVOICE_NUMBER, "Invoice number", "text", None, 10, "leads"),
        CustomField(FIELD_INVOICE_LINK, "Invoice link", "url", None, 20, "leads"),
        CustomField(FIELD_PAYMENT_STATUS, "Payment status", "select", None, 30, "leads", options),
        CustomField(FIELD_AMOUNT_PAID, "Amount paid", "numeric", None, 40, "leads"),
        CustomField(FIELD_AMOUNT_OUTSTANDING, "Amount outstanding", "numeric", None, 50, "leads"),
        CustomField(FIELD_LAST_PAYMENT_DATE, "Last payment", "date", None, 60, "leads"),
        CustomField(FIELD_CREDIT_NOTES, "Credit notes", "text", None, 70, "leads"),
        CustomField(FIELD_CREDITED_AMOUNT, "Amount credited", "numeric", None, 80, "leads"),
    ):
        state.lead_fields[field.id] = field


def _seed_contacts(state: KommoState, now: int) -> None:
    state.contact_fields[FIELD_CONTACT_PHONE] = _enum_field(
        FIELD_CONTACT_PHONE, "Phone", "PHONE", ENUM_PHONE_WORK, _PHONE_KINDS
    )
    state.contact_fields[FIELD_CONTACT_EMAIL] = _enum_field(
        FIELD_CONTACT_EMAIL, "Email", "EMAIL", ENUM_EMAIL_WORK, _EMAIL_KINDS
    )
    ada = _contact(CONTACT_ADA, "Ada", "Lovelace", now)
    ada.fields[FIELD_CONTACT_EMAIL] = [_work("ada@example.com", ENUM_EMAIL_WORK)]
    ada.fields[FIELD_CONTACT_PHONE] = [_work("+441234567890", ENUM_PHONE_WORK)]
    grace = _contact(CONTACT_GRACE, "Grace", "Hopper", now)
    grace.fields[FIELD_CONTACT_EMAIL] = [_work("grace@example.com", ENUM_EMAIL_WORK)]
    state.contacts.update({ada.id: ada, grace.id: grace})


def _enum_field(
    field_id: int, name: str, code: str, first_enum: int, kinds: tuple[str, ...]
) -> CustomField:
    options = [EnumOption(first_enum + i, kind, (i + 1) * 2, kind) for i, kind in enumerate(kinds)]
    return CustomField(field_id, name, "multitext", code, 4, "contacts", options)


def _contact(key: int, first: str, last: str, now: int) -> KommoContact:
    return KommoContact(key, f"{first} {last}", first, last, KOMMO_USER_ID, KOMMO_USER_ID, now, now)


def _work(value: str, enum_id: int) -> dict[str, object]:
    return {"value": value, "enum_id": enum_id, "enum_code": "WORK"}


def _catalog_fields(catalog: Catalog, *fields: tuple[int, str, str, str | None]) -> None:
    for sort, (key, name, kind, code) in enumerate(fields, start=1):
        catalog.fields[key] = CustomField(
            key, name, kind, code, sort * 10, "catalogs", catalog_id=catalog.id
        )


def _seed_products(state: KommoState, now: int) -> None:
    """The products list: PRICE and a second, user-made price field (no code) that a deal's
    link can pick with its price_id. Values are strings, as Kommo's element examples show."""
    catalog = Catalog(CATALOG_PRODUCTS, "Products", "products", 10, KOMMO_USER_ID, now)
    _catalog_fields(
        catalog,
        (FIELD_PRICE, "Price", "price", "PRICE"),
        (FIELD_SKU, "SKU", "text", "SKU"),
        (FIELD_TYPE, "Type", "text", "TYPE"),
        (FIELD_WHOLESALE_PRICE, "Wholesale price", "price", None),
    )
    for key, name, sku, kind, price, wholesale, deleted in _PRODUCTS:
        element = CatalogElement(key, CATALOG_PRODUCTS, name, KOMMO_USER_ID, now, now)
        element.fields = {
            FIELD_PRICE: [{"value": price}],
            FIELD_SKU: [{"value": sku}],
            FIELD_TYPE: [{"value": kind}],
        }
        if wholesale is not None:
            element.fields[FIELD_WHOLESALE_PRICE] = [{"value": wholesale}]
        element.is_deleted = deleted
        catalog.elements[key] = element
    state.catalogs[catalog.id] = catalog


def _seed_other_lists(state: KommoState, now: int) -> None:
    """Next to the products: Kommo's invoices list (amount in BILL_PRICE) and a regular list.
    Their elements can be linked to a deal too, and are never invoice lines."""
    invoices = Catalog(CATALOG_INVOICES, "Invoices", "invoices", 20, KOMMO_USER_ID, now)
    _catalog_fields(
        invoices,
        (FIELD_BILL_STATUS, "Status", "select", "BILL_STATUS"),
        (FIELD_BILL_PRICE, "Amount", "numeric", "BILL_PRICE"),
    )
    invoices.fields[FIELD_BILL_STATUS].enums = [EnumOption(ENUM_BILL_CREATED, "Created", 10)]
    bill = CatalogElement(ELEMENT_INVOICE, CATALOG_INVOICES, "Invoice 1", KOMMO_USER_ID, now, now)
    bill.fields = {
        FIELD_BILL_STATUS: [{"value": "Created", "enum_id": ENUM_BILL_CREATED}],
        FIELD_BILL_PRICE: [{"value": "186"}],
    }
    invoices.elements[bill.id] = bill
    regular = Catalog(CATALOG_REGULAR, "Delivery options", "regular", 30, KOMMO_USER_ID, now)
    _catalog_fields(regular, (FIELD_DELIVERY_COST, "Cost", "numeric", None))
    courier = CatalogElement(ELEMENT_COURIER, CATALOG_REGULAR, "Courier", KOMMO_USER_ID, now, now)
    courier.fields = {FIELD_DELIVERY_COST: [{"value": "12"}]}
    regular.elements[courier.id] = courier
    state.catalogs.update({invoices.id: invoices, regular.id: regular})


def _seed_leads(state: KommoState, now: int) -> None:
    def link(element_id: int, quantity: str, price_id: int | None = None) -> ElementLink:
        catalog_id = next(c.id for c in state.catalogs.values() if element_id in c.elements)
        return ElementLink(element_id, catalog_id, Decimal(quantity), price_id)

    # Kommo sends price_id on some links: the first deal's name PRICE, the wholesale deal's
    # the wholesale price; the wholesale deal also carries an invoice and a delivery option.
    deals = (
        (
            LEAD_SAMPLE,
            "Sample deal",
            360,
            CONTACT_ADA,
            [link(ELEMENT_CONSULTING, "2.5", FIELD_PRICE), link(ELEMENT_WIDGET, "3", FIELD_PRICE)],
        ),
        (LEAD_SECOND, "Second deal", 499, CONTACT_GRACE, [link(ELEMENT_SUPPORT, "1")]),
        (
            LEAD_UNMAPPED,
            "Unmapped deal",
            40,
            CONTACT_ADA,
            [link(ELEMENT_WIDGET, "1"), link(ELEMENT_MYSTERY, "2")],
        ),
        (
            LEAD_WHOLESALE,
            "Wholesale deal",
            186,
            CONTACT_GRACE,
            [
                link(ELEMENT_WIDGET, "10", FIELD_WHOLESALE_PRICE),
                link(ELEMENT_INVOICE, "1"),
                link(ELEMENT_COURIER, "1"),
            ],
        ),
    )
    stage = (PIPELINE_SALES, STATUS_NEGOTIATION)
    for key, name, price, contact_id, elements in deals:
        lead = Lead.created(key, name, by=KOMMO_USER_ID, at=now, stage=stage, price=price)
        state.leads[key] = lead.link(contact_id, elements)


def register_webhook(
    state: KommoState, destination: str, settings: tuple[str, ...] = ("status_lead",)
) -> Webhook:
    """Subscribe ``destination`` directly in the state, as ``POST /api/v4/webhooks`` would.

    The seed registers no webhook; the demo points one at the bridge's webhook URL.
    """
    with state.lock:
        now = state.now()
        hook = Webhook(
            state.next_webhook_id(), destination, list(settings), 1, KOMMO_USER_ID, now, now
        )
        state.webhooks[hook.id] = hook
    return hook
