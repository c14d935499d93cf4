"""Annotated dependencies: settings, the caller and its tenant, a request-scoped session bound to that tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from factory.auth.principal import Principal
from factory.config import Settings
from factory.db.session import get_sessionmaker
from factory.db.tenancy import bind_tenant
from factory.errors import Unauthorized


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]

# Declares the bearer scheme in the OpenAPI document; the check itself is AuthenticationMiddleware's.
_bearer = HTTPBearer(auto_error=False, description="An API key: `factory keys create` prints one.")


def get_principal(request: Request,
                  _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None) -> Principal:
    """The caller, as AuthenticationMiddleware found it (it has already refused anyone else)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # a route outside the middleware's reach: refuse rather than guess a tenant
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", field="authorization")
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def get_tenant(principal: PrincipalDep) -> str:
    """The tenant every repository call of this request is scoped to: the API key's.

    ``get_session`` binds each request's session to it, so PostgreSQL's row-level
    security shows that tenant's rows only.
    """
    return principal.tenant_id


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
    """One session per request, bound to the caller's tenant (``session.info["tenant_id"]``);
    routes commit explicitly, anything else rolls back."""
    yield from _request_session(settings, tenant)


SessionDep = Annotated[Session, Depends(get_session)]


def get_system_session(settings: SettingsDep) -> Iterator[Session]:
    """A session that sees every tenant's rows: operator views only (``/v1/admin``), which report counts."""
    yield from _request_session(settings, None)


SystemSessionDep = Annotated[Session, Depends(get_system_session)]
