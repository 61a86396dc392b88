"""An alert's words: the title (the email's subject) and the text (the email's body, and the
webhook's Slack-compatible `text`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.alerts.causes import ABOUT, Kind

# Items listed in one alert; a digest counts the rest and points to where they all are.
MAX_LISTED = 20


@dataclass(frozen=True)
class Message:
    title: str
    text: str


def compose(
    kind: Kind,
    items: list[dict[str, Any]],
    *,
    count: int,
    digest_since: datetime | None,
    every: timedelta,
) -> Message:
    about = ABOUT[kind]
    headline = about.one if count == 1 else about.many.format(n=count)
    title = f"Digest: {headline}" if digest_since else headline
    lines = [f"sagebridge: {title}"]
    if digest_since:
        minutes = int(every / timedelta(minutes=1))
        lines.append(
            f"Since the alert of {digest_since:%Y-%m-%d %H:%M} UTC (at most one alert per "
            f"cause every {minutes} minutes), {count} more:"
        )
    listed = items[:MAX_LISTED]
    lines += [f"- {item['text']}" for item in listed]
    if count > len(listed):
        lines.append(f"- and {count - len(listed)} more: GET /ops/retries, GET /ops/alerts")
    lines.append(f"What to do: {about.advice}")
    return Message(title=title[:255], text="\n".join(lines))
