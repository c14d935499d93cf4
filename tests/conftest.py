"""Shared fixtures: real PostgreSQL, Redis and S3 servers, per-test clean state."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import text

from factory.config import Settings
from factory.db import migrate
from factory.db.base import Base
from factory.db.session import get_engine
from tests import services

# One converted-model cache for the whole run (and shared with `make demo`).
MODEL_CACHE = Path(os.environ.get("FACTORY_TEST_MODEL_CACHE", services.REPO / ".factory" / "models"))


@pytest.fixture(scope="session")
def service_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def pg_admin_dsn(service_root: Path) -> Iterator[str]:
    dsn, own = services.postgres_admin_dsn(service_root)
    yield dsn
    if own:
        own.remove()


@pytest.fixture(scope="session")
def pg_url(pg_admin_dsn: str) -> Iterator[str]:
    url, drop = services.create_database(pg_admin_dsn)
    migrate.upgrade(url)
    yield url
    get_engine(url).dispose()
    drop()


@pytest.fixture(scope="session")
def sqlite_session_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'factory.db'}"
    migrate.upgrade(url)
    return url


def truncate(url: str) -> None:
    engine = get_engine(url)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(text(f"DELETE FROM {table.name}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Both supported databases, each emptied before the test."""
    url: str = request.getfixturevalue("sqlite_session_url" if request.param == "sqlite" else "pg_url")
    truncate(url)
    return url


@pytest.fixture
def pg_db(pg_url: str) -> str:
    truncate(pg_url)
    return pg_url


@pytest.fixture(scope="session")
def redis_server(service_root: Path) -> Iterator[str]:
    url, own = services.redis_base_url(service_root)
    yield url
    if own:
        own.stop()


@pytest.fixture
def broker_url(redis_server: str) -> Iterator[str]:
    """A Redis database of its own for this test (db 1-15), flushed before and after."""
    db = 1 + uuid.uuid4().int % 15
    url = f"{redis_server}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def s3_server(service_root: Path) -> Iterator[services.SeaweedS3]:
    server = services.SeaweedS3(service_root / "s3")
    yield server
    server.close()


@pytest.fixture
def s3_bucket(s3_server: services.SeaweedS3) -> str:
    return f"factory-{uuid.uuid4().hex[:12]}"


def make_settings(**kw: object) -> Settings:
    return Settings(**kw)  # type: ignore[arg-type]
