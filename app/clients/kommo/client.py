"""Kommo API v4 client: typed, keyword-only, one shared httpx.AsyncClient."""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from app.clients.http import retry_after_seconds, send
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
M = TypeVar("M", bound=BaseModel)
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
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def get_lead(self, *, lead_id: int) -> Lead:
        path = f"/api/v4/leads/{lead_id}"
        data = await self._get(path, {"with": "contacts,catalog_elements"})
        return _read(Lead, data, where=f"GET {path}", entity="lead")

    async def get_contact(self, *, contact_id: int) -> Contact:
        path = f"/api/v4/contacts/{contact_id}"
        return _read(Contact, await self._get(path, {}), where=f"GET {path}", entity="contact")

    async def get_account(self) -> Account:
        path = "/api/v4/account"
        return _read(Account, await self._get(path, {}), where=f"GET {path}", entity="account")

    async def get_catalog_elements(
        self, *, catalog_id: int, element_ids: list[int]
    ) -> list[CatalogElement]:
        """The elements with these ids; a deleted or unknown id is simply not in the answer."""
        path = f"/api/v4/catalogs/{catalog_id}/elements"
        params: list[tuple[str, str | int]] = [("filter[id][]", i) for i in element_ids]
        params.append(("limit", PAGE_LIMIT))
        try:
            data = await self._get(path, params)
        except KommoNotFound:
            return []
        return _read(ElementsPage, data, where=f"GET {path}").embedded.elements

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
        body = update.model_dump(mode="json", exclude_none=True)
        await self._request("PATCH", f"/api/v4/leads/{lead_id}", json=body)

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
