"""A real Celery worker process (fake generator) through Redis, PostgreSQL and an S3 server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from factory.db.models import Chunk, ChunkState, Item, ItemState
from factory.db.session import get_sessionmaker
from tests.keys import auth_headers
from tests.processes import api_server, stack_env, wait_job, worker
from tests.services import SeaweedS3


@pytest.mark.slow
def test_fake_worker_runs_every_item_once_and_isolates_a_poison_item(
    pg_db: str, broker_url: str, s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    env = stack_env(pg_db, broker_url, s3_server.endpoint, s3_bucket, FACTORY_GENERATOR="fake",
                    FACTORY_CHUNK_SIZE="8")
    audience = [{"id": f"r{i:03d}", "name": "POISON" if i == 13 else f"n{i}"} for i in range(60)]
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log", concurrency=2):
        client = httpx.Client(base_url=url, timeout=30, headers=auth_headers(pg_db))
        request.addfinalizer(client.close)
        resp = client.post("/v1/jobs", json={"kind": "personalization", "template": "Hi {{ name }}",
                                             "audience": audience, "params": {"seed": 5}})
        assert resp.status_code == 202, resp.text
        job = wait_job(client, resp.json()["id"], timeout=120)
        assert job["status"] == "succeeded"
        assert job["counts"] == {"total": 60, "pending": 0, "succeeded": 59, "failed": 1, "cancelled": 0}
        lines = [json.loads(x) for x in client.get(f"/v1/jobs/{job['id']}/results").text.splitlines()]

    assert sorted(x["key"] for x in lines) == [a["id"] for a in audience]
    poison = next(x for x in lines if x["key"] == "r013")
    assert poison["status"] == "failed" and poison["error"] == "generation failed: PoisonedPrompt"
    ok = next(x for x in lines if x["key"] == "r000")
    assert ok["text"].endswith("Hi n0") and ok["provenance"]["seed"] > 0

    with get_sessionmaker(pg_db)() as s:
        chunks = list(s.scalars(select(Chunk).where(Chunk.job_id == job["id"]).order_by(Chunk.seq)))
        assert len(chunks) == 8 and {c.state for c in chunks} == {ChunkState.SUCCEEDED}
        assert all(c.attempts == 1 for c in chunks)
        items = list(s.scalars(select(Item).where(Item.job_id == job["id"])))
        assert sum(i.state == ItemState.SUCCEEDED for i in items) == 59

    # One shard per chunk in the S3 server; together they hold every item exactly once.
    s3 = s3_server.client()
    all_keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"])
    manifest_key = f"tenants/default/jobs/{job['id']}/manifest.json"
    assert manifest_key in all_keys
    manifest = json.loads(s3.get_object(Bucket=s3_bucket, Key=manifest_key)["Body"].read())
    assert manifest["counts"] == {"succeeded": 59, "failed": 1}
    errors_key = f"tenants/default/jobs/{job['id']}/errors.jsonl"
    errors = [json.loads(x) for x in s3.get_object(Bucket=s3_bucket, Key=errors_key)["Body"].read().splitlines()]
    assert [(e["key"], e["status"], e["error"]) for e in errors] == [
        ("r013", "failed", "generation failed: PoisonedPrompt")]
    provenance_key = f"tenants/default/jobs/{job['id']}/provenance.json"
    assert provenance_key in all_keys  # the job's PROV-JSON document (tests/integration/test_provenance_lookup.py)
    keys = [k for k in all_keys if k not in (manifest_key, errors_key, provenance_key)]
    assert keys == [f"tenants/default/jobs/{job['id']}/results/chunk-{n:06d}.jsonl" for n in range(8)]
    shard_keys = []
    for key in keys:
        body = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read().decode()
        shard_keys += [json.loads(line)["key"] for line in body.splitlines()]
    assert sorted(shard_keys) == [a["id"] for a in audience]
