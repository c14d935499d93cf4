"""One client for the security tests, built in one place (``open_client``), with a key of every scope."""

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


def open_client(settings: Settings, scopes: tuple[str, ...] = ("read", "write", "admin")) -> TestClient:
    """A client of a fresh app with a key of every scope, so each endpoint's own checks are what answers.

    The key's first use records last_used_at; that happens here, so tests that compare the
    database before and after a request see only what the request itself wrote.
    """
    client = TestClient(create_app(settings, run_migrations=False), raise_server_exceptions=False,
                        headers=auth_headers(settings.database_url, scopes=scopes))
    assert client.get("/v1/files").status_code == 200
    return client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with open_client(settings) as c:
        yield c
