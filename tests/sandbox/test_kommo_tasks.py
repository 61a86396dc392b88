"""The sandbox Kommo's task reads and edits (GET /api/v4/tasks/{id}, PATCH /api/v4/tasks), in
the shapes Kommo documents (tests/contracts/kommo/task_get.json, tasks_patch.json)."""

from __future__ import annotations

import httpx

from sandbox.seed import LEAD_SAMPLE
from tests.contracts.kommo.shapes import load, shape_problems


async def open_one(client: httpx.AsyncClient) -> int:
    body = [{"text": "Check", "complete_till": 1, "entity_type": "leads", "entity_id": LEAD_SAMPLE}]
    created = await client.post("/api/v4/tasks", json=body)
    task_id: int = created.json()["_embedded"]["tasks"][0]["id"]
    return task_id


async def test_a_task_is_edited_then_completed_with_a_result(
    kommo_client: httpx.AsyncClient,
) -> None:
    task_id = await open_one(kommo_client)
    before = (await kommo_client.get(f"/api/v4/tasks/{task_id}")).json()

    edited = await kommo_client.patch("/api/v4/tasks", json=[{"id": task_id, "text": "New"}])
    done = {"id": task_id, "is_completed": True, "result": {"text": "Invoiced"}}
    completed = await kommo_client.patch("/api/v4/tasks", json=[done])
    after = await kommo_client.get(f"/api/v4/tasks/{task_id}")

    assert (before["text"], before["is_completed"], before["result"]) == ("Check", False, [])
    assert edited.status_code == completed.status_code == 200
    assert shape_problems(load("tasks_patch.json"), completed.json()) == []
    assert [t["id"] for t in completed.json()["_embedded"]["tasks"]] == [task_id]
    assert shape_problems(load("task_get.json"), after.json()) == []
    body = after.json()
    assert (body["text"], body["is_completed"], body["result"]) == (
        "New",
        True,
        {"text": "Invoiced"},
    )


async def test_an_unknown_task_is_204_and_a_bad_edit_changes_nothing(
    kommo_client: httpx.AsyncClient,
) -> None:
    task_id = await open_one(kommo_client)

    missing = await kommo_client.get("/api/v4/tasks/999999")
    refused = await kommo_client.patch(
        "/api/v4/tasks",
        json=[{"id": task_id, "is_completed": True}, {"id": 999999, "text": "x"}],
    )
    task = (await kommo_client.get(f"/api/v4/tasks/{task_id}")).json()

    assert (missing.status_code, missing.content) == (204, b"")
    assert refused.status_code == 400
    assert refused.json()["validation-errors"] == [
        {
            "request_id": "1",
            "errors": [{"code": "NotFound", "path": "id", "detail": "Task not found"}],
        }
    ]
    assert task["is_completed"] is False


async def test_an_edit_is_checked_as_a_new_task_is(kommo_client: httpx.AsyncClient) -> None:
    task_id = await open_one(kommo_client)
    edit = {"id": task_id, "text": " ", "complete_till": "tomorrow", "task_type_id": 9}

    refused = await kommo_client.patch("/api/v4/tasks", json=[edit])
    task = (await kommo_client.get(f"/api/v4/tasks/{task_id}")).json()

    assert refused.status_code == 400
    [item] = refused.json()["validation-errors"]
    assert [(e["code"], e["path"]) for e in item["errors"]] == [
        ("NotBlank", "text"),
        ("InvalidType", "complete_till"),
        ("NotSupportedChoice", "task_type_id"),
    ]
    assert (task["text"], task["complete_till"], task["task_type_id"]) == ("Check", 1, 1)
