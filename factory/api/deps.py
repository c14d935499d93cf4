"""Annotated dependencies: settings, a request-scoped session, the tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from factory.config import Settings
from factory.db.base import DEFAULT_TENANT
from factory.db.session import get_sessionmaker


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """One session per request; routes commit explicitly, anything else rolls back."""
    session = get_sessionmaker(settings.database_url)()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def get_tenant() -> str:
    """A single default tenant until API keys exist; every repository call already takes it."""
    return DEFAULT_TENANT


TenantDep = Annotated[str, Depends(get_tenant)]
