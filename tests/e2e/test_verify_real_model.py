"""Verify with the real model: a job made in one batch of 8, verified as a whole, regenerates alone, byte
for byte.

API process -> Redis -> worker process -> PostgreSQL + S3, SmolLM2-135M on this machine's CPU.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MODEL_CACHE
from tests.keys import auth_headers
from tests.processes import api_server, stack_env, wait_job, worker
from tests.services import SeaweedS3

pytestmark = pytest.mark.slow

NAMES = ["Ana", "Benjamin Alexander", "Chloé", "Dmitri from the far north", "Eve", "Fatima", "Grégoire-Jean", "Hu"]


def test_items_of_a_real_batch_of_8_verify_byte_for_byte(
    pg_db: str, broker_url: str, s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    env = stack_env(pg_db, broker_url, s3_server.endpoint, s3_bucket, FACTORY_MODEL_CACHE_DIR=str(MODEL_CACHE),
                    FACTORY_CHUNK_SIZE="8", FACTORY_TORCH_DTYPE="float32")
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        client = httpx.Client(base_url=url, timeout=60, headers=auth_headers(pg_db))
        request.addfinalizer(client.close)
        created = client.post("/v1/jobs", json={
            "kind": "personalization", "template": "Write a short story about {{ name }} in a city.",
            "audience": [{"id": f"r{i}", "name": name} for i, name in enumerate(NAMES)],
            "params": {"max_new_tokens": 48, "temperature": 0.8, "top_p": 0.9, "seed": 77}})
        assert created.status_code == 202, created.text
        job = wait_job(client, created.json()["id"], timeout=600)
        assert job["status"] == "succeeded", job
        lines = [json.loads(x) for x in client.get(f"/v1/jobs/{job['id']}/results").text.splitlines()]
        assert len(lines) == 8 and {x["provenance"]["batch_size"] for x in lines} == {8}
        # Prompts of different lengths: every row but the longest was left-padded in its batch.
        assert len({x["provenance"]["prompt_tokens"] for x in lines}) > 1

        # The whole job as one verification: a job of kind verify, each item regenerated alone.
        started = client.post(f"/v1/jobs/{job['id']}/verify")
        assert started.status_code == 202, started.text
        answer: dict[str, Any] = started.json()
        deadline = time.monotonic() + 600
        while answer["status"] not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, answer
            time.sleep(0.5)
            answer = client.get(answer["url"]).json()
        assert answer["counts"] == {"total": 8, "match": 8, "mismatch": 0, "failed": 0, "pending": 0}, answer
        assert (answer["result"], answer["mismatches"], answer["reason_counts"]) == ("match", [], {})
        again = {(x := json.loads(raw))["provenance"]["verify"]["item_id"]: x
                 for raw in client.get(f"/v1/jobs/{answer['id']}/results").text.splitlines()}
        for line in lines:
            regenerated = again[line["item_id"]]
            assert regenerated["text"] == line["text"] and regenerated["provenance"]["batch_size"] == 1
            assert regenerated["provenance"]["weights_sha256"] == line["provenance"]["weights_sha256"]
            assert regenerated["provenance"]["dtype"] == "float32"
