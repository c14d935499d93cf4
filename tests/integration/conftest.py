"""Shared fixtures of the in-process API tests; each module defines its own ``settings``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from factory.config import Settings
from tests.keys import api_test_client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with api_test_client(settings) as c:
        yield c
