"""widen sync_records.record and .action to 32 characters

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 04:40:00

The first version of 0004 made these columns varchar(16); "waiting_connection" (18) did not
fit, and parking an event on a dead grant failed at commit on PostgreSQL. 0004 was corrected
in place, so a database migrated with the first version still has varchar(16): this widens it.
On a database created with the corrected 0004 it changes nothing. SQLite does not enforce
varchar lengths, so there is nothing to do there (and no table rebuild for nothing).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("record", "action")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for column in COLUMNS:
        op.alter_column("sync_records", column, type_=sa.String(32), existing_nullable=False)


def downgrade() -> None:
    # Narrowing back would fail on rows that need the width; 0004 (as corrected) has 32 too.
    pass
