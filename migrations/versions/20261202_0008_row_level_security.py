"""row-level security on every tenant table (PostgreSQL; nothing on SQLite)

The repositories filter every query by tenant; this is the second wall behind them. On
each table with a ``tenant_id``, a row is visible and writable only when its tenant is the
setting ``factory.tenant_id`` (set per transaction for a request, ``factory.db.tenancy``),
or when that setting is ``'*'`` (system mode: every connection of the app starts in it, so
workers, the reconciler and the CLI see every tenant). Unset or empty, nothing is visible.
FORCE applies the policies to the tables' owner too; superusers and BYPASSRLS roles skip
them, so the app must connect as a role that is neither (README).

The setting is read through ``(SELECT current_setting(...))``: an InitPlan evaluated once
per query rather than a function call per row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = ('jobs', 'chunks', 'items', 'files', 'batches', 'templates', 'brand_profiles',
                 'augmentation_source_rows', 'augmentation_verdicts', 'idempotency_keys', 'api_keys')
POLICY = 'tenant_isolation'
_CURRENT = "(SELECT current_setting('factory.tenant_id', true))"
VISIBLE = f"tenant_id = {_CURRENT} OR {_CURRENT} = '*'"


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table in TENANT_TABLES:
        op.execute(f'ALTER TABLE {table} ENABLE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE {table} FORCE ROW LEVEL SECURITY')
        op.execute(f'CREATE POLICY {POLICY} ON {table} USING ({VISIBLE}) WITH CHECK ({VISIBLE})')


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table in TENANT_TABLES:
        op.execute(f'DROP POLICY IF EXISTS {POLICY} ON {table}')
        op.execute(f'ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY')
        op.execute(f'ALTER TABLE {table} DISABLE ROW LEVEL SECURITY')
