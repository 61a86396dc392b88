"""after the invoice: reissues and voids done once, the money shown on the deal, the reports

Revision ID: 0012_after_invoice
Revises: 0011_alerts
Create Date: 2026-12-08 09:00:00

invoice_adjustments holds what the bridge did to an invoice after raising it (a credit note that
cancels it before a new invoice, or a void), one per kind and invoice, written before the call to
Sage. deal_invoices.revision counts a deal's reissued invoices; shown_money is what its money
fields show. reconciliation_reports keeps each run of the daily report.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_after_invoice"
down_revision: str | None = "0011_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("deal_invoices") as batch:
        batch.add_column(sa.Column("revision", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(sa.Column("shown_money", sa.JSON(), nullable=True))
    op.create_table(
        "invoice_adjustments",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("crm", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("deal_id", sa.String(64), nullable=False),
        sa.Column("event_id", BigId, sa.ForeignKey("inbox_events.id"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("invoice_id", sa.String(64), nullable=False),
        sa.Column("invoice_number", sa.String(64), nullable=True),
        sa.Column("invoice_reference", sa.String(64), nullable=False),
        sa.Column("contact_id", sa.String(64), nullable=True),
        sa.Column("amount", sa.Numeric(14, 2), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("document_id", sa.String(64), nullable=True),
        sa.Column("document_number", sa.String(64), nullable=True),
        sa.Column("idempotency_key", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("kind", "invoice_id", name="uq_invoice_adjustment"),
    )
    op.create_index(
        "ix_invoice_adjustments_deal", "invoice_adjustments", ["crm", "account_id", "deal_id"]
    )
    op.create_table(
        "reconciliation_reports",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("rows", sa.JSON(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
    )
    op.create_index(
        "ix_reconciliation_reports_started_at", "reconciliation_reports", ["started_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_reconciliation_reports_started_at", table_name="reconciliation_reports")
    op.drop_table("reconciliation_reports")
    op.drop_index("ix_invoice_adjustments_deal", table_name="invoice_adjustments")
    op.drop_table("invoice_adjustments")
    with op.batch_alter_table("deal_invoices") as batch:
        batch.drop_column("shown_money")
        batch.drop_column("revision")
