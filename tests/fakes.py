"""Stateful stand-ins for Kommo and Sage at the HTTP level (respx), for job-level tests.

They check what real Kommo/Sage check that matters here (auth headers, X-Business, Sage's spec),
keep what was sent for assertions, and can fail a route the next N times.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import respx

from tests.conftest import KOMMO_URL, SAGE_URL
from tests.sage_spec import validate_sage_body

Fault = httpx.Response | Exception


class FaultQueue:
    def __init__(self) -> None:
        self._faults: dict[str, list[Fault]] = defaultdict(list)

    def add(self, route: str, *faults: Fault) -> None:
        self._faults[route].extend(faults)

    def take(self, route: str) -> Fault | None:
        queue = self._faults[route]
        return queue.pop(0) if queue else None


def _json(request: httpx.Request) -> Any:
    return json.loads(request.content or b"null")


def _fault_or(faults: FaultQueue, route: str) -> httpx.Response | None:
    fault = faults.take(route)
    if isinstance(fault, Exception):
        raise fault
    return fault


class FakeKommo:
    """Kommo as its API documents itself (the shapes of tests/contracts/kommo/): elements with
    `is_deleted: null` and string-typed custom field values, a products list next to an
    invoices list, the account with its currency, 204 for an empty answer."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.leads: dict[int, dict[str, Any]] = {}
        self.contacts: dict[int, dict[str, Any]] = {}
        self.elements: dict[int, dict[str, Any]] = {}
        self.catalogs: dict[int, dict[str, Any]] = {}
        self.account: dict[str, Any] = _kommo_account()
        self.patches: list[tuple[int, Any]] = []
        self.tasks: list[dict[str, Any]] = []  # every POST /api/v4/tasks item
        self.task_store: dict[int, dict[str, Any]] = {}  # the tasks as Kommo holds them
        self.task_reads: list[int] = []
        self.task_patches: list[Any] = []  # every PATCH /api/v4/tasks body
        self.faults = FaultQueue()
        self._router = router
        self.add_catalog(77, "Products", "products")
        self.add_catalog(78, "Invoices", "invoices")
        base = KOMMO_URL + "/api/v4"
        router.get(url__regex=rf"{base}/leads/(?P<lead_id>\d+)").mock(side_effect=self._get_lead)
        router.patch(url__regex=rf"{base}/leads/(?P<lead_id>\d+)").mock(side_effect=self._patch)
        router.get(url__regex=rf"{base}/contacts/(?P<cid>\d+)").mock(side_effect=self._contact)
        router.get(url__regex=rf"{base}/catalogs/(?P<cat>\d+)/elements").mock(
            side_effect=self._elements
        )
        router.get(f"{base}/catalogs").mock(side_effect=self._catalogs)
        router.get(f"{base}/account").mock(side_effect=self._account)
        router.post(f"{base}/tasks").mock(side_effect=self._task)
        router.get(url__regex=rf"{base}/tasks/(?P<task_id>\d+)").mock(side_effect=self._get_task)
        router.patch(f"{base}/tasks").mock(side_effect=self._patch_tasks)
        router.patch(f"{base}/leads").mock(side_effect=self._batch_patch)
        router.get(f"{base}/leads").mock(side_effect=self._list_leads)
        router.get(f"{base}/webhooks").mock(side_effect=self._webhooks)
        self.batch_patches: list[Any] = []
        self.webhooks: list[dict[str, Any]] = []

    @property
    def requested(self) -> list[str]:
        """Every request that reached this fake, as "METHOD url", in order."""
        return [
            f"{call.request.method} {call.request.url}"
            for call in self._router.calls
            if str(call.request.url).startswith(KOMMO_URL)
        ]

    def add_lead(
        self,
        lead_id: int,
        *,
        status_id: int = 503,
        pipeline_id: int = 500,
        contact_id: int | None = 7001,
        products: list[tuple[Any, ...]] | None = None,
        responsible_user_id: int = 42,
    ) -> None:
        """`products`: (element id, quantity) or (element id, quantity, price_id) per link."""
        embedded: dict[str, Any] = {"tags": [], "companies": [], "contacts": []}
        if contact_id is not None:
            embedded["contacts"] = [
                {"id": contact_id, "is_main": True, "_links": _self(f"/contacts/{contact_id}")}
            ]
        embedded["catalog_elements"] = [self._link(*product) for product in products or []]
        self.leads[lead_id] = {
            "id": lead_id,
            "name": f"Deal {lead_id}",
            "price": 0,
            "responsible_user_id": responsible_user_id,
            "group_id": 0,
            "status_id": status_id,
            "pipeline_id": pipeline_id,
            "loss_reason_id": None,
            "created_by": responsible_user_id,
            "updated_by": responsible_user_id,
            "created_at": 1_760_000_000,
            "updated_at": 1_760_000_000,
            "closed_at": None,
            "closest_task_at": None,
            "is_deleted": False,
            "custom_fields_values": None,
            "score": None,
            "account_id": 29000001,
            "_links": _self(f"/leads/{lead_id}"),
            "_embedded": embedded,
        }

    def _link(self, element_id: int, quantity: Any, price_id: int | None = None) -> dict[str, Any]:
        metadata = {"quantity": quantity, "catalog_id": self.elements[element_id]["catalog_id"]}
        if price_id is not None:
            metadata["price_id"] = price_id
        return {"id": element_id, "metadata": metadata}

    def add_contact(self, contact_id: int, name: str, email: str | None) -> None:
        fields = None
        if email:
            fields = [
                {
                    "field_id": 11,
                    "field_name": "Email",
                    "field_code": "EMAIL",
                    "field_type": "multitext",
                    "values": [{"value": email, "enum_id": 3, "enum_code": "WORK"}],
                }
            ]
        first, _, last = name.partition(" ")
        self.contacts[contact_id] = {
            "id": contact_id,
            "name": name,
            "first_name": first,
            "last_name": last,
            "responsible_user_id": 42,
            "group_id": 0,
            "created_by": 42,
            "updated_by": 42,
            "created_at": 1_760_000_000,
            "updated_at": 1_760_000_000,
            "closest_task_at": None,
            "custom_fields_values": fields,
            "account_id": 29000001,
            "_links": _self(f"/contacts/{contact_id}"),
            "_embedded": {"tags": [], "companies": []},
        }

    def add_catalog(self, catalog_id: int, name: str, catalog_type: str) -> None:
        self.catalogs[catalog_id] = {
            "id": catalog_id,
            "name": name,
            "created_by": 42,
            "updated_by": 42,
            "created_at": 1_760_000_000,
            "updated_at": 1_760_000_000,
            "sort": 10 * len(self.catalogs) + 10,
            "type": catalog_type,
            "can_add_elements": True,
            "can_show_in_cards": False,
            "can_link_multiple": True,
            "can_be_deleted": catalog_type != "products",
            "sdk_widget_code": None,
            "account_id": 29000001,
            "_links": _self(f"/catalogs/{catalog_id}"),
        }

    def add_element(
        self,
        element_id: int,
        name: str,
        price: Any,
        *,
        sku: str | None = None,
        product_type: str | None = None,
        catalog_id: int = 77,
        price_code: str = "PRICE",
        other_prices: dict[int, Any] | None = None,
        is_deleted: bool | None = None,
    ) -> None:
        """An element as GET /api/v4/catalogs/{id}/elements shows it; `other_prices` adds
        price-type fields without a code (field id → value), as a user-made price field is."""
        fields = [_field(1, "Price", price_code, "price", price)]
        for field_id, value in (other_prices or {}).items():
            fields.append(_field(field_id, f"Price {field_id}", None, "price", value))
        if sku:
            fields.append(_field(2, "SKU", "SKU", "text", sku))
        if product_type:
            fields.append(_field(3, "Type", "TYPE", "text", product_type))
        self.elements[element_id] = {
            "id": element_id,
            "name": name,
            "created_by": 42,
            "updated_by": 42,
            "created_at": 1_760_000_000,
            "updated_at": 1_760_000_000,
            "is_deleted": is_deleted,
            "custom_fields_values": fields,
            "catalog_id": catalog_id,
            "account_id": 29000001,
            "_links": _self(f"/catalogs/{catalog_id}/elements/{element_id}"),
        }

    def _auth(self, request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("Authorization") != "Bearer kommo-token-xyz":
            return httpx.Response(401, json={"title": "Unauthorized", "status": 401})
        return None

    def _get_lead(self, request: httpx.Request, lead_id: str) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "get_lead"):
            return early
        assert request.url.params.get("with") == "contacts,catalog_elements"
        lead = self.leads.get(int(lead_id))
        return httpx.Response(200, json=lead) if lead else httpx.Response(204)

    def _contact(self, request: httpx.Request, cid: str) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "get_contact"):
            return early
        contact = self.contacts.get(int(cid))
        return httpx.Response(200, json=contact) if contact else httpx.Response(204)

    def _catalogs(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "catalogs"):
            return early
        return _hal_page("catalogs", list(self.catalogs.values()), "/catalogs")

    def _account(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "account"):
            return early
        return httpx.Response(200, json=self.account)

    def _elements(self, request: httpx.Request, cat: str) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "elements"):
            return early
        query = parse_qs(urlparse(str(request.url)).query)
        wanted = {int(v) for v in query.get("filter[id][]", [])}
        found = [
            e
            for e in self.elements.values()
            if e["catalog_id"] == int(cat) and (not wanted or e["id"] in wanted)
        ]
        return _hal_page("elements", found, f"/catalogs/{cat}/elements")

    def _patch(self, request: httpx.Request, lead_id: str) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "patch_lead"):
            return early
        self.patches.append((int(lead_id), _json(request)))
        body = {"id": int(lead_id), "updated_at": 1_760_000_100}
        return httpx.Response(200, json={**body, "_links": _self(f"/leads/{lead_id}")})

    def _batch_patch(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "batch_patch"):
            return early
        body = _json(request)
        assert isinstance(body, list) and len(body) <= 50
        self.batch_patches.append(body)
        leads = [
            {"id": i["id"], "updated_at": 1_760_000_100, "_links": _self(f"/leads/{i['id']}")}
            for i in body
        ]
        return httpx.Response(200, json={"_links": _self("/leads"), "_embedded": {"leads": leads}})

    def _list_leads(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "list_leads"):
            return early
        params = request.url.params
        pipeline = int(params["filter[statuses][0][pipeline_id]"])
        status = int(params["filter[statuses][0][status_id]"])
        since = int(params["filter[updated_at][from]"])
        leads = [
            lead
            for lead in self.leads.values()
            if (lead["pipeline_id"], lead["status_id"]) == (pipeline, status)
            and lead["updated_at"] >= since
        ]
        return _hal_page("leads", leads, "/leads")

    def _webhooks(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request):
            return early
        if not self.webhooks:
            return httpx.Response(204)
        body = {"_total_items": len(self.webhooks), "_embedded": {"webhooks": self.webhooks}}
        return httpx.Response(200, json=body)

    def _task(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "tasks"):
            return early
        body = _json(request)
        assert isinstance(body, list)
        created = []
        for task in body:
            self.tasks.append(task)
            task_id = 8000 + len(self.tasks)
            self.task_store[task_id] = {"id": task_id, "text": task["text"], "is_completed": False}
            created.append(
                {
                    "id": task_id,
                    "request_id": task.get("request_id"),
                    "_links": _self(f"/tasks/{task_id}"),
                }
            )
        return httpx.Response(
            200, json={"_links": _self("/tasks"), "_embedded": {"tasks": created}}
        )

    def _get_task(self, request: httpx.Request, task_id: str) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "get_task"):
            return early
        self.task_reads.append(int(task_id))
        task = self.task_store.get(int(task_id))
        if task is None:
            return httpx.Response(204)
        result = {"text": task["result"]} if task.get("result") else []
        return httpx.Response(200, json={**task, "result": result})

    def _patch_tasks(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "patch_tasks"):
            return early
        body = _json(request)
        assert isinstance(body, list) and all(item["id"] in self.task_store for item in body)
        self.task_patches.append(body)
        for item in body:
            task = self.task_store[item["id"]]
            task.update({k: item[k] for k in ("text", "is_completed") if k in item})
            if "result" in item:
                task["result"] = item["result"]["text"]
        tasks = [{"id": item["id"], "updated_at": 1_760_000_100} for item in body]
        return httpx.Response(200, json={"_embedded": {"tasks": tasks}})


def _self(path: str) -> dict[str, Any]:
    return {"self": {"href": f"{KOMMO_URL}/api/v4{path}"}}


def _field(field_id: int, name: str, code: str | None, kind: str, value: Any) -> dict[str, Any]:
    return {
        "field_id": field_id,
        "field_name": name,
        "field_code": code,
        "field_type": kind,
        "values": [{"value": value}],
    }


def _hal_page(key: str, items: list[dict[str, Any]], path: str) -> httpx.Response:
    """One page of a Kommo list, or 204 when there is nothing (Kommo's "nothing found")."""
    if not items:
        return httpx.Response(204)
    body = {"_page": 1, "_links": _self(f"{path}?page=1&limit=250"), "_embedded": {key: items}}
    return httpx.Response(200, json=body)


def _kommo_account() -> dict[str, Any]:
    return {
        "id": 29000001,
        "name": "Test Co",
        "subdomain": "testco",
        "current_user_id": 42,
        "country": "GB",
        "currency": "GBP",
        "currency_symbol": "£",
        "customers_mode": "disabled",
        "is_unsorted_on": True,
        "mobile_feature_version": 0,
        "is_loss_reason_enabled": True,
        "is_helpbot_enabled": False,
        "is_technical_account": False,
        "contact_name_display_order": 1,
        "_links": _self("/account"),
    }


class FakeSage:
    """Renders what Sage documents (tests/contracts/sage): amounts as decimal strings, the
    `$items` envelope, currency references, a due date from the contact's credit_days (else the
    business default) when the POST leaves it out."""

    def __init__(self, router: respx.MockRouter) -> None:
        self.contacts: list[dict[str, Any]] = []
        self.invoices: list[dict[str, Any]] = []
        self.invoice_posts: list[Any] = []
        # Every POST /sales_invoices body that reached Sage, refused ones included.
        self.invoice_attempts: list[Any] = []
        self.contact_posts: list[Any] = []
        self.idempotent: dict[str, dict[str, Any]] = {}
        # Sage answers a repeated idempotency_id with the first answer; a refusal included
        # (the behaviour the bridge must survive: it is not documented either way).
        self.refused: dict[str, httpx.Response] = {}
        self.tax_rates = {"GB_STANDARD": "20.0", "GB_LOWER": "5.0", "GB_ZERO": "0.0"}
        self.base_currency = "GBP"
        self.multi_currency = False
        self.default_credit_days = 30
        self.faults = FaultQueue()
        self.timeout_after_create = 0
        # Sage rounds or adds something we did not send: added to the created invoice's totals.
        self.total_skew = Decimal(0)
        router.get(f"{SAGE_URL}/contacts").mock(side_effect=self._find_contacts)
        router.post(f"{SAGE_URL}/contacts").mock(side_effect=self._post_contact)
        router.get(f"{SAGE_URL}/sales_invoices").mock(side_effect=self._find_invoices)
        router.post(f"{SAGE_URL}/sales_invoices").mock(side_effect=self._post_invoice)
        router.get(f"{SAGE_URL}/tax_rates").mock(side_effect=self._tax_rates)
        router.get(f"{SAGE_URL}/artefact_statuses").mock(side_effect=self._artefact_statuses)
        router.get(f"{SAGE_URL}/ledger_accounts").mock(side_effect=self._ledger_accounts)
        router.get(f"{SAGE_URL}/financial_settings").mock(side_effect=self._financial_settings)
        self.sales_ledger_accounts = ["la-services", "la-goods", "la-subscriptions"]
        self.deleted: list[dict[str, Any]] = []
        self.poll_queries: list[dict[str, str]] = []

    def add_customer(
        self,
        contact_id: str,
        email: str,
        *,
        currency: str | None = None,
        credit_days: int | None = None,
    ) -> None:
        self.contacts.append(
            {
                "id": contact_id,
                "displayed_as": email,
                "email": email,
                "contact_types": [{"id": "CUSTOMER"}],
                "currency": _currency(currency or self.base_currency),
                "credit_days": credit_days,
            }
        )

    def _auth(self, request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("Authorization") != "Bearer sage-token-abc":
            return _sage_error(401, "AuthorizationFailure", "bad token")
        if request.headers.get("X-Business") != "b" * 32:
            return _sage_error(403, "BusinessNotFound", "X-Business missing or wrong")
        return None

    def _find_contacts(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "find_contacts"):
            return early
        email = request.url.params["email"].casefold()
        found = [c for c in self.contacts if c["email"].casefold() == email]
        return _page(found)

    def _post_contact(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "post_contact"):
            return early
        body = _json(request)
        validate_sage_body("postContacts", body)
        self.contact_posts.append(body)
        contact = body["contact"]
        created = {
            "id": f"c{len(self.contacts) + 1:031d}",
            "email": contact["main_contact_person"]["email"],
            "contact_types": [{"id": t} for t in contact["contact_type_ids"]],
            "currency": _currency(contact.get("currency_id") or self.base_currency),
            "credit_days": None,
        }
        self.contacts.append(created)
        return httpx.Response(201, json=created)

    def set_status(
        self,
        invoice_id: str,
        status: str,
        updated_at: str,
        *,
        due_date: str = "2099-01-01",
        outstanding: str = "10.0",
    ) -> None:
        """An invoice as Sage would list it after a payment or a status change."""
        invoice = next((i for i in self.invoices if i["id"] == invoice_id), None)
        if invoice is None:
            invoice = {"id": invoice_id, "reference": f"REF-{invoice_id}"}
            self.invoices.append(invoice)
        invoice.update(
            status={"id": status},
            updated_at=updated_at,
            due_date=due_date,
            outstanding_amount=outstanding,
        )

    def _find_invoices(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "find_invoices"):
            return early
        params = request.url.params
        if "search" in params:
            return _page([i for i in self.invoices if params["search"] in i["reference"]])
        self.poll_queries.append(dict(params))
        if "deleted_since" in params:
            since = datetime.fromisoformat(params["deleted_since"])
            return _page(
                [d for d in self.deleted if datetime.fromisoformat(d["deleted_at"]) > since]
            )
        since = datetime.fromisoformat(params["updated_or_created_since"])
        changed = [
            i
            for i in self.invoices
            if "updated_at" in i and datetime.fromisoformat(i["updated_at"]) >= since
        ]
        return _page(sorted(changed, key=lambda i: i["updated_at"]))

    def _ledger_accounts(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "ledger_accounts"):
            return early
        assert request.url.params["visible_in"] == "sales"
        return _page([{"id": i, "displayed_as": i} for i in self.sales_ledger_accounts])

    def _artefact_statuses(self, request: httpx.Request) -> httpx.Response:
        ids = ["DRAFT", "UNPAID", "PART_PAID", "PAID", "VOID"]
        return _page([{"id": i, "displayed_as": i.title()} for i in ids])

    def _financial_settings(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "financial_settings"):
            return early
        return httpx.Response(
            200,
            json={
                "$path": "/financial_settings",
                "base_currency": _currency(self.base_currency),
                "multi_currency_enabled": self.multi_currency,
                "use_live_exchange_rates": False,
            },
        )

    def _post_invoice(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request):
            return early
        body = _json(request)
        key = body["sales_invoice"]["idempotency_id"]
        self.invoice_attempts.append(body)
        if key in self.refused:
            return self.refused[key]
        if fault := _fault_or(self.faults, "post_invoice"):
            if 400 <= fault.status_code < 500 and fault.status_code not in (401, 408, 429):
                self.refused[key] = fault
            return fault
        validate_sage_body("postSalesInvoices", body)
        self.invoice_posts.append(body)
        invoice_in = body["sales_invoice"]
        if key not in self.idempotent:
            self.idempotent[key] = self._create(invoice_in)
        if self.timeout_after_create:
            self.timeout_after_create -= 1
            raise httpx.ReadTimeout("the invoice was created but the answer never came")
        return httpx.Response(201, json=self.idempotent[key])

    def _create(self, invoice_in: dict[str, Any]) -> dict[str, Any]:
        number = len(self.invoices) + 1
        net = tax = Decimal(0)
        for line in invoice_in["invoice_lines"]:
            gross = Decimal(line["unit_price"]) * Decimal(line["quantity"])
            net += (gross - Decimal(line.get("discount_amount", "0"))).quantize(CENT)
            tax += Decimal(line["tax_amount"])
        contact = next(c for c in self.contacts if c["id"] == invoice_in["contact_id"])
        invoice = {
            "id": f"{number:032x}",
            "displayed_as": f"SI-{number}",
            "invoice_number": f"SI-{number}",
            "reference": invoice_in["reference"],
            "date": invoice_in["date"],
            "due_date": invoice_in.get("due_date") or self._due(invoice_in["date"], contact),
            "net_amount": _sage_decimal(net),
            "tax_amount": _sage_decimal(tax),
            "total_amount": _sage_decimal(net + tax + self.total_skew),
            "currency": _currency(invoice_in.get("currency_id") or self.base_currency),
            "status": {"id": "UNPAID"},
            "links": [{"href": f"https://app.sage.test/invoices/{number}", "rel": "alternate"}],
        }
        self.invoices.append(invoice)
        return invoice

    def _due(self, issued: str, contact: dict[str, Any]) -> str:
        days = contact.get("credit_days") or self.default_credit_days
        return (date.fromisoformat(issued) + timedelta(days=days)).isoformat()

    def _tax_rates(self, request: httpx.Request) -> httpx.Response:
        if early := self._auth(request) or _fault_or(self.faults, "tax_rates"):
            return early
        return _page([{"id": k, "percentage": v} for k, v in self.tax_rates.items()])


CENT = Decimal("0.01")


def _currency(code: str) -> dict[str, str]:
    return {"id": code, "displayed_as": code, "$path": f"/currencies/{code}"}


def _sage_decimal(value: Decimal) -> str:
    """As Sage prints amounts: "294.0", "27.2", "0.83"."""
    text = format(value.normalize(), "f")
    return text if "." in text else f"{text}.0"


def _page(items: list[dict[str, Any]]) -> httpx.Response:
    return httpx.Response(
        200, json={"$total": len(items), "$page": 1, "$next": None, "$items": items}
    )


def _sage_error(status: int, code: str, message: str) -> httpx.Response:
    body = [{"$severity": "error", "$dataCode": code, "$message": message, "$source": ""}]
    return httpx.Response(status, json=body)


def sage_error(status: int, code: str, message: str) -> httpx.Response:
    return _sage_error(status, code, message)
