"""One client for the security tests, built in one place: credentials go in ``api_headers``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from factory.api.app import create_app
from factory.config import Settings
from tests.keys import auth_headers
from tests.security.catalogue import TEST_LIMITS


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                    generator="fake", **TEST_LIMITS)


@pytest.fixture
def api_headers(settings: Settings) -> dict[str, str]:
    """What every request carries: a key with every scope, so each endpoint's own checks are what answers."""
    return auth_headers(settings.database_url, scopes=("read", "write", "admin"))


@pytest.fixture
def client(settings: Settings, api_headers: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_migrations=False), headers=api_headers,
                    raise_server_exceptions=False) as c:
        # The key's first use records last_used_at; done here, so tests that compare the database
        # before and after a request see only what the request itself wrote.
        assert c.get("/v1/files").status_code == 200
        yield c
