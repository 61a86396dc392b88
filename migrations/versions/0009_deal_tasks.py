"""deal_tasks: the tasks the bridge opened, one open per deal and reason; inbox_events.task_reason

Revision ID: 0009_deal_tasks
Revises: 0008
Create Date: 2026-12-02 09:00:00

A still-open task for the same deal and reason is reused (its text updated) instead of opening
another; once the deal is invoiced the bridge completes its open tasks. The event keeps the
reason of the task it asks for.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_deal_tasks"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "deal_tasks",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column("crm", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("deal_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("event_id", BIG_ID, sa.ForeignKey("inbox_events.id"), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_deal_tasks_deal", "deal_tasks", ["crm", "account_id", "deal_id"])
    with op.batch_alter_table("inbox_events") as batch:
        batch.add_column(sa.Column("task_reason", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox_events") as batch:
        batch.drop_column("task_reason")
    op.drop_index("ix_deal_tasks_deal", table_name="deal_tasks")
    op.drop_table("deal_tasks")
