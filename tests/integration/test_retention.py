"""Retention: one reconciler pass purges uploads and results past their age, keeps the rest.

On SQLite and PostgreSQL, with local storage and with real S3 (SeaweedFS). Expired: an upload, an
ended job, an ended batch (its output/error files and input), an idempotency key; kept: a recent
upload and job, a running job however old. The last test shows a pass's bound.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from factory.batches import claim as batch_claim
from factory.batches import finalize as batch_finalize
from factory.config import Settings
from factory.db.base import utcnow
from factory.db.models import Batch, Chunk, IdempotencyKey, Item, Job, JobStatus, StoredFile
from factory.db.session import get_sessionmaker
from factory.jobs import execution
from factory.reliability.reconciler import Reconciler
from factory.storage import open_store
from factory.storage.keys import job_prefix
from tests.inprocess import run_to_the_end
from tests.keys import api_test_client
from tests.services import SeaweedS3

OLD = timedelta(days=40)  # past the 30 days of retention below


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    storage: dict[str, Any] = {"storage_url": f"file://{tmp_path}/objects"}
    if request.param == "s3":
        s3: SeaweedS3 = request.getfixturevalue("s3_server")
        storage = {"storage_url": f"s3://{request.getfixturevalue('s3_bucket')}", "s3_endpoint_url": s3.endpoint,
                   "s3_access_key_id": "test", "s3_secret_access_key": "test"}
    return Settings(database_url=db_url, broker_url=broker_url, chunk_size=2, retention_days=30,
                    reconcile_grace_s=0, **storage)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with api_test_client(settings) as c:
        yield c


def _job(client: TestClient, n: int = 2, **headers: str) -> str:
    r = client.post("/v1/jobs", headers=headers, json={
        "kind": "personalization", "template": "Write to {{ name }}.", "variants": 1,
        "audience": [{"id": f"r{i}", "name": f"Name{i}"} for i in range(n)], "params": {"seed": 7}})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _upload(client: TestClient, content: bytes, purpose: str = "batch") -> dict[str, Any]:
    r = client.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": purpose})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _age(settings: Settings, model: Any, where: Any, **columns: timedelta) -> None:
    """Move timestamps into the past."""
    with get_sessionmaker(settings.database_url)() as s:
        s.execute(update(model).where(where).values(**{c: utcnow() - ago for c, ago in columns.items()}))
        s.commit()


def _ended_batch(client: TestClient, settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """A batch cancelled and finalized (as its finalize task does); (its input file, the batch)."""
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}]}}
    file = _upload(client, json.dumps(line).encode() + b"\n")
    batch = client.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                                             "completion_window": "24h"}).json()
    assert client.post(f"/v1/batches/{batch['id']}/cancel").status_code == 200
    store = open_store(settings)
    with get_sessionmaker(settings.database_url)() as s:
        job = s.scalars(select(Job).join(Batch, Batch.job_id == Job.id).where(Batch.id == batch["id"])).one()
        batch_claim.write_unclaimed_items(s, settings, store, job)
        batch_finalize.finalize_batch(s, store, job)
        execution.finish_job(s, job.id)
        s.commit()
    return file, client.get(f"/v1/batches/{batch['id']}").json()


def _exists(settings: Settings, model: Any, where: Any) -> bool:
    with get_sessionmaker(settings.database_url)() as s:
        return s.scalar(select(model).where(where).limit(1)) is not None


def _objects(settings: Settings, job_id: str) -> list[str]:
    return list(open_store(settings).list_keys(job_prefix("default", job_id)))


def test_one_pass_purges_what_is_past_retention_and_keeps_recent_and_running_work(
        client: TestClient, settings: Settings) -> None:
    store = open_store(settings)
    old_upload, new_upload = _upload(client, b'{"a": 1}\n', "user_data"), _upload(client, b'{"b": 2}\n', "user_data")
    _age(settings, StoredFile, StoredFile.id == old_upload["id"], created_at=OLD)
    old_job, new_job = _job(client, **{"Idempotency-Key": "old-key"}), _job(client, **{"Idempotency-Key": "new-key"})
    for job_id in (old_job, new_job):
        assert run_to_the_end(settings, job_id, "a text") == JobStatus.SUCCEEDED
    _age(settings, Job, Job.id == old_job, created_at=OLD, finished_at=OLD)
    _age(settings, IdempotencyKey, IdempotencyKey.key == "old-key", created_at=timedelta(days=2))
    running = _job(client)
    _age(settings, Job, Job.id == running, created_at=OLD, started_at=OLD, finished_at=timedelta(0))
    with get_sessionmaker(settings.database_url)() as s:  # running for 40 days, never finished
        s.execute(update(Job).where(Job.id == running).values(status=JobStatus.RUNNING, finished_at=None))
        s.commit()
    batch_input, batch = _ended_batch(client, settings)
    generated = [batch["output_file_id"], batch["error_file_id"]]
    _age(settings, Job, Job.id == select(Batch.job_id).where(Batch.id == batch["id"]).scalar_subquery(),
         finished_at=OLD)
    _age(settings, StoredFile, StoredFile.id.in_([batch_input["id"], *[f for f in generated if f]]), created_at=OLD)
    old_keys = _objects(settings, old_job)
    assert old_keys and _objects(settings, new_job)
    file_keys = {f["id"]: f"tenants/default/files/{f['id']}/content.jsonl" for f in (old_upload, new_upload)}
    assert all(store.exists(k) for k in file_keys.values())

    result = Reconciler(settings).run_once()
    assert result.failed_steps == []
    assert (result.files_purged, result.jobs_purged, result.idempotency_keys_purged) == (
        2 + len([f for f in generated if f]), 2, 1)
    # Gone: rows and objects.
    assert client.get(f"/v1/files/{old_upload['id']}").status_code == 404
    assert not store.exists(file_keys[old_upload["id"]])
    assert client.get(f"/v1/jobs/{old_job}").status_code == 404
    assert not _exists(settings, Item, Item.job_id == old_job) and not _exists(settings, Chunk, Chunk.job_id == old_job)
    assert _objects(settings, old_job) == []
    assert client.get(f"/v1/batches/{batch['id']}").status_code == 404
    for file_id in [batch_input["id"], *generated]:
        if file_id:
            assert client.get(f"/v1/files/{file_id}").status_code == 404
            assert not store.exists(f"tenants/default/files/{file_id}/content.jsonl")
    assert not _exists(settings, IdempotencyKey, IdempotencyKey.key == "old-key")
    # Kept: the recent upload, job and key; the running job, however old.
    assert client.get(f"/v1/files/{new_upload['id']}").status_code == 200 and store.exists(file_keys[new_upload["id"]])
    assert client.get(f"/v1/jobs/{new_job}").json()["status"] == "succeeded" and _objects(settings, new_job)
    assert client.get(f"/v1/jobs/{running}").json()["status"] == "running"
    assert _exists(settings, Item, Item.job_id == running)
    assert _exists(settings, IdempotencyKey, IdempotencyKey.key == "new-key")
    assert Reconciler(settings).run_once().acted is False  # nothing left to purge


def test_a_pass_is_bounded_and_the_next_one_carries_on(db_url: str, broker_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                        chunk_size=1, retention_days=30, retention_max_rows_per_pass=1,
                        retention_max_objects_per_pass=2, reconcile_grace_s=0)
    with api_test_client(settings) as client:
        first, second = _job(client, n=3), _job(client, n=3)  # three chunks, three result shards each
        for job_id in (first, second):
            run_to_the_end(settings, job_id, "a text")
        _age(settings, Job, Job.id == first, finished_at=OLD + timedelta(days=1))
        _age(settings, Job, Job.id == second, finished_at=OLD)
        reconciler = Reconciler(settings)
        one = reconciler.run_once()
        assert (one.jobs_purged, one.objects_deleted) == (0, 2)  # two of the first job's three objects
        assert len(_objects(settings, first)) == 1 and client.get(f"/v1/jobs/{first}").status_code == 200
        two = reconciler.run_once()
        assert (two.jobs_purged, two.objects_deleted) == (1, 1)
        assert client.get(f"/v1/jobs/{first}").status_code == 404
        assert len(_objects(settings, second)) == 3
        while reconciler.run_once().acted:
            pass
        assert client.get(f"/v1/jobs/{second}").status_code == 404 and _objects(settings, second) == []
