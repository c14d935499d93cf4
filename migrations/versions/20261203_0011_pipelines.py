"""scheduled pipelines and their runs (unique per pipeline and slot), with row-level security

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('pipelines', 'pipeline_runs')
# The same policy as migration 0008 gives every tenant table.
_CURRENT = "(SELECT current_setting('factory.tenant_id', true))"
VISIBLE = f"tenant_id = {_CURRENT} OR {_CURRENT} = '*'"


def upgrade() -> None:
    op.create_table(
        'pipelines',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('tenant_id', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('schedule', sa.JSON(), nullable=False),
        sa.Column('job', sa.JSON(), nullable=False),
        sa.Column('input', sa.JSON(), nullable=True),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('concurrency', sa.String(length=16), nullable=False),
        sa.Column('catch_up', sa.String(length=16), nullable=False),
        sa.Column('webhook_url', sa.String(length=2048), nullable=True),
        sa.Column('next_fire_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('cursor_created_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('cursor_file_id', sa.String(length=40), nullable=True),
        sa.Column('revision', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_pipelines')),
        sa.UniqueConstraint('tenant_id', 'name', name='uq_pipelines_tenant_name'),
    )
    with op.batch_alter_table('pipelines', schema=None) as batch_op:
        batch_op.create_index('ix_pipelines_enabled_next_fire_at', ['enabled', 'next_fire_at'], unique=False)
    op.create_table(
        'pipeline_runs',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('tenant_id', sa.String(length=64), nullable=False),
        sa.Column('pipeline_id', sa.String(length=40), nullable=False),
        sa.Column('slot_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('trigger', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('jobs', sa.JSON(), nullable=False),
        sa.Column('counts', sa.JSON(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('missed', sa.Integer(), nullable=False),
        sa.Column('fired_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('webhook_attempts', sa.Integer(), nullable=False),
        sa.Column('webhook_delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('webhook_last_error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['pipeline_id'], ['pipelines.id'],
                                name=op.f('fk_pipeline_runs_pipeline_id_pipelines'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_pipeline_runs')),
        sa.UniqueConstraint('pipeline_id', 'slot_at', name='uq_pipeline_runs_pipeline_id_slot_at'),
    )
    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.create_index('ix_pipeline_runs_status', ['status'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        for table in TABLES:
            op.execute(f'ALTER TABLE {table} ENABLE ROW LEVEL SECURITY')
            op.execute(f'ALTER TABLE {table} FORCE ROW LEVEL SECURITY')
            op.execute(f'CREATE POLICY tenant_isolation ON {table} USING ({VISIBLE}) WITH CHECK ({VISIBLE})')


def downgrade() -> None:
    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_pipeline_runs_status')
    op.drop_table('pipeline_runs')
    with op.batch_alter_table('pipelines', schema=None) as batch_op:
        batch_op.drop_index('ix_pipelines_enabled_next_fire_at')
    op.drop_table('pipelines')
