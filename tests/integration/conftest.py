"""Shared fixtures of the in-process API tests; each module defines its own ``settings``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from factory.api.app import create_app
from factory.config import Settings


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, run_migrations=False)) as c:
        yield c
