"""How the console writes times and durations (its templates' filters). Times are UTC."""

from __future__ import annotations

from datetime import datetime


def duration(seconds: float) -> str:
    """`0.8 s`, `42 s`, `3.5 min`, `2.1 h`, `3.0 days`."""
    magnitude = abs(seconds)
    if magnitude < 10:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    if magnitude < 120:
        return f"{seconds:.0f} s"
    if magnitude < 7200:
        return f"{seconds / 60:.1f} min"
    if magnitude < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "—"


def relative(moment: datetime | None, now: datetime) -> str:
    """`3.5 min ago` or `in 42 s`."""
    if moment is None:
        return "—"
    seconds = (moment - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"in {duration(seconds)}" if seconds > 0 else f"{duration(-seconds)} ago"


# An event's state in words, as the queue and the deal page say it.
STATE_WORDS = {
    "pending": "due now: a worker runs it next",
    "retrying": "a transient error: tried again at the next attempt",
    "waiting_connection": "waiting for a connection to be re-authorised; resumes by itself",
    "invoiced": "the invoice is in Sage and shown on the deal",
    "skipped": "nothing to do (another stage, or the deal left the stage)",
    "needs_mapping": "a product has no ledger rule; the manager has a Kommo task",
    "failed": "no invoice: the error below; the manager has a Kommo task",
    "applied": "a Sage payment status was applied to the deal",
    "discarded": "ended by ops, with the reason below",
}
