"""campaigns are a job kind of their own ("campaign"), no longer a personalization job with a plan

Jobs written before carry kind "personalization" and their plan in ``options["campaign"]``;
they become kind "campaign" (the options are read in Python: JSON queries differ between
SQLite and PostgreSQL).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('kind', sa.String), sa.column('options', sa.JSON))


def _move(old: str, new: str) -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(_jobs.c.id, _jobs.c.options).where(_jobs.c.kind == old)).all()
    ids = [job_id for job_id, options in rows if isinstance(options, dict) and 'campaign' in options]
    for start in range(0, len(ids), 500):
        bind.execute(_jobs.update().where(_jobs.c.id.in_(ids[start:start + 500])).values(kind=new))


def upgrade() -> None:
    _move('personalization', 'campaign')


def downgrade() -> None:
    _move('campaign', 'personalization')
