"""Alembic environment: the URL comes from the caller or FACTORY_DATABASE_URL."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine, pool

from factory.config import get_settings
from factory.db import models  # noqa: F401  (registers every table)
from factory.db.base import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render our UTCDateTime as plain sa.DateTime(timezone=True): migrations never import app code."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _url() -> str:
    return config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url") \
        or get_settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True, render_item=_render_item)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = create_engine(_url(), poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite",
                          compare_type=True, render_item=_render_item)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Row-level security's system mode (revision 0008), for a migration that moves rows: the
                # policies apply to the tables' owner too, unless it is a superuser.
                connection.exec_driver_sql("SELECT set_config('factory.tenant_id', '*', true)")
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
