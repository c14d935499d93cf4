"""chained pipeline steps: the steps after the first (on pipelines and, as fired, on runs) and one row per
step of a run, unique per (run, lane, step) and per job, with row-level security

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same policy as migration 0008 gives every tenant table.
_CURRENT = "(SELECT current_setting('factory.tenant_id', true))"
VISIBLE = f"tenant_id = {_CURRENT} OR {_CURRENT} = '*'"


def upgrade() -> None:
    with op.batch_alter_table('pipelines', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chain', sa.JSON(), nullable=True))
    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('chain', sa.JSON(), nullable=True))
    op.create_table(
        'pipeline_run_steps',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('tenant_id', sa.String(length=64), nullable=False),
        sa.Column('run_id', sa.String(length=40), nullable=False),
        sa.Column('lane', sa.Integer(), nullable=False),
        sa.Column('step', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('job_id', sa.String(length=40), nullable=True),
        sa.Column('batch_id', sa.String(length=40), nullable=True),
        sa.Column('input_file_id', sa.String(length=40), nullable=True),
        sa.Column('output_file_id', sa.String(length=40), nullable=True),
        sa.Column('counts', sa.JSON(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['pipeline_runs.id'],
                                name=op.f('fk_pipeline_run_steps_run_id_pipeline_runs'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_pipeline_run_steps')),
        sa.UniqueConstraint('job_id', name='uq_pipeline_run_steps_job_id'),
        sa.UniqueConstraint('run_id', 'lane', 'step', name='uq_pipeline_run_steps_run_id_lane_step'),
    )
    with op.batch_alter_table('pipeline_run_steps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pipeline_run_steps_run_id'), ['run_id'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE pipeline_run_steps ENABLE ROW LEVEL SECURITY')
        op.execute('ALTER TABLE pipeline_run_steps FORCE ROW LEVEL SECURITY')
        op.execute(f'CREATE POLICY tenant_isolation ON pipeline_run_steps USING ({VISIBLE}) WITH CHECK ({VISIBLE})')


def downgrade() -> None:
    with op.batch_alter_table('pipeline_run_steps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pipeline_run_steps_run_id'))
    op.drop_table('pipeline_run_steps')
    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.drop_column('chain')
    with op.batch_alter_table('pipelines', schema=None) as batch_op:
        batch_op.drop_column('chain')
