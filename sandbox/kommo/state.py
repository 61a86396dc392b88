"""In-memory Kommo account: pipelines, fields, contacts, catalogs, leads, tasks, webhooks."""

from __future__ import annotations

import itertools
import threading

from sandbox.common.ids import Clock, utc_now
from sandbox.kommo.models import (
    Account,
    Catalog,
    Contact,
    CustomField,
    Lead,
    Pipeline,
    Task,
    User,
    Webhook,
)

FIRST_TASK_ID = 8000001


class KommoState:
    """Every read and write happens under ``lock`` (an RLock), in synchronous code."""

    def __init__(self, account: Account, admin: User, *, clock: Clock = utc_now) -> None:
        self.lock = threading.RLock()
        self.account = account
        self.users: dict[int, User] = {admin.id: admin}
        self.admin_user_id = admin.id
        self.pipelines: dict[int, Pipeline] = {}
        self.lead_fields: dict[int, CustomField] = {}
        self.contact_fields: dict[int, CustomField] = {}
        self.contacts: dict[int, Contact] = {}
        self.catalogs: dict[int, Catalog] = {}
        self.leads: dict[int, Lead] = {}
        # Leads deleted in the UI: gone from reads (204), listed with `with=only_deleted`.
        self.deleted_leads: dict[int, Lead] = {}
        self.tasks: dict[int, Task] = {}
        self.webhooks: dict[int, Webhook] = {}
        self.clock = clock
        self._task_ids = itertools.count(FIRST_TASK_ID)
        self._webhook_ids = itertools.count(1)

    def now(self) -> int:
        return int(self.clock().timestamp())

    def next_task_id(self) -> int:
        return next(self._task_ids)

    def next_webhook_id(self) -> int:
        return next(self._webhook_ids)

    def lead_field(self, field_id: object = None, code: object = None) -> CustomField | None:
        if field_id is not None:
            return self.lead_fields.get(field_id) if isinstance(field_id, int) else None
        return next((f for f in self.lead_fields.values() if code and f.code == code), None)

    def continue_ids(self) -> None:
        """After records were loaded into this state: new ids follow the highest held."""
        self._task_ids = itertools.count(max(self.tasks, default=FIRST_TASK_ID - 1) + 1)
        self._webhook_ids = itertools.count(max(self.webhooks, default=0) + 1)
