"""A PostgreSQL role like production's: no superuser, no BYPASSRLS, so row-level security applies to it.

The tests' own connections are the ``postgres`` superuser, which skips row-level security;
proofs of it connect as this role instead. Also one row of every tenant table for a tenant.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy.engine import make_url

from factory.db.base import Base, utcnow
from factory.db.models import (
    ApiKey,
    AugmentationSourceRow,
    AugmentationVerdict,
    Batch,
    BrandProfile,
    Chunk,
    IdempotencyKey,
    Item,
    Job,
    Pipeline,
    PipelineRun,
    PipelineRunStep,
    PromptTemplate,
    StoredFile,
    Tenant,
)
from factory.db.session import get_engine

# What production grants the API's and workers' role (README, "Tenants and row-level security").
GRANTS = ("GRANT USAGE ON SCHEMA public TO {role}",
          "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
          "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")


def libpq_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def app_role(owner_url: str) -> Iterator[str]:
    """A fresh LOGIN role granted what the app needs on ``owner_url``'s tables; yields its URL."""
    role = f"factory_app_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    with psycopg.connect(libpq_dsn(owner_url), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{password}'")
        for grant in GRANTS:
            conn.execute(grant.format(role=role))
    url = make_url(owner_url).set(username=role, password=password).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with psycopg.connect(libpq_dsn(owner_url), autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def tenant_tables() -> set[str]:
    """Every table with a ``tenant_id`` column, as the models declare them."""
    return {t.name for t in Base.metadata.sorted_tables if "tenant_id" in t.c}


def one_row_per_table(tenant: str) -> list[Base]:
    """A job with a chunk, an item, a source row and a verdict; a batch, a file, a template, a brand profile
    an idempotency key, a pipeline, its run and its step: every tenant table, its ids suffixed by the tenant."""
    job_id, chunk_id, item_id = f"job_{tenant}", f"chunk_{tenant}", f"item_{tenant}"
    return [
        Job(id=job_id, tenant_id=tenant, kind="personalization", model="m", queue="q", template="Hi",
            template_sha256="0" * 64, params={}, seed=1, variants=1, item_count=1, chunk_count=1),
        Chunk(id=chunk_id, tenant_id=tenant, job_id=job_id, seq=0),
        Item(id=item_id, tenant_id=tenant, job_id=job_id, chunk_id=chunk_id, seq=0, key="k", variant=0,
             record={"name": tenant}, prompt="Hi", prompt_sha256="0" * 64, seed=1),
        AugmentationSourceRow(job_id=job_id, seq=0, tenant_id=tenant, row_id="r", label="l", text="t"),
        AugmentationVerdict(item_id=item_id, job_id=job_id, tenant_id=tenant, accepted=True),
        Batch(id=f"batch_{tenant}", tenant_id=tenant, endpoint="/v1/chat/completions", completion_window="24h",
              input_file_id=f"file_{tenant}"),
        StoredFile(id=f"file_{tenant}", tenant_id=tenant, purpose="batch", filename="in.jsonl", bytes=1,
                   sha256="0" * 64, storage_key=f"tenants/{tenant}/files/in.jsonl"),
        PromptTemplate(id=f"tpl_{tenant}", tenant_id=tenant, name="t", version=1, source="Hi", sha256="0" * 64,
                       variables={}),
        BrandProfile(id=f"brand_{tenant}", tenant_id=tenant, name="b", version=1, profile={}, sha256="0" * 64),
        IdempotencyKey(tenant_id=tenant, key="k", request_hash="0" * 64),
        Tenant(id=tenant),
        ApiKey(id=f"key_{tenant}", tenant_id=tenant, name="k", prefix="cf_", key_hash=tenant.ljust(64, "0"),
               scopes=["read"]),
        Pipeline(id=f"pipe_{tenant}", tenant_id=tenant, name="p", schedule={"every_seconds": 60},
                 job={"kind": "batch", "request": {}}),
        PipelineRun(id=f"run_{tenant}", tenant_id=tenant, pipeline_id=f"pipe_{tenant}", slot_at=utcnow(),
                    trigger="manual", status="queued"),
        PipelineRunStep(id=f"step_{tenant}", tenant_id=tenant, run_id=f"run_{tenant}", lane=0, step=0, kind="batch",
                        status="queued", job_id=job_id),
    ]
