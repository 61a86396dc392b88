"""Validating and applying ``POST`` and ``PATCH /api/v4/tasks`` items (JSON arrays,
all-or-nothing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeGuard

from sandbox.kommo.errors import FieldError, KommoError
from sandbox.kommo.models import Task
from sandbox.kommo.state import KommoState

ENTITY_TYPES = frozenset({"leads", "contacts", "companies", "customers"})
# Built-in task types: 1 = Follow-up, 2 = Meeting.
TASK_TYPES = frozenset({1, 2})
BLANK = "This value should not be blank."


def create_tasks(
    state: KommoState, items: Any, *, now: int, user_id: int
) -> list[tuple[Task, str]]:
    """Validate every item, then create them; returns (task, request_id) pairs."""
    batch = _validated(items, lambda item: _item_errors(state, item))
    return [(_task(state, item, now, user_id), _request_id(item, i)) for i, item in batch]


def _request_id(item: Any, index: int) -> str:
    given = item.get("request_id") if isinstance(item, dict) else None
    return str(given) if given is not None else str(index)


def _item_errors(state: KommoState, item: Any) -> list[FieldError]:
    if not isinstance(item, dict):
        return [FieldError("InvalidType", "", "Expected an object")]
    errors = _text_errors(item, required=True)
    if "complete_till" not in item:
        errors.append(FieldError("NotBlank", "complete_till", BLANK))
    return errors + _deadline_errors(item) + _link_errors(state, item) + _choice_errors(state, item)


def _text_errors(item: dict[str, Any], *, required: bool) -> list[FieldError]:
    if "text" not in item and not required:
        return []
    if not isinstance(item.get("text"), str) or not item["text"].strip():
        return [FieldError("NotBlank", "text", BLANK)]
    return []


def _deadline_errors(item: dict[str, Any]) -> list[FieldError]:
    if "complete_till" in item and not _is_int(item["complete_till"]):
        return [FieldError("InvalidType", "complete_till", "This value should be of type int.")]
    return []


def _choice_errors(state: KommoState, item: dict[str, Any]) -> list[FieldError]:
    errors: list[FieldError] = []
    if "task_type_id" in item and item["task_type_id"] not in TASK_TYPES:
        errors.append(FieldError("NotSupportedChoice", "task_type_id", "Unknown task type."))
    if "responsible_user_id" in item and item["responsible_user_id"] not in state.users:
        errors.append(FieldError("NotSupportedChoice", "responsible_user_id", "Unknown user."))
    return errors


def _link_errors(state: KommoState, item: dict[str, Any]) -> list[FieldError]:
    entity_type, entity_id = item.get("entity_type"), item.get("entity_id")
    if entity_type is None and entity_id is None:
        return []
    if entity_type not in ENTITY_TYPES:
        return [FieldError("NotSupportedChoice", "entity_type", "Unknown entity type.")]
    if not _is_int(entity_id) or not _entity_exists(state, str(entity_type), entity_id):
        return [FieldError("NotFound", "entity_id", "Entity not found")]
    return []


def _entity_exists(state: KommoState, entity_type: str, entity_id: int) -> bool:
    """Leads and contacts are simulated; companies and customers are taken on trust."""
    if entity_type == "leads":
        return entity_id in state.leads
    if entity_type == "contacts":
        return entity_id in state.contacts
    return True


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _task(state: KommoState, item: dict[str, Any], now: int, user_id: int) -> Task:
    task = Task(
        id=state.next_task_id(),
        text=item["text"],
        complete_till=item["complete_till"],
        entity_id=item.get("entity_id"),
        entity_type=item.get("entity_type"),
        responsible_user_id=item.get("responsible_user_id", user_id),
        task_type_id=item.get("task_type_id", 1),
        duration=int(item.get("duration", 0)),
        created_by=user_id,
        created_at=now,
    )
    state.tasks[task.id] = task
    return task


def update_tasks(
    state: KommoState, items: Any, *, now: int, user_id: int
) -> list[tuple[Task, str]]:
    """Validate every edit (a new text, completion with a result), then apply them all."""
    batch = _validated(items, lambda item: _edit_errors(state, item))
    return [(_edit(state, item, now, user_id), _request_id(item, i)) for i, item in batch]


def _validated(
    items: Any, errors_of: Callable[[Any], list[FieldError]]
) -> list[tuple[int, dict[str, Any]]]:
    """A batch is a non-empty array, and nothing of it is applied unless every item is valid:
    the 400 names each bad item by its request_id."""
    if not isinstance(items, list) or not items:
        error = FieldError("InvalidType", "", "Expected a non-empty array")
        raise KommoError.validation({"0": [error]})
    errors = {
        _request_id(item, index): found
        for index, item in enumerate(items)
        if (found := errors_of(item))
    }
    if errors:
        raise KommoError.validation(errors)
    return list(enumerate(items))


def _edit_errors(state: KommoState, item: Any) -> list[FieldError]:
    if not isinstance(item, dict):
        return [FieldError("InvalidType", "", "Expected an object")]
    if not _is_int(item.get("id")) or item["id"] not in state.tasks:
        return [FieldError("NotFound", "id", "Task not found")]
    errors = _text_errors(item, required=False) + _deadline_errors(item)
    errors += _choice_errors(state, item)
    if "is_completed" in item and not isinstance(item["is_completed"], bool):
        errors.append(
            FieldError("InvalidType", "is_completed", "This value should be of type bool.")
        )
    result = item.get("result")
    if result is not None and not (
        isinstance(result, dict) and isinstance(result.get("text"), str)
    ):
        errors.append(
            FieldError("InvalidType", "result.text", "This value should be of type string.")
        )
    return errors


def _edit(state: KommoState, item: dict[str, Any], now: int, user_id: int) -> Task:
    """What the documented edits set: the text, deadline, type and manager, and completion with
    a result."""
    task = state.tasks[item["id"]]
    task.text = item.get("text", task.text)
    task.complete_till = item.get("complete_till", task.complete_till)
    task.task_type_id = item.get("task_type_id", task.task_type_id)
    task.responsible_user_id = item.get("responsible_user_id", task.responsible_user_id)
    task.is_completed = item.get("is_completed", task.is_completed)
    if item.get("result") is not None:
        task.result_text = item["result"]["text"]
    task.updated_at, task.updated_by = now, user_id
    return task
