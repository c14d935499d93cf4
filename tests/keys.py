"""API keys for tests: made straight in the (migrated) database, as `factory keys create` does."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi.testclient import TestClient

from factory.api.app import create_app
from factory.auth.principal import DEFAULT_SCOPES
from factory.auth.service import create_key
from factory.config import Settings
from factory.db.session import session_scope


def api_key(database_url: str, tenant: str = "default", scopes: Iterable[str] = DEFAULT_SCOPES,
            expires_in_days: int | None = None) -> str:
    with session_scope(database_url) as session:
        _, secret = create_key(session, tenant, "test", scopes, expires_in_days)
    return secret


def auth_headers(database_url: str, tenant: str = "default", scopes: Iterable[str] = DEFAULT_SCOPES) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key(database_url, tenant, scopes)}"}


def api_test_client(settings: Settings, tenant: str = "default", scopes: Iterable[str] = DEFAULT_SCOPES) -> TestClient:
    """An in-process client of a fresh app that sends a new key of ``tenant`` (enter it with ``with``)."""
    return TestClient(create_app(settings, run_migrations=False),
                      headers=auth_headers(settings.database_url, tenant, scopes))
