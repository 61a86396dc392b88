"""The README documents every setting (the issue's definition of done for configuration)."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [name.upper() for name in Settings.model_fields if name.upper() not in README]
    assert missing == []


def test_every_setting_is_in_env_example_or_readme_only_by_choice() -> None:
    example = (Path(__file__).resolve().parent.parent / ".env.example").read_text()
    for required in ("KOMMO_WEBHOOK_SECRET", "SAGE_BUSINESS_ID", "DATABASE_URL", "OPS_API_TOKEN"):
        assert required in example
