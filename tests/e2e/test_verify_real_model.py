"""Verify with the real model: every item of a job made in one batch of 8 regenerates alone, byte for byte.

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

        started = [client.post(f"/v1/items/{x['item_id']}/verify") for x in lines]
        assert [s.status_code for s in started] == [202] * 8, [s.text for s in started]
        answers: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 600
        while len(answers) < 8:
            assert time.monotonic() < deadline, answers
            for s in started:
                body = client.get(s.json()["url"]).json()
                if body["result"] is not None or body["status"] in ("failed", "cancelled"):
                    answers[body["item_id"]] = body
            time.sleep(0.5)
        assert {a["result"] for a in answers.values()} == {"match"}, answers
        assert all(a["reasons"] == [] for a in answers.values())
        for line in lines:
            [again] = [json.loads(x) for x in
                       client.get(f"/v1/jobs/{answers[line['item_id']]['id']}/results").text.splitlines()]
            assert again["text"] == line["text"] and again["provenance"]["batch_size"] == 1
            assert again["provenance"]["weights_sha256"] == line["provenance"]["weights_sha256"]
            assert again["provenance"]["dtype"] == "float32"
