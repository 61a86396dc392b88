"""inbox_events.pipeline_id, status_id and responsible_user_id as text

Revision ID: 0010_text_crm_ids
Revises: 0009_deal_tasks
Create Date: 2026-12-02 10:00:00

The CRM port speaks in the CRM's own identifiers as text: Kommo's are numbers, the next CRMs'
are 19-digit ids and stage names. Existing values become their decimal text ("503"), which is
what the dedupe keys already hold, so every stored event keeps its key. Downgrading needs every
value to be a number again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_text_crm_ids"
down_revision: str | None = "0009_deal_tasks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("pipeline_id", "status_id", "responsible_user_id")


def upgrade() -> None:
    with op.batch_alter_table("inbox_events") as batch:
        for column in COLUMNS:
            batch.alter_column(
                column,
                existing_type=sa.BigInteger(),
                type_=sa.String(64),
                existing_nullable=True,
                postgresql_using=f"{column}::text",
            )


def downgrade() -> None:
    with op.batch_alter_table("inbox_events") as batch:
        for column in COLUMNS:
            batch.alter_column(
                column,
                existing_type=sa.String(64),
                type_=sa.BigInteger(),
                existing_nullable=True,
                postgresql_using=f"{column}::bigint",
            )
