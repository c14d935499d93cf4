"""The API and a worker, as a role row-level security applies to, do their whole job.

RLS must not break anything on the request path: the tenant-bound request session (and
its transactions after a commit), the outbox relay, Idempotency-Key's own sessions, the
streaming responses' own sessions, bulk inserts (PostgreSQL refuses COPY under RLS), the
start-up migration step, and the workers' system-mode sessions. The schema is migrated by
its owner first (here the superuser, as ``factory migrate`` in production); the API's own
start-up upgrade is then a no-op that only reads ``alembic_version``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from factory.db.base import Base
from factory.db.session import get_sessionmaker
from tests import campaign_data
from tests.keys import auth_headers
from tests.processes import api_server, factory_env, wait_job, worker
from tests.security.pg_app_role import app_role, tenant_tables
from tests.services import REPO

ROWS = [{"id": "r1", "text": "where is my parcel right now", "label": "track_order"},
        {"id": "r2", "text": "please cancel the order I placed yesterday", "label": "cancel_order"}]
BATCH_LINES = [
    {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}},
    {"custom_id": "p1", "method": "POST", "url": "/v1/personalize",
     "body": {"template": "Hi {{ name }}", "audience": [{"id": "a", "name": "Ana"}], "params": {"seed": 1}}},
    {"custom_id": "g1", "method": "POST", "url": "/v1/augment",
     "body": {"dataset": {"rows": ROWS}, "methods": [{"method": "eda", "k": 1}], "params": {"seed": 2}}},
]


@pytest.fixture
def role_url(pg_db: str) -> Iterator[str]:
    with app_role(pg_db) as url:
        yield url


def _batch_done(http: httpx.Client, batch_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch: dict[str, Any] = http.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] in ("completed", "failed", "cancelled", "expired"):
            return batch
        time.sleep(0.3)
    raise AssertionError(f"batch {batch_id} did not end in {timeout}s")


def _replay(http: httpx.Client, path: str, body: dict[str, Any], key: str) -> httpx.Response:
    """The same request again, once the first one's response is stored (that follows its last byte)."""
    deadline = time.monotonic() + 10
    while True:
        response = http.post(path, json=body, headers={"Idempotency-Key": key})
        if response.status_code != 409 or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


@pytest.mark.slow
def test_api_and_worker_run_jobs_files_and_batches_under_row_level_security(
        pg_db: str, role_url: str, broker_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    env = factory_env(FACTORY_DATABASE_URL=role_url, FACTORY_BROKER_URL=broker_url, FACTORY_GENERATOR="fake",
                      FACTORY_STORAGE_URL=f"file://{tmp_path}/objects", FACTORY_CHUNK_SIZE="2")
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    with api_server(env, api_log) as url, worker(env, worker_log):
        http = httpx.Client(base_url=url, timeout=30,
                            headers=auth_headers(pg_db, scopes=("read", "write", "admin")))
        request.addfinalizer(http.close)
        body = {"kind": "personalization", "template": "Hi {{ name }}", "params": {"seed": 5},
                "audience": [{"id": f"r{i}", "name": f"n{i}"} for i in range(5)]}
        created = http.post("/v1/jobs", json=body, headers={"Idempotency-Key": "job-1"})
        assert created.status_code == 202, created.text
        replayed = _replay(http, "/v1/jobs", body, "job-1")
        assert replayed.headers.get("idempotent-replayed") == "true" and replayed.json()["id"] == created.json()["id"]
        job = wait_job(http, created.json()["id"], timeout=120)
        assert job["status"] == "succeeded" and job["counts"]["succeeded"] == 5
        results = [json.loads(x) for x in http.get(f"/v1/jobs/{job['id']}/results").text.splitlines()]
        assert sorted(r["key"] for r in results) == [f"r{i}" for i in range(5)]

        augmented = http.post("/v1/jobs", json={"kind": "augmentation", "dataset": {"rows": ROWS},
                                                "methods": [{"method": "eda", "k": 1}], "params": {"seed": 3}})
        assert augmented.status_code == 202, augmented.text
        assert wait_job(http, augmented.json()["id"], timeout=120)["status"] == "succeeded"

        brand, template = campaign_data.brand(), campaign_data.template("autumn-email")
        assert http.post("/v1/brands", json=brand).status_code == 201
        assert http.post("/v1/templates", json=template).status_code == 201
        assert http.get(f"/v1/brands/{brand['name']}").status_code == 200
        assert http.get(f"/v1/templates/{template['name']}").status_code == 200

        data = b"".join(json.dumps(line).encode() + b"\n" for line in BATCH_LINES)
        uploaded = http.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]
        assert http.get(f"/v1/files/{file_id}").json()["bytes"] == len(data)
        assert http.get(f"/v1/files/{file_id}/content").content == data
        made = http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                              "completion_window": "24h"})
        assert made.status_code == 200, made.text
        batch = _batch_done(http, made.json()["id"])
        assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 3, batch
        output = http.get(f"/v1/files/{batch['output_file_id']}/content").text
        assert sorted(json.loads(x)["custom_id"] for x in output.splitlines()) == ["c1", "g1", "p1"]
        assert http.get(f"/v1/batches/{batch['id']}/output").text == output
        assert [b["id"] for b in http.get("/v1/batches").json()["data"]] == [batch["id"]]
        pipeline = http.post("/v1/pipelines", json={
            "name": "inbox", "schedule": {"every_seconds": 3600}, "input": {"source": "file", "file_id": file_id},
            "job": {"kind": "batch", "request": {"endpoint": "/v1/chat/completions"}}})
        assert pipeline.status_code == 201, pipeline.text
        run = http.post(f"/v1/pipelines/{pipeline.json()['id']}/run")
        assert run.status_code == 202 and run.json()["status"] == "queued", run.text
        _batch_done(http, run.json()["jobs"][0]["batch_id"])
        runs = http.get(f"/v1/pipelines/{pipeline.json()['id']}/runs").json()["data"]
        assert [r["id"] for r in runs] == [run.json()["id"]] and runs[0]["status"] == "succeeded", runs
        chat = http.post("/v1/chat/completions", json=BATCH_LINES[0]["body"])
        assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"], chat.text
        # The chat's job finalizes after its answer: wait for it, so the worker is not stopped mid-task.
        deadline = time.monotonic() + 60
        while (doctor := http.get("/v1/admin/doctor").json())["jobs_finalizing"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert doctor["chunks"]["succeeded"] > 0 and doctor["outbox_unsent"] == 0, doctor
        assert doctor["jobs_finalizing"] == 0, doctor

    # The CLI's system-mode sessions, as the same role.
    for args in (["reconcile", "--once"], ["doctor", "--json"]):
        done = subprocess.run([sys.executable, "-m", "factory.cli", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["chunks"] == doctor["chunks"]

    for log in (api_log, worker_log):
        assert "Traceback" not in log.read_text(errors="replace")
    assert "row-level security does not apply" not in api_log.read_text()
    # What they wrote, read by the owner: every tenant table was used, all by the one tenant.
    with get_sessionmaker(pg_db)() as s:
        tables = {t.name: t for t in Base.metadata.sorted_tables}
        tenants = {name: set(s.scalars(select(tables[name].c.tenant_id).distinct())) for name in tenant_tables()}
    assert tenants == {name: {"default"} for name in tenant_tables()}
