"""Which tenant's rows a PostgreSQL connection may see: the setting row-level security reads.

The repositories filter every query by tenant; on PostgreSQL, row-level security is the
second wall behind them (migration 0008): on every table with a ``tenant_id``, a row is
visible and writable only when its ``tenant_id`` equals the setting ``factory.tenant_id``,
or when that setting is ``'*'`` (system mode). Unset or empty, nothing is visible.

- Every connection of the app's engine starts in system mode (``start_in_system_mode``, a
  connect event in ``factory.db.session``): workers, the reconciler and the CLI work on
  every tenant's rows and need nothing else.
- A request session is bound to its tenant (``bind_tenant``): at the start of each of its
  transactions, the ``after_begin`` hook below sets the tenant for that transaction only
  (``set_config(..., true)``), so when the transaction ends the pooled connection is back
  in system mode for its next user, and a transaction begun after a commit is bound again.

SQLite has no row-level security; there the hook does nothing and the repositories'
filters are the only wall.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger(__name__)

SETTING = "factory.tenant_id"
SYSTEM = "*"  # the setting's value that sees every tenant's rows; never a tenant id
_INFO_KEY = "tenant_id"
_SET_FOR_TRANSACTION = text(f"SELECT set_config('{SETTING}', :tenant, true)")


def bind_tenant(session: Session, tenant_id: str) -> Session:
    """Restrict ``session`` to ``tenant_id``'s rows (on PostgreSQL), from now on and after every commit."""
    if not tenant_id or tenant_id == SYSTEM:
        raise ValueError("a session is bound to one real tenant id")
    session.info[_INFO_KEY] = tenant_id
    if session.in_transaction():  # already begun: after_begin has passed, bind this transaction now
        _set_for_transaction(session.connection(), tenant_id)
    return session


def bound_tenant(session: Session) -> str | None:
    """The tenant a session is bound to, or None for a system session."""
    tenant: str | None = session.info.get(_INFO_KEY)
    return tenant


def start_in_system_mode(dbapi_connection: Any) -> None:
    """Set system mode for a new PostgreSQL connection's whole life (a session-level SET, committed at once)."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True  # a SET inside a transaction that rolls back would be undone
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET {SETTING} = '{SYSTEM}'")
    finally:
        dbapi_connection.autocommit = autocommit


def role_bypasses_rls(connection: Connection) -> bool:
    """Whether the connected PostgreSQL role skips row-level security (superuser or BYPASSRLS)."""
    row = connection.execute(text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"))
    return bool(row.scalar())


def warn_if_rls_bypassed(engine: Engine) -> bool:
    """Log one warning when the engine's PostgreSQL role skips row-level security; says whether it does."""
    if engine.dialect.name != "postgresql":
        return False
    with engine.connect() as connection:
        bypassed = role_bypasses_rls(connection)
    if bypassed:
        log.warning("the database role is a superuser or has BYPASSRLS, so row-level security does not apply: "
                    "tenants are kept apart by the repositories' filters alone; connect as a role without "
                    "either (README: Tenants and row-level security)")
    return bypassed


def _set_for_transaction(connection: Connection, tenant_id: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(_SET_FOR_TRANSACTION, {"tenant": tenant_id})


@event.listens_for(Session, "after_begin")
def _bind_transaction(session: Session, _transaction: SessionTransaction, connection: Connection) -> None:
    tenant_id = bound_tenant(session)
    if tenant_id is not None:
        _set_for_transaction(connection, tenant_id)
