"""event runs and task attempts

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 02:39:03.199005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    
    with op.batch_alter_table('inbox_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('task_attempts', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('runs', sa.Integer(), server_default='0', nullable=False))

    


def downgrade() -> None:
    
    with op.batch_alter_table('inbox_events', schema=None) as batch_op:
        batch_op.drop_column('runs')
        batch_op.drop_column('task_attempts')

    
