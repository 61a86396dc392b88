"""mapping versions: the ledger mapping in force, and refused edits, in the database

Revision ID: 0007_mapping_versions
Revises: 0006
Create Date: 2026-11-29 11:14:57

Every process (API, workers, on any host) uses the newest mapping_versions row, so a replay after
a reload sees the new rules everywhere. mapping_refusals keeps refused edits for /ops/mappings.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_mapping_versions"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "mapping_versions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("replaces_id", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("rule_count", sa.Integer(), nullable=False),
        sa.Column("how", sa.String(length=16), nullable=False),
        sa.Column("loaded_by", sa.String(length=255), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("replaces_id", name="uq_mapping_version_replaces"),
    )
    with op.batch_alter_table("mapping_versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mapping_versions_sha256"), ["sha256"], unique=False)
    op.create_table(
        "mapping_refusals",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("how", sa.String(length=16), nullable=False),
        sa.Column("refused_by", sa.String(length=255), nullable=False),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("mapping_refusals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mapping_refusals_resolved_at"), ["resolved_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("mapping_refusals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mapping_refusals_resolved_at"))
    op.drop_table("mapping_refusals")
    with op.batch_alter_table("mapping_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mapping_versions_sha256"))
    op.drop_table("mapping_versions")
