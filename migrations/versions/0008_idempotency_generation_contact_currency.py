"""deal_invoices.idempotency_generation and contact_links.currency

Revision ID: 0008
Revises: 0007_mapping_versions
Create Date: 2026-12-01 10:00:00

A definitive refusal of a sales invoice POST closes its idempotency key; the generation counts
closed keys so the next attempt derives a new one. The contact's trading currency is kept with
its link so a reused customer's currency is known without asking Sage on every invoice.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007_mapping_versions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deal_invoices") as batch:
        batch.add_column(
            sa.Column("idempotency_generation", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("contact_links") as batch:
        batch.add_column(sa.Column("currency", sa.String(3), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contact_links") as batch:
        batch.drop_column("currency")
    with op.batch_alter_table("deal_invoices") as batch:
        batch.drop_column("idempotency_generation")
