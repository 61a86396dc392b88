"""In-memory Sage: businesses, each with its own book, and the user's access to them."""

from __future__ import annotations

import threading
from datetime import datetime

from sandbox.common.ids import Clock, utc_now
from sandbox.sage.errors import SageError
from sandbox.sage.models import Book, Business


class SageState:
    """Every read and write happens under ``lock`` (an RLock), in synchronous code.

    The sandbox has one user. ``granted`` lists the businesses that user can open, the first
    being the *lead business* Sage falls back to when a request has no ``X-Business``.
    """

    def __init__(self, *, clock: Clock = utc_now) -> None:
        self.lock = threading.RLock()
        self.books: dict[str, Book] = {}
        self.granted: list[str] = []
        self._clock = clock

    def now(self) -> datetime:
        """Sage timestamps have whole seconds; ``updated_or_created_since`` compares those."""
        return self._clock().replace(microsecond=0)

    def add_business(self, business: Business, *, granted: bool = True) -> Book:
        with self.lock:
            book = Book(business=business)
            self.books[business.id] = book
            if granted:
                self.granted.append(business.id)
        return book

    @property
    def lead_business_id(self) -> str | None:
        return self.granted[0] if self.granted else None

    def book_for(self, business_id: str | None) -> Book:
        """The book an ``X-Business`` value (or its absence) selects, as Sage resolves it."""
        chosen = business_id or self.lead_business_id
        if chosen is None or chosen not in self.books:
            raise SageError.one(404, "RecordNotFound", "Business not found.", "X-Business")
        if chosen not in self.granted:
            raise SageError.one(
                403, "AccessDenied", "You do not have access to this business.", "X-Business"
            )
        return self.books[chosen]
