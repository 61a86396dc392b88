"""Kommo API v4 client: typed, keyword-only, one shared httpx.AsyncClient.

The reads and the write-back of an invoice are coalesced (`app.clients.kommo.coalesce`): the
jobs of one worker that want a lead, a contact, list elements or to write a lead at the same
time share one request, sent at the next rate-limit slot. A batch of one uses the single-entity
route (`GET /api/v4/leads/{id}`), exactly as before; two or more use the list routes with
`filter[id][]` and the batch `PATCH /api/v4/leads`. Callers see none of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
import structlog
from cachetools import TTLCache
from pydantic import BaseModel, ValidationError

from app.clients.http import retry_after_seconds, send
from app.clients.kommo.coalesce import Batcher, Ready, no_wait
from app.clients.kommo.errors import (
    KommoNotFound,
    KommoRequestError,
    KommoTransientError,
    KommoUnreadable,
)
from app.clients.kommo.schemas import (
    Account,
    Catalog,
    CatalogElement,
    CatalogsPage,
    Contact,
    ElementsPage,
    Lead,
    LeadPatch,
    LeadsPage,
    LeadUpdate,
    Pipeline,
    Task,
    TaskCreate,
    TaskPatch,
    TaskRef,
    TaskRefs,
    Webhook,
    WebhooksPage,
)

UPSTREAM = "kommo"
PAGE_LIMIT = 250
# Kommo's leads page asks for at most 50 entities per batch write; reads use the same size, so
# one `filter[id][]` query string stays far below any URL length limit.
BATCH_SIZE = 50
# Prices change rarely and an invoice re-reads them at most this stale; bounded so a huge
# catalog cannot grow a worker's memory.
ELEMENTS_TTL_SECONDS = 30.0
ELEMENTS_CACHE_SIZE = 5_000
LEAD_WITH = "contacts,catalog_elements"
M = TypeVar("M", bound=BaseModel)
_Entity = TypeVar("_Entity", Lead, Contact, CatalogElement)
log = structlog.get_logger(__name__)
# The entity each item of these lists is, to name it when something in it is unreadable.
_ITEM_ENTITIES = {
    "leads": "lead",
    "contacts": "contact",
    "elements": "catalog element",
    "catalogs": "list",
    "catalog_elements": "linked element",
    "webhooks": "webhook",
    "tasks": "task",
    "statuses": "stage",
}


class KommoClient:
    def __init__(self, http: httpx.AsyncClient, *, ready: Ready = no_wait) -> None:
        """`ready` returns when the shared rate limit has a slot free (without taking it)."""
        self._http = http
        self._ready = ready
        self._leads = Batcher(self._read_leads, ready, BATCH_SIZE)
        self._contacts = Batcher(self._read_contacts, ready, BATCH_SIZE)
        self._writes = Batcher(self._write_leads, ready, BATCH_SIZE, distinct=_lead_id)
        self._element_readers: dict[int, Batcher[int, CatalogElement | None]] = {}
        self._elements: TTLCache[tuple[int, int], CatalogElement] = TTLCache(
            maxsize=ELEMENTS_CACHE_SIZE, ttl=ELEMENTS_TTL_SECONDS
        )

    async def get_lead(self, *, lead_id: int) -> Lead:
        """The lead with its contacts and list elements; KommoNotFound when Kommo has none."""
        return await self._leads.load(lead_id)

    async def get_contact(self, *, contact_id: int) -> Contact:
        return await self._contacts.load(contact_id)

    async def _read_leads(self, ids: list[int]) -> Sequence[Lead | Exception]:
        if len(ids) == 1:
            path = f"/api/v4/leads/{ids[0]}"
            data = await self._get(path, {"with": LEAD_WITH})
            return [_read(Lead, data, where=f"GET {path}", entity="lead")]
        params = _by_ids(ids)
        params.append(("with", LEAD_WITH))
        found = await self._list_items("/api/v4/leads", params, "leads", Lead, "lead")
        return [found[i] if i in found else _absent("lead", i) for i in ids]

    async def _read_contacts(self, ids: list[int]) -> Sequence[Contact | Exception]:
        if len(ids) == 1:
            path = f"/api/v4/contacts/{ids[0]}"
            data = await self._get(path, {})
            return [_read(Contact, data, where=f"GET {path}", entity="contact")]
        found = await self._list_items(
            "/api/v4/contacts", _by_ids(ids), "contacts", Contact, "contact"
        )
        return [found[i] if i in found else _absent("contact", i) for i in ids]

    async def _list_items(
        self, path: str, params: Any, key: str, model: type[_Entity], entity: str
    ) -> dict[int, _Entity | Exception]:
        """Each item of one list page read on its own, so that a lead Kommo sends unreadably
        is that lead's caller's error only; 204 (none of them) reads as an empty page."""
        try:
            data = await self._get(path, params)
        except KommoNotFound:
            return {}
        items = _embedded_items(data, key, where=f"GET {path}")
        found: dict[int, _Entity | Exception] = {}
        for item in items:
            ident = item.get("id") if isinstance(item, dict) else None
            if isinstance(ident, int):
                try:
                    found[ident] = _read(model, item, where=f"GET {path}", entity=entity)
                except KommoUnreadable as exc:
                    found[ident] = exc
        return found

    async def get_account(self) -> Account:
        path = "/api/v4/account"
        return _read(Account, await self._get(path, {}), where=f"GET {path}", entity="account")

    async def get_catalog_elements(
        self, *, catalog_id: int, element_ids: list[int]
    ) -> list[CatalogElement]:
        """The elements with these ids; a deleted or unknown id is simply not in the answer.
        Elements read in the last ELEMENTS_TTL_SECONDS come from memory."""
        cached = {i: self._elements.get((catalog_id, i)) for i in element_ids}
        missing = [i for i, element in cached.items() if element is None]
        if missing:
            reader = self._element_reader(catalog_id)
            loaded = await asyncio.gather(*(reader.load(i) for i in missing))
            cached.update(zip(missing, loaded, strict=True))
        return [element for element in cached.values() if element is not None]

    def _element_reader(self, catalog_id: int) -> Batcher[int, CatalogElement | None]:
        reader = self._element_readers.get(catalog_id)
        if reader is None:

            async def read(ids: list[int]) -> Sequence[CatalogElement | Exception | None]:
                return await self._read_elements(catalog_id, ids)

            reader = self._element_readers[catalog_id] = Batcher(read, self._ready, BATCH_SIZE)
        return reader

    async def _read_elements(
        self, catalog_id: int, ids: list[int]
    ) -> list[CatalogElement | Exception | None]:
        """Read item by item: an element Kommo sends unreadably fails only the deals that link
        it, not every deal whose element shared the request."""
        path = f"/api/v4/catalogs/{catalog_id}/elements"
        found = await self._list_items(
            path, _by_ids(ids), "elements", CatalogElement, "catalog element"
        )
        for ident, element in found.items():
            if isinstance(element, CatalogElement):
                self._elements[(catalog_id, ident)] = element
        return [found.get(i) for i in ids]

    async def list_catalogs(self) -> list[Catalog]:
        """Every list in the account (at most 10, so one page of 250 holds them)."""
        path = "/api/v4/catalogs"
        try:
            data = await self._get(path, {"limit": PAGE_LIMIT})
        except KommoNotFound:
            return []
        return _read(CatalogsPage, data, where=f"GET {path}").embedded.catalogs

    async def catalog_elements_page(self, *, catalog_id: int, page: int) -> ElementsPage:
        path = f"/api/v4/catalogs/{catalog_id}/elements"
        try:
            data = await self._get(path, {"page": page, "limit": PAGE_LIMIT})
        except KommoNotFound:
            return ElementsPage()
        return _read(ElementsPage, data, where=f"GET {path}")

    async def update_lead(self, *, lead_id: int, update: LeadUpdate) -> None:
        patch = LeadPatch(id=lead_id, custom_fields_values=update.custom_fields_values)
        await self._writes.load(patch)

    async def _write_leads(self, patches: list[LeadPatch]) -> list[Exception | None]:
        """One batch PATCH; the leads it does not confirm are written one by one, so that one
        lead Kommo refuses (deleted, a field it rejects) fails only its own caller."""
        done: set[int] = set()
        if len(patches) > 1:
            try:
                done = await self._patch_batch(patches)
            except KommoRequestError as exc:
                log.warning("kommo.batch_patch_refused", leads=len(patches), detail=exc.detail)
        return [None if p.id in done else await self._patch_one(p) for p in patches]

    async def _patch_batch(self, patches: list[LeadPatch]) -> set[int]:
        """The ids of the leads Kommo's answer lists as changed."""
        path = "/api/v4/leads"
        body = [p.model_dump(mode="json", exclude_none=True) for p in patches]
        response = await self._request("PATCH", path, json=body)
        items = _embedded_items(_json(response, f"PATCH {path}"), "leads", where=f"PATCH {path}")
        return {i["id"] for i in items if isinstance(i, dict) and isinstance(i.get("id"), int)}

    async def _patch_one(self, patch: LeadPatch) -> Exception | None:
        body = patch.model_dump(mode="json", exclude_none=True, exclude={"id"})
        try:
            await self._request("PATCH", f"/api/v4/leads/{patch.id}", json=body)
        except Exception as exc:
            # Any failure here (Kommo's, or the limiter's Redis) is this lead's caller's alone:
            # raised, it would fail the whole batch, leads Kommo already confirmed included.
            return exc
        return None

    async def leads_in_stages(
        self, *, pipeline_id: int, status_ids: list[int], updated_from: int, page: int
    ) -> LeadsPage:
        """One page of leads now in any of the stages and updated at or after `updated_from`."""
        params: dict[str, str | int] = {}
        for index, status_id in enumerate(status_ids):
            params[f"filter[statuses][{index}][pipeline_id]"] = pipeline_id
            params[f"filter[statuses][{index}][status_id]"] = status_id
        params.update({"filter[updated_at][from]": updated_from, "page": page, "limit": PAGE_LIMIT})
        return await self._leads_page(params)

    async def leads_by_ids(self, *, lead_ids: list[int]) -> LeadsPage:
        """The leads with these ids that Kommo still has (at most 250 ids)."""
        params: list[tuple[str, str | int]] = [("filter[id][]", i) for i in lead_ids]
        params.append(("limit", PAGE_LIMIT))
        return await self._leads_page(params)

    async def _leads_page(self, params: Any) -> LeadsPage:
        path = "/api/v4/leads"
        try:
            data = await self._get(path, params)
        except KommoNotFound:  # 204: no leads
            return LeadsPage()
        return _read(LeadsPage, data, where=f"GET {path}")

    async def get_pipeline(self, *, pipeline_id: int) -> Pipeline:
        path = f"/api/v4/leads/pipelines/{pipeline_id}"
        return _read(Pipeline, await self._get(path, {}), where=f"GET {path}", entity="pipeline")

    async def update_leads(self, *, patches: list[LeadPatch]) -> None:
        body = [p.model_dump(mode="json", exclude_none=True) for p in patches]
        await self._request("PATCH", "/api/v4/leads", json=body)

    async def list_webhooks(self) -> list[Webhook]:
        path = "/api/v4/webhooks"
        try:
            data = await self._get(path, {})
        except KommoNotFound:
            return []
        return _read(WebhooksPage, data, where=f"GET {path}").embedded.webhooks

    async def create_tasks(self, *, tasks: list[TaskCreate]) -> list[TaskRef]:
        return await self._write_tasks("POST", tasks)

    async def get_task(self, *, task_id: int) -> Task:
        """The task as Kommo holds it now; KommoNotFound when it no longer exists."""
        path = f"/api/v4/tasks/{task_id}"
        return _read(Task, await self._get(path, {}), where=f"GET {path}", entity="task")

    async def update_tasks(self, *, patches: list[TaskPatch]) -> list[TaskRef]:
        return await self._write_tasks("PATCH", patches)

    async def _write_tasks(
        self, method: str, items: list[TaskCreate] | list[TaskPatch]
    ) -> list[TaskRef]:
        path = "/api/v4/tasks"
        body = [item.model_dump(mode="json", exclude_none=True) for item in items]
        response = await self._request(method, path, json=body)
        data = _json(response, f"{method} {path}")
        return _read(TaskRefs, data, where=f"{method} {path}").embedded.tasks

    async def _get(self, path: str, params: Any) -> Any:
        response = await self._request("GET", path, params=params)
        if response.status_code == httpx.codes.NO_CONTENT:
            raise KommoNotFound(UPSTREAM, f"{path}: Kommo has no such record", status=204)
        return _json(response, f"GET {path}")

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await send(
            self._http, UPSTREAM, method, path, transient=KommoTransientError, **kwargs
        )
        _raise_for_status(method, path, response)
        return response


def _by_ids(ids: list[int]) -> list[tuple[str, str | int]]:
    params: list[tuple[str, str | int]] = [("filter[id][]", i) for i in dict.fromkeys(ids)]
    params.append(("limit", PAGE_LIMIT))
    return params


def _absent(entity: str, ident: int) -> KommoNotFound:
    """What GET /api/v4/{entity}s/{id} answers with 204, for an id a list read left out."""
    return KommoNotFound(UPSTREAM, f"Kommo has no {entity} {ident}", status=204)


def _lead_id(patch: LeadPatch) -> int:
    return patch.id


def _embedded_items(data: Any, key: str, *, where: str) -> list[Any]:
    embedded = data.get("_embedded") if isinstance(data, dict) else None
    items = embedded.get(key) if isinstance(embedded, dict) else None
    if not isinstance(items, list):
        raise KommoUnreadable(UPSTREAM, f"Kommo answer has no _embedded.{key} list ({where})")
    return items


def _json(response: httpx.Response, where: str) -> Any:
    """A 2xx body that is not JSON is a page from something between us and Kommo (a proxy, a
    maintenance page), not Kommo's API speaking: worth another try later."""
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type")
        raise KommoTransientError(
            UPSTREAM,
            f"{where} answered {response.status_code} with a body that is not JSON ({kind})",
            status=response.status_code,
        ) from None


def _read(model: type[M], data: Any, *, where: str, entity: str | None = None) -> M:
    """Validate a Kommo answer; what it lacks is reported by entity and field, not as a dump."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise unreadable(exc, data, where=where, entity=entity) from None


def unreadable(
    exc: ValidationError, data: Any, *, where: str, entity: str | None
) -> KommoUnreadable:
    problems = exc.errors()
    first = problems[0]
    subject, field = _locate(first["loc"], data, entity)
    if first["type"] == "missing":
        what = f"has no {field}"
    else:
        what = f"has an unreadable {field}: {first['msg'][:1].lower()}{first['msg'][1:]}"
    more = f"; and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
    return KommoUnreadable(UPSTREAM, f"Kommo {subject} {what} ({where}){more}")


def _locate(loc: tuple[int | str, ...], data: Any, entity: str | None) -> tuple[str, str]:
    """('_embedded', 'elements', 0, 'name') → ('catalog element 525439', 'name')."""
    subjects = [_named(entity, data)] if entity else []
    node, field_start = data, 0
    for index, part in enumerate(loc):
        parent_key = loc[index - 1] if index else None
        node = _child(node, part)
        if isinstance(part, int) and parent_key in _ITEM_ENTITIES:
            subjects.append(_named(_ITEM_ENTITIES[str(parent_key)], node))
            field_start = index + 1
    field = ".".join(str(p) for p in loc[field_start:]) or "value"
    return ", ".join(subjects) or "answer", field


def _child(node: Any, part: int | str) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    return None


def _named(entity: str, node: Any) -> str:
    ident = node.get("id") if isinstance(node, dict) else None
    return f"{entity} {ident}" if ident is not None else entity


def _raise_for_status(method: str, path: str, response: httpx.Response) -> None:
    status = response.status_code
    if status < 300:
        return
    where = f"{method} {path} → {status}"
    # 401 even after the auth flow's one forced refresh is a token race or a grant about to be
    # marked dead: the ladder (or parking) fits it; no sales manager can fix it.
    if status in (401, 429) or status >= 500:
        raise KommoTransientError(
            UPSTREAM, f"{where}", status=status, retry_after=retry_after_seconds(response)
        )
    if status == 404:
        raise KommoNotFound(UPSTREAM, f"{where}: not found", status=status)
    raise KommoRequestError(UPSTREAM, f"{where}: {_problem_detail(response)}", status=status)


def _problem_detail(response: httpx.Response) -> str:
    """Kommo's problem+json `detail` plus each validation error; an HTML 403 means a block."""
    try:
        problem = response.json()
    except ValueError:
        if response.status_code == 403:
            return (
                "Kommo refused access (HTML 403: the account or IP may be blocked; contact Kommo)"
            )
        return response.text[:200]
    if not isinstance(problem, dict):
        return str(problem)[:200]
    parts = [str(problem.get("detail") or problem.get("title") or "error")]
    if problem.get("hint"):
        parts.append(str(problem["hint"]))
    for item in problem.get("validation-errors") or []:
        for err in item.get("errors", []):
            parts.append(f"{err.get('path')}: {err.get('detail')} ({err.get('code')})")
    return "; ".join(parts)
