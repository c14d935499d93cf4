"""Annotated dependencies: settings, the tenant, a request-scoped session bound to that tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.base import DEFAULT_TENANT
from factory.db.session import get_sessionmaker
from factory.db.tenancy import bind_tenant


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_tenant() -> str:
    """A single default tenant until API keys exist; every repository call already takes it.

    The one seam for the caller's tenant: ``get_session`` binds each request's session to
    what this returns, so PostgreSQL's row-level security shows that tenant's rows only.
    """
    return DEFAULT_TENANT


TenantDep = Annotated[str, Depends(get_tenant)]


def _request_session(settings: Settings, tenant: str | None) -> Iterator[Session]:
    session = get_sessionmaker(settings.database_url)()
    if tenant is not None:
        bind_tenant(session, tenant)
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def get_session(settings: SettingsDep, tenant: TenantDep) -> Iterator[Session]:
    """One session per request, bound to the request's tenant (``session.info["tenant_id"]``);
    routes commit explicitly, anything else rolls back."""
    yield from _request_session(settings, tenant)


SessionDep = Annotated[Session, Depends(get_session)]


def get_system_session(settings: SettingsDep) -> Iterator[Session]:
    """A session that sees every tenant's rows: operator views only (``/v1/admin``), which report counts."""
    yield from _request_session(settings, None)


SystemSessionDep = Annotated[Session, Depends(get_system_session)]
