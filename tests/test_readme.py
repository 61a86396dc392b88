"""The documentation documents every setting, and its links lead somewhere.

The README is the front page; the settings table lives in docs/CONFIGURATION.md (the issue's
definition of done for configuration)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "CONFIGURATION.md"
# The pages a user reads; every relative link in them must reach a file (and a heading).
PAGES = [
    README,
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "sandbox" / "README.md",
]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_setting_is_in_the_configuration_page() -> None:
    text = CONFIGURATION.read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in text]
    assert missing == []


def test_every_setting_is_in_env_example_or_readme_only_by_choice() -> None:
    example = (ROOT / ".env.example").read_text()
    for required in ("KOMMO_WEBHOOK_SECRET", "SAGE_BUSINESS_ID", "DATABASE_URL", "OPS_API_TOKEN"):
        assert required in example


def test_the_readme_is_a_front_page() -> None:
    """Short, with the two Quick start commands, the tour, reset, and a way to everything else."""
    text = README.read_text()
    assert len(text.splitlines()) <= 350
    for needed in ("make run", "make test", "make reset", "API_PORT", "DATA_DIR"):
        assert needed in text
    for page in ("CONFIGURATION", "OPERATIONS", "GUARANTEES", "SECURITY", "DEVELOPMENT"):
        assert f"(docs/{page}.md)" in text


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.MULTILINE)
    return {_anchor(h) for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_reach_a_file_and_a_heading(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a URL
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists() or (dest.suffix == ".md" and anchor not in {"", *_anchors(dest)}):
            broken.append(target)
    assert broken == []
