"""Kommo's webhook bodies as captured in public repositories (each fixture names its source):
the parser finds every entry, and the inbox stores the lead entries and only those."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.clients.kommo.webhook import parse_webhook
from app.inbox.intake import kommo_events

FIXTURES = sorted((Path(__file__).parent / "webhooks").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads(path.read_text())
    return fixture


def test_there_are_fixtures_and_each_names_its_source() -> None:
    assert len(FIXTURES) >= 5
    for path in FIXTURES:
        fixture = _load(path)
        assert {"source", "what", "body", "expected"} <= fixture.keys(), path.name
        assert "commit" in fixture["source"] or "docs" in fixture["source"], path.name


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_every_fixture_parses_into_its_entries_and_stored_events(path: Path) -> None:
    fixture = _load(path)
    expected = fixture["expected"]

    hook = parse_webhook(fixture["body"].encode())
    pipeline_id, status_id = expected["trigger"]
    events = kommo_events(
        hook,
        account_id=hook.account.id or "unknown",
        trigger_pipeline_id=pipeline_id,
        trigger_status_id=status_id,
    )

    account = {"id": hook.account.id, "subdomain": hook.account.subdomain}
    account["self_url"] = hook.account.self_url
    assert account == expected["account"]
    assert [[e.entity, e.action, e.entity_id] for e in hook.entries] == expected["entries"]
    stored = [[e.action, e.deal_id, e.pipeline_id, e.status_id, e.changed_at] for e in events]
    assert stored == expected["stored"]
    assert all(e.state == "pending" for e in events)
