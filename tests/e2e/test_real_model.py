"""End to end with the real model: API process -> Redis -> worker process -> PostgreSQL + S3."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from factory.channels.sms import smart_encode
from factory.db.models import Item, ItemState, Job, JobStatus
from factory.db.session import get_sessionmaker
from tests.conftest import MODEL_CACHE
from tests.keys import auth_headers
from tests.processes import api_server, factory_env, stack_env, wait_job, worker
from tests.services import REPO, SeaweedS3

pytestmark = pytest.mark.slow

BODY: dict[str, Any] = {
    "kind": "personalization",
    "template": "Write one short sentence inviting {{ first_name }} from {{ city }} to our bike sale.",
    "audience": [
        {"id": "c1", "first_name": "Ana", "city": "Lisbon"},
        {"id": "c2", "first_name": "Ben", "city": "Denver"},
        {"id": "c3", "first_name": "Chloé", "city": "Lyon"},
    ],
    "variants": 2,
    "params": {"max_new_tokens": 24, "temperature": 0.8, "top_p": 0.9, "seed": 1234},
}


def _texts(lines: list[dict[str, Any]]) -> dict[tuple[str, int], str]:
    return {(x["key"], x["variant"]): x["text"] for x in lines}


def test_real_model_job_lands_in_postgres_and_s3_with_provenance(
    pg_db: str, broker_url: str, s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    env = stack_env(pg_db, broker_url, s3_server.endpoint, s3_bucket, FACTORY_MODEL_CACHE_DIR=str(MODEL_CACHE),
                    FACTORY_CHUNK_SIZE="4")
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        client = httpx.Client(base_url=url, timeout=60, headers=auth_headers(pg_db))
        request.addfinalizer(client.close)
        first = client.post("/v1/jobs", json=BODY)
        assert first.status_code == 202, first.text
        job = wait_job(client, first.json()["id"], timeout=600)
        assert job["status"] == "succeeded", job
        assert job["counts"]["succeeded"] == 6 and job["chunk_count"] == 2
        lines = [json.loads(x) for x in client.get(f"/v1/jobs/{job['id']}/results").text.splitlines()]
        # Same job, same seed: the same texts, byte for byte (same machine).
        again = wait_job(client, client.post("/v1/jobs", json=BODY).json()["id"], timeout=600)
        lines_again = [json.loads(x) for x in client.get(f"/v1/jobs/{again['id']}/results").text.splitlines()]
        # A prompt past the model's 8,192-token context (" 1" is two tokens) fails alone, saying so;
        # the other item of its batched call is generated.
        long_job = client.post("/v1/jobs", json={
            "kind": "personalization", "template": "Say hello.{{ pad }}", "params": {"max_new_tokens": 8},
            "audience": [{"id": "short", "pad": ""}, {"id": "long", "pad": " 1" * 5000}]})
        assert long_job.status_code == 202, long_job.text
        ended = wait_job(client, long_job.json()["id"], timeout=600)
        assert (ended["counts"]["succeeded"], ended["counts"]["failed"]) == (1, 1), ended
        outcomes = {x["key"]: x for x in map(json.loads, client.get(ended["results_url"]).text.splitlines())}
        assert outcomes["short"]["status"] == "succeeded" and outcomes["short"]["text"]
        assert outcomes["long"]["status"] == "failed"
        assert "exceeds the model's context of 8192 tokens" in outcomes["long"]["error"]

    assert len(lines) == 6
    texts = _texts(lines)
    assert all(t and len(t.split()) >= 3 for t in texts.values()), texts
    assert texts[("c1", 0)] != texts[("c1", 1)]  # variants differ (different seeds)
    assert _texts(lines_again) == texts

    prov = lines[0]["provenance"]
    assert prov["model"] == "smollm2-135m-instruct"
    assert len(prov["weights_sha256"]) == 64 and prov["weights_sha256"] != "0" * 64
    assert prov["generator"] == "transformers" and prov["device"].startswith("cpu")
    assert {"torch", "transformers"} <= set(prov["libraries"])
    assert prov["params"] == {"max_new_tokens": 24, "temperature": 0.8, "top_p": 0.9, "repetition_penalty": 1.1}
    assert prov["job_seed"] == 1234 and isinstance(prov["seed"], int)
    assert 0 < prov["completion_tokens"] <= 25 and prov["prompt_tokens"] > 10
    assert prov["finish_reason"] in ("stop", "length")
    # FACTORY_TORCH_DTYPE=auto: the worker ran in the dtype it measured fastest for chunks of 4 here.
    verdicts = json.loads((MODEL_CACHE / "dtype-choice.json").read_text())
    [verdict] = [v for k, v in verdicts.items() if k.startswith(prov["weights_sha256"][:16]) and k.endswith("batch 4")]
    assert prov["dtype"] == verdict["dtype"]
    assert prov["batch_size"] in (2, 4) and prov["timings_ms"]["generate"] > 0

    with get_sessionmaker(pg_db)() as s:
        row = s.scalar(select(Job).where(Job.id == job["id"]))
        assert row is not None and row.status == JobStatus.SUCCEEDED and row.finished_at is not None
        items = list(s.scalars(select(Item).where(Item.job_id == job["id"]).order_by(Item.seq)))
        assert [i.state for i in items] == [ItemState.SUCCEEDED] * 6
        assert {(i.key, i.variant): i.text for i in items} == texts
        assert items[0].prompt == "Write one short sentence inviting Ana from Lisbon to our bike sale."
        assert items[0].provenance is not None and items[0].provenance["prompt_sha256"] == items[0].prompt_sha256

    s3 = s3_server.client()
    prefix = f"tenants/default/jobs/{job['id']}/results/"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix=prefix)["Contents"])
    assert keys == [prefix + "chunk-000000.jsonl", prefix + "chunk-000001.jsonl"]
    shard_lines = [json.loads(line) for k in keys
                   for line in s3.get_object(Bucket=s3_bucket, Key=k)["Body"].read().decode().splitlines()]
    assert _texts(shard_lines) == texts


def test_make_demo_path_prints_checked_campaign_copy(tmp_path: Path) -> None:
    """`factory demo` on embedded defaults (embedded Redis, SQLite, local storage) in a bare directory: the demo
    campaign, its pass rates, its copy with each check's verdict, and its CSV export. The dtype is pinned to the
    one `auto` picks on an idle machine of this kind, so a loaded CI machine's measurement cannot change the copy."""
    env = factory_env(FACTORY_MODEL_CACHE_DIR=str(MODEL_CACHE), COLUMNS="200", FACTORY_TORCH_DTYPE="bfloat16")
    out = subprocess.run([sys.executable, "-m", "factory.cli", "demo", "--timeout", "600"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "240 recipients, 4 copies to write (segment mode" in out.stdout
    assert re.search(r"│ pass_rate +│ 1\.0 ", out.stdout), out.stdout[-3000:]
    assert out.stdout.count("AI-generated") == 4  # the two tiers' email and SMS; the control is the brief's own
    exports = sorted((tmp_path / ".factory" / "demo").glob("job_*.csv"))
    assert len(exports) == 1
    table = list(csv.DictReader(io.StringIO(exports[0].read_text())))
    assert len(table) == 240
    assert {(r["email.v1.status"], r["sms.v1.status"], r["email.v1.ai_generated"]) for r in table} == {
        ("passed", "passed", "true")}
    # Written once per tier, merged per recipient: each copy opens with the recipient's own name.
    audience = (REPO / "examples/campaign/audience-240.csv").read_text()
    names = {r["id"]: r["first_name"] for r in csv.DictReader(io.StringIO(audience))}
    for row in table:
        assert row["email.v1.body"].startswith(f"Hi {names[row['key']]}, ")
        assert row["sms.v1.text"].startswith(f"Hi {smart_encode(names[row['key']])}! ")
    # The embedded Redis was stopped again.
    assert not (tmp_path / ".factory" / "redis.url").exists()
    assert os.path.exists(tmp_path / ".factory" / "factory.db")
