"""docker-compose's database roles, on a real PostgreSQL server.

The compose stack migrates as the schema's owner and serves as an application role made by
``deploy/postgres/init-app-role.sh`` (the postgres image runs it on an empty volume). Here the
script runs with psql against this machine's server, in a database of its own, before the
migrations (as in the image); then the app role is checked to be one row-level security
applies to, with data access to every table the owner's migrations created and no more.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from factory.db.base import Base
from factory.db.migrate import upgrade
from factory.db.models import Job
from factory.db.session import get_engine, get_sessionmaker
from factory.db.tenancy import bind_tenant, warn_if_rls_bypassed
from tests.security.pg_app_role import libpq_dsn, one_row_per_table

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "postgres" / "init-app-role.sh"


def run_script(admin_dsn: str, database: str, app_user: str, password: str) -> None:
    url = make_url(admin_dsn)
    env = {**os.environ, "PGHOST": url.host or "127.0.0.1", "PGPORT": str(url.port or 5432),
           "POSTGRES_USER": url.username or "postgres", "POSTGRES_DB": database,
           "FACTORY_DB_APP_USER": app_user, "FACTORY_DB_APP_PASSWORD": password}
    if url.password:
        env["PGPASSWORD"] = url.password
    proc = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture()
def compose_database(pg_admin_dsn: str) -> Iterator[tuple[str, str]]:
    """(owner URL, app role URL) of a fresh database set up the way docker-compose does it."""
    name = f"factory_compose_{uuid.uuid4().hex[:10]}"
    role = f"factory_app_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    owner_url = (make_url(pg_admin_dsn).set(drivername="postgresql+psycopg", database=name)
                 .render_as_string(hide_password=False))
    app_url = make_url(owner_url).set(username=role, password=password).render_as_string(hide_password=False)
    try:
        run_script(pg_admin_dsn, name, role, password)
        run_script(pg_admin_dsn, name, role, password)  # a second run changes nothing
        upgrade(owner_url)  # the `migrate` service, as the owner, after the script
        yield owner_url, app_url
    finally:
        for url in (owner_url, app_url):
            get_engine(url).dispose()
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_the_app_role_is_held_by_row_level_security(compose_database: tuple[str, str]) -> None:
    _, app_url = compose_database
    assert warn_if_rls_bypassed(get_engine(app_url)) is False


def test_the_app_role_reads_and_writes_every_table_the_migrations_made(compose_database: tuple[str, str]) -> None:
    _, app_url = compose_database
    tables = [t.name for t in Base.metadata.sorted_tables] + ["alembic_version"]
    with psycopg.connect(libpq_dsn(app_url)) as conn:
        for table in tables:
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                allowed = conn.execute("SELECT has_table_privilege(%s, %s)", (table, privilege)).fetchone()
                assert allowed == (True,), f"the app role may not {privilege} {table}"
    # Rows of two tenants go in through bound sessions; each tenant sees its own only.
    for tenant in ("acme", "globex"):
        with get_sessionmaker(app_url)() as session:
            bind_tenant(session, tenant)
            for row in one_row_per_table(tenant):  # in order: some have no relationship to order them by
                session.add(row)
                session.flush()
            session.commit()
    with get_sessionmaker(app_url)() as session:
        bind_tenant(session, "acme")
        assert session.scalars(select(Job.id)).all() == ["job_acme"]
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_the_app_role_cannot_change_the_schema(compose_database: tuple[str, str]) -> None:
    _, app_url = compose_database
    with psycopg.connect(libpq_dsn(app_url), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE intruder (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("ALTER TABLE jobs DISABLE ROW LEVEL SECURITY")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DROP POLICY tenant_isolation ON jobs")
