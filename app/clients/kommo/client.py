"""Kommo API v4 client: typed, keyword-only, one shared httpx.AsyncClient."""

from __future__ import annotations

from typing import Any

import httpx

from app.clients.http import retry_after_seconds, send
from app.clients.kommo.errors import KommoNotFound, KommoRequestError, KommoTransientError
from app.clients.kommo.schemas import (
    Catalog,
    CatalogElement,
    CatalogElementsPage,
    CatalogsPage,
    Contact,
    CreatedTask,
    ElementsPage,
    Lead,
    LeadPatch,
    LeadsPage,
    LeadUpdate,
    TaskCreate,
    TasksCreated,
    Webhook,
    WebhooksPage,
)

UPSTREAM = "kommo"
PAGE_LIMIT = 250


class KommoClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def get_lead(self, *, lead_id: int) -> Lead:
        data = await self._get(f"/api/v4/leads/{lead_id}", {"with": "contacts,catalog_elements"})
        return Lead.model_validate(data)

    async def get_contact(self, *, contact_id: int) -> Contact:
        return Contact.model_validate(await self._get(f"/api/v4/contacts/{contact_id}", {}))

    async def get_catalog_elements(
        self, *, catalog_id: int, element_ids: list[int]
    ) -> list[CatalogElement]:
        params: list[tuple[str, str | int]] = [("filter[id][]", i) for i in element_ids]
        params.append(("limit", PAGE_LIMIT))
        try:
            data = await self._get(f"/api/v4/catalogs/{catalog_id}/elements", params)
        except KommoNotFound:
            return []
        return CatalogElementsPage.model_validate(data).embedded.elements

    async def list_catalogs(self) -> list[Catalog]:
        try:
            data = await self._get("/api/v4/catalogs", {"limit": PAGE_LIMIT})
        except KommoNotFound:
            return []
        return CatalogsPage.model_validate(data).embedded.catalogs

    async def catalog_elements_page(self, *, catalog_id: int, page: int) -> ElementsPage:
        params = {"page": page, "limit": PAGE_LIMIT}
        try:
            data = await self._get(f"/api/v4/catalogs/{catalog_id}/elements", params)
        except KommoNotFound:
            return ElementsPage()
        return ElementsPage.model_validate(data)

    async def update_lead(self, *, lead_id: int, update: LeadUpdate) -> None:
        body = update.model_dump(mode="json", exclude_none=True)
        await self._request("PATCH", f"/api/v4/leads/{lead_id}", json=body)

    async def leads_in_stage(
        self, *, pipeline_id: int, status_id: int, updated_from: int, page: int
    ) -> LeadsPage:
        """One page of leads now in the stage and updated at or after `updated_from`."""
        params: dict[str, str | int] = {
            "filter[statuses][0][pipeline_id]": pipeline_id,
            "filter[statuses][0][status_id]": status_id,
            "filter[updated_at][from]": updated_from,
            "page": page,
            "limit": PAGE_LIMIT,
        }
        try:
            return LeadsPage.model_validate(await self._get("/api/v4/leads", params))
        except KommoNotFound:  # 204: no leads
            return LeadsPage()

    async def update_leads(self, *, patches: list[LeadPatch]) -> None:
        body = [p.model_dump(mode="json", exclude_none=True) for p in patches]
        await self._request("PATCH", "/api/v4/leads", json=body)

    async def list_webhooks(self) -> list[Webhook]:
        try:
            data = await self._get("/api/v4/webhooks", {})
        except KommoNotFound:
            return []
        return WebhooksPage.model_validate(data).embedded.webhooks

    async def create_tasks(self, *, tasks: list[TaskCreate]) -> list[CreatedTask]:
        body = [t.model_dump(mode="json", exclude_none=True) for t in tasks]
        response = await self._request("POST", "/api/v4/tasks", json=body)
        return TasksCreated.model_validate(response.json()).embedded.tasks

    async def _get(self, path: str, params: Any) -> Any:
        response = await self._request("GET", path, params=params)
        if response.status_code == httpx.codes.NO_CONTENT:
            raise KommoNotFound(UPSTREAM, f"{path}: Kommo has no such record", status=204)
        return response.json()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await send(
            self._http, UPSTREAM, method, path, transient=KommoTransientError, **kwargs
        )
        _raise_for_status(method, path, response)
        return response


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
