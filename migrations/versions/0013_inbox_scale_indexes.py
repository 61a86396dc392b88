"""inbox indexes for the sweeper and the sync log's counts at a million events

Revision ID: 0013_inbox_scale_indexes
Revises: 0012_after_invoice
Create Date: 2026-12-09 09:00:00

Measured with `python -m bench --only scale` (docs/PERFORMANCE.md, "Scale"): with 1 million
inbox rows the sweeper's query (due work, or a task to open) walked the primary key through
every finished event, and the sync log's counts for a time range read the whole table. A
partial index of the ids of the rows the sweeper looks for (a few percent of the table, so it
stays small) answers the first; an index on received_at serves every "since … until" count. Built CONCURRENTLY on PostgreSQL: a running
bridge keeps writing webhooks into the table meanwhile.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_inbox_scale_indexes"
down_revision: str | None = "0012_after_invoice"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As app.inbox.models.WORKABLE (a migration does not import the app's code).
WORKABLE = sa.text("state IN ('pending', 'retrying') OR task_state = 'pending'")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_inbox_events_workable",
            "inbox_events",
            ["id"],
            postgresql_where=WORKABLE,
            sqlite_where=WORKABLE,
            postgresql_concurrently=True,
        )
        op.create_index(
            "ix_inbox_events_received_at",
            "inbox_events",
            ["received_at"],
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_inbox_events_received_at", "inbox_events", postgresql_concurrently=True
        )
        op.drop_index("ix_inbox_events_workable", "inbox_events", postgresql_concurrently=True)
