"""payment status on deal invoices, sync cursors

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:58:10.452352
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    
    op.create_table('sync_cursors',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('deal_invoices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payment_status', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('status_source_updated_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('outstanding_amount', sa.Numeric(precision=14, scale=2), nullable=True))
        batch_op.add_column(sa.Column('due_date', sa.Date(), nullable=True))

    


def downgrade() -> None:
    
    with op.batch_alter_table('deal_invoices', schema=None) as batch_op:
        batch_op.drop_column('due_date')
        batch_op.drop_column('outstanding_amount')
        batch_op.drop_column('status_source_updated_at')
        batch_op.drop_column('payment_status')

    op.drop_table('sync_cursors')
    
