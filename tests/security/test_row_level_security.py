"""PostgreSQL row-level security, the second wall behind the repositories' tenant filters.

Queries here FORGET the tenant filter on purpose (``select(Job)``): what they get back is
what the policies let through. They run as a role like production's (no superuser, no
BYPASSRLS: tests/security/pg_app_role.py); the superuser the other tests use skips RLS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import select, text, update
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from factory.db.base import Base
from factory.db.bulk import insert_rows
from factory.db.migrate import alembic_config
from factory.db.models import Chunk, Job
from factory.db.session import get_engine, get_sessionmaker
from factory.db.tenancy import bind_tenant, warn_if_rls_bypassed
from tests import services
from tests.security.pg_app_role import app_role, libpq_dsn, one_row_per_table, tenant_tables

TENANT_MODELS = [m.class_ for m in Base.registry.mappers if "tenant_id" in m.class_.__table__.c]


@pytest.fixture(scope="module")
def role_url(pg_url: str) -> Iterator[str]:
    with app_role(pg_url) as url:
        yield url


@pytest.fixture
def two_tenants(pg_db: str) -> str:
    """One row of every tenant table for tenants "acme" and "globex", written in system mode."""
    with get_sessionmaker(pg_db)() as s:
        for tenant in ("acme", "globex"):
            for row in one_row_per_table(tenant):  # in order: some have no relationship to order them by
                s.add(row)
                s.flush()
        s.commit()
    return pg_db


def _tenants_seen(session: Session) -> dict[str, list[str]]:
    """For every tenant table, the tenant of each row a query without a tenant filter returns."""
    return {m.__tablename__: sorted(row.tenant_id for row in session.scalars(select(m))) for m in TENANT_MODELS}


def _everyone(*tenants: str) -> dict[str, list[str]]:
    return {table: sorted(tenants) for table in tenant_tables()}


def _setting(session: Session) -> str | None:
    return session.execute(text("SELECT current_setting('factory.tenant_id', true)")).scalar()


def _protected_tables(url: str) -> set[str]:
    """Tables with row-level security enabled and forced, and the one policy."""
    with get_engine(url).connect() as conn:
        rows = conn.execute(text(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, count(p.polname) FROM pg_class c "
            "LEFT JOIN pg_policy p ON p.polrelid = c.oid WHERE c.relkind = 'r' AND c.relnamespace = "
            "'public'::regnamespace GROUP BY c.relname, c.relrowsecurity, c.relforcerowsecurity")).all()
    return {name for name, enabled, forced, policies in rows if enabled and forced and policies == 1}


def test_every_tenant_table_has_forced_row_level_security_and_a_policy(pg_db: str) -> None:
    # The proofs cover all (the tenants row is there for the api_keys row's foreign key).
    assert {type(row).__tablename__ for row in one_row_per_table("t")} - {"tenants"} == tenant_tables()
    assert _protected_tables(pg_db) == tenant_tables()


def test_the_migration_downgrade_removes_row_level_security(pg_admin_dsn: str) -> None:
    url, drop = services.create_database(pg_admin_dsn)
    try:
        cfg = alembic_config(url)
        command.upgrade(cfg, "head")
        assert _protected_tables(url) == tenant_tables()
        before = ScriptDirectory.from_config(cfg).get_revision("0008").down_revision
        command.downgrade(cfg, str(before))
        assert _protected_tables(url) == set()
        with get_engine(url).connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_policy")).scalar() == 0
            assert conn.execute(text("SELECT count(*) FROM pg_class WHERE relrowsecurity")).scalar() == 0
    finally:
        get_engine(url).dispose()
        drop()


def test_a_query_that_forgets_the_tenant_filter_sees_only_its_tenants_rows(two_tenants: str, role_url: str) -> None:
    make = get_sessionmaker(role_url)
    with bind_tenant(make(), "acme") as s:
        assert _tenants_seen(s) == _everyone("acme")
    with bind_tenant(make(), "globex") as s:
        assert _tenants_seen(s) == _everyone("globex")
    with bind_tenant(make(), "initech") as s:
        assert _tenants_seen(s) == _everyone()
    with make() as s:  # workers, the reconciler, the CLI: system mode
        assert _setting(s) == "*"
        assert _tenants_seen(s) == _everyone("acme", "globex")


def test_a_connection_without_the_setting_sees_nothing(two_tenants: str, role_url: str) -> None:
    # Not through the app's engine, so no connect event put it in system mode.
    with psycopg.connect(libpq_dsn(role_url), autocommit=True) as conn:
        for value in (None, ""):
            if value is not None:
                conn.execute("SET factory.tenant_id = ''")
            assert conn.execute("SELECT current_setting('factory.tenant_id', true)").fetchone() == (value,)
            counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone() for t in tenant_tables()}
            assert counts == {t: (0,) for t in tenant_tables()}


def test_writing_another_tenants_rows_is_refused(two_tenants: str, role_url: str) -> None:
    make = get_sessionmaker(role_url)
    with bind_tenant(make(), "acme") as s, pytest.raises(ProgrammingError, match="row-level security"):
        s.add(Job(**{**_job_fields("globex"), "id": "job_planted"}))
        s.flush()
    with bind_tenant(make(), "acme") as s, pytest.raises(ProgrammingError, match="row-level security"):
        s.execute(update(Job).where(Job.id == "job_acme").values(tenant_id="globex"))  # hand a row over
    with bind_tenant(make(), "acme") as s, pytest.raises(ProgrammingError, match="row-level security"):
        insert_rows(s, Chunk.__table__, ("id", "tenant_id", "job_id", "seq", "state", "attempts", "created_at"),  # type: ignore[arg-type]
                    [("chunk_planted", "globex", "job_globex", 9, "pending", 0, "2026-12-02T00:00:00Z")])
    with bind_tenant(make(), "acme") as s:  # another tenant's rows are not there to change or delete
        assert s.execute(update(Job).where(Job.id == "job_globex").values(error="x")).rowcount == 0  # type: ignore[attr-defined]
        assert s.execute(text("DELETE FROM jobs WHERE id = 'job_globex'")).rowcount == 0  # type: ignore[attr-defined]
        s.commit()
    with get_sessionmaker(two_tenants)() as s:
        globex = s.get(Job, "job_globex")
        assert globex is not None and globex.error is None
        assert s.scalar(select(Job.tenant_id).where(Job.id == "job_acme")) == "acme"
        assert s.get(Job, "job_planted") is None and s.get(Chunk, "chunk_planted") is None


def test_a_tenants_bulk_insert_goes_through_the_policy(two_tenants: str, role_url: str) -> None:
    """COPY is refused where row-level security applies: bulk inserts stage their rows, then INSERT them."""
    columns = ("id", "tenant_id", "job_id", "seq", "state", "attempts", "created_at")
    rows = [(f"chunk_bulk_{n}", "acme", "job_acme", 10 + n, "pending", 0, "2026-12-02T00:00:00Z") for n in range(3)]
    # Two calls per transaction (each drops its staging table); the second session reuses the connection,
    # which remembers that RLS applies.
    for _ in range(2):
        with bind_tenant(get_sessionmaker(role_url)(), "acme") as s:
            insert_rows(s, Chunk.__table__, columns, rows[:2])  # type: ignore[arg-type]
            insert_rows(s, Chunk.__table__, columns, rows[2:])  # type: ignore[arg-type]
            assert sorted(s.scalars(select(Chunk.id).where(Chunk.id.like("chunk_bulk_%")))) == [r[0] for r in rows]
            s.rollback()


def test_the_binding_outlives_a_commit_and_leaves_the_pooled_connection_in_system_mode(
        two_tenants: str, role_url: str) -> None:
    get_engine(role_url).dispose()  # an empty pool: the next session gets the connection this one returns
    make = get_sessionmaker(role_url)
    with bind_tenant(make(), "acme") as s:
        pid = s.execute(text("SELECT pg_backend_pid()")).scalar()
        assert _setting(s) == "acme"
        s.commit()  # the next statement begins a new transaction: after_begin binds it again
        assert _setting(s) == "acme" and _tenants_seen(s) == _everyone("acme")
        s.rollback()
        assert _tenants_seen(s) == _everyone("acme")
    with make() as s:  # the same pooled connection, its next user a system session
        assert s.execute(text("SELECT pg_backend_pid()")).scalar() == pid
        assert _setting(s) == "*" and _tenants_seen(s) == _everyone("acme", "globex")
        bind_tenant(s, "globex")  # bound inside an open transaction: from now on
        assert _setting(s) == "globex" and _tenants_seen(s) == _everyone("globex")


def test_a_session_is_bound_to_a_real_tenant_only() -> None:
    for wrong in ("", "*"):
        with pytest.raises(ValueError):
            bind_tenant(Session(), wrong)


def test_a_role_that_bypasses_row_level_security_is_warned_about(
        pg_db: str, role_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="factory.db.tenancy"):
        assert warn_if_rls_bypassed(get_engine(role_url)) is False
        assert caplog.messages == []
        assert warn_if_rls_bypassed(get_engine(pg_db)) is True  # the tests' superuser
    assert len(caplog.messages) == 1 and "row-level security does not apply" in caplog.messages[0]


def _job_fields(tenant: str) -> dict[str, object]:
    job = one_row_per_table(tenant)[0]
    return {c.key: getattr(job, c.key) for c in Job.__table__.c if getattr(job, c.key) is not None}
