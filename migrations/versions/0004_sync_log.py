"""sync log

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 02:19:28.622160
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    
    op.create_table('sync_records',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('deal_id', sa.String(length=64), nullable=False),
    sa.Column('record', sa.String(length=32), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['inbox_events.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sync_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sync_records_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_sync_records_deal_id'), ['deal_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sync_records_event_id'), ['event_id'], unique=False)

    


def downgrade() -> None:
    
    with op.batch_alter_table('sync_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sync_records_event_id'))
        batch_op.drop_index(batch_op.f('ix_sync_records_deal_id'))
        batch_op.drop_index(batch_op.f('ix_sync_records_at'))

    op.drop_table('sync_records')
    
