"""``/api/v4/tasks``: create or edit a batch (all-or-nothing), read one, list with filters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response

from sandbox.kommo import render
from sandbox.kommo.deps import BodyDep, SandboxDep, SiteDep, UserDep
from sandbox.kommo.errors import HalResponse, no_content
from sandbox.kommo.models import Task
from sandbox.kommo.query import int_values, optional_int, paged
from sandbox.kommo.sandbox import KommoSandbox
from sandbox.kommo.tasks import create_tasks, update_tasks

router = APIRouter(prefix="/api/v4", tags=["kommo tasks"])
Batch = Callable[..., list[tuple[Task, str]]]


@router.post("/tasks", response_model=None)
async def post_tasks(body: BodyDep, sandbox: SandboxDep, user: UserDep, site: SiteDep) -> Response:
    return _apply(sandbox, site, create_tasks, body, user, updated=False)


@router.patch("/tasks", response_model=None)
async def patch_tasks(body: BodyDep, sandbox: SandboxDep, user: UserDep, site: SiteDep) -> Response:
    return _apply(sandbox, site, update_tasks, body, user, updated=True)


def _apply(
    sandbox: KommoSandbox, site: str, batch: Batch, body: Any, user: int, *, updated: bool
) -> Response:
    """Apply a batch all-or-nothing; answer with each task's id (and updated_at for an edit)
    and request_id, as POST and PATCH /api/v4/tasks do."""
    state = sandbox.state
    with state.lock:
        tasks = batch(state, body, now=state.now(), user_id=user)
    items = [
        {
            "id": task.id,
            **({"updated_at": task.updated_at} if updated else {}),
            "request_id": request_id,
            "_links": render.links(site, f"/tasks/{task.id}"),
        }
        for task, request_id in tasks
    ]
    return HalResponse({"_links": render.links(site, "/tasks"), "_embedded": {"tasks": items}})


@router.get("/tasks/{task_id:int}", response_model=None)
def get_task(task_id: int, sandbox: SandboxDep, _user: UserDep, site: SiteDep) -> Response:
    state = sandbox.state
    with state.lock:
        task = state.tasks.get(task_id)
        return HalResponse(render.task(state, task, site=site)) if task else no_content()


@router.get("/tasks", response_model=None)
def list_tasks(request: Request, sandbox: SandboxDep, _user: UserDep, site: SiteDep) -> Response:
    params, state = request.query_params, sandbox.state
    wanted = _TaskFilter(
        entity_type=params.get("filter[entity_type]"),
        entity_ids=set(int_values(params, "filter[entity_id]")),
        responsible=set(int_values(params, "filter[responsible_user_id]")),
        completed=optional_int(params, "filter[is_completed]"),
    )
    with state.lock:
        items = [
            render.task(state, task, site=site)
            for task in state.tasks.values()
            if wanted.matches(task)
        ]
    return paged(items, params, site=site, path="/api/v4/tasks", key="tasks")


class _TaskFilter:
    def __init__(
        self,
        *,
        entity_type: str | None,
        entity_ids: set[int],
        responsible: set[int],
        completed: int | None,
    ) -> None:
        self.entity_type = entity_type
        self.entity_ids = entity_ids
        self.responsible = responsible
        self.completed = completed

    def matches(self, task: Task) -> bool:
        return (
            (not self.entity_type or task.entity_type == self.entity_type)
            and (not self.entity_ids or task.entity_id in self.entity_ids)
            and (not self.responsible or task.responsible_user_id in self.responsible)
            and (self.completed is None or task.is_completed == bool(self.completed))
        )
