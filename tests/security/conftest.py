"""One client for the security tests, built in one place: credentials go in ``api_headers``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from factory.api.app import create_app
from factory.config import Settings
from tests.security.catalogue import TEST_LIMITS


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                    generator="fake", **TEST_LIMITS)


@pytest.fixture
def api_headers() -> dict[str, str]:
    """What every request carries (an ``Authorization`` header, once API keys exist)."""
    return {}


@pytest.fixture
def client(settings: Settings, api_headers: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_migrations=False), headers=api_headers,
                    raise_server_exceptions=False) as c:
        yield c
