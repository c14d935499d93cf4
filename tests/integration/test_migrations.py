"""Models and migrations agree (`alembic check`) and migrations run both ways, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect

from factory.db.migrate import alembic_config
from factory.db.session import get_engine
from tests import services


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    url, drop = services.create_database(request.getfixturevalue("pg_admin_dsn"))

    def cleanup() -> None:
        get_engine(url).dispose()
        drop()

    request.addfinalizer(cleanup)
    return url


def test_upgrade_check_downgrade_upgrade(fresh_url: str) -> None:
    cfg = alembic_config(fresh_url)
    command.upgrade(cfg, "head")
    command.check(cfg)  # raises if the models have drifted from the migrations
    tables = set(inspect(get_engine(fresh_url)).get_table_names())
    assert {"jobs", "chunks", "items", "outbox", "alembic_version"} <= tables
    for table in ("jobs", "chunks", "items"):
        cols = {c["name"] for c in inspect(get_engine(fresh_url)).get_columns(table)}
        assert "tenant_id" in cols
    command.downgrade(cfg, "base")
    get_engine(fresh_url).dispose()
    assert set(inspect(get_engine(fresh_url)).get_table_names()) <= {"alembic_version"}
    command.upgrade(cfg, "head")
