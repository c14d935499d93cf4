"""items carry the sha256 of their text, indexed per tenant (where did this text come from?)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content_sha256', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_items_tenant_id_content_sha256', ['tenant_id', 'content_sha256'], unique=False)
    _backfill()


def _backfill() -> None:
    """Texts written before this revision get their hash too."""
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        op.execute("UPDATE items SET content_sha256 = encode(sha256(convert_to(text, 'UTF8')), 'hex') "
                   "WHERE state = 'succeeded' AND text IS NOT NULL")
        return
    items = sa.table('items', sa.column('id', sa.String), sa.column('text', sa.Text),
                     sa.column('state', sa.String), sa.column('content_sha256', sa.String))
    last = ''
    while True:  # pages by id, so memory stays flat on a large database
        rows = bind.execute(sa.select(items.c.id, items.c.text).where(
            items.c.id > last, items.c.state == 'succeeded', items.c.text.is_not(None))
            .order_by(items.c.id).limit(1000)).all()
        if not rows:
            return
        for item_id, text in rows:
            digest = hashlib.sha256(text.encode('utf-8')).hexdigest()
            bind.execute(items.update().where(items.c.id == item_id).values(content_sha256=digest))
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_tenant_id_content_sha256')
        batch_op.drop_column('content_sha256')
