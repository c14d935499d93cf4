"""Augmentation end to end with the real model: API process -> Redis -> worker process -> PostgreSQL + S3.

Kept small for a CPU: LLM paraphrases for the first 10 rows of the example
dataset (k=1, 32 new tokens, one batched call), EDA on all 100 rows (k=2).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from factory.db.models import AugmentationVerdict, Item, ItemState
from factory.db.session import get_sessionmaker
from tests.conftest import MODEL_CACHE
from tests.keys import auth_headers
from tests.processes import api_server, factory_env, wait_job, worker
from tests.services import REPO, SeaweedS3

pytestmark = pytest.mark.slow

EXAMPLE = REPO / "examples" / "augmentation"


def _body() -> dict[str, Any]:
    job: dict[str, Any] = json.loads((EXAMPLE / "job.json").read_text())
    return {
        "kind": "augmentation",
        "dataset": {"content": base64.b64encode((EXAMPLE / "intents.csv").read_bytes()).decode(),
                    "format": "csv", "text_field": "text", "label_field": "label", "id_field": "id"},
        "labels": job["labels"],
        "methods": [{"method": "paraphrase", "k": 1, "max_rows": 10}, {"method": "eda", "k": 2}],
        "filters": {"label_check": "centroid"},
        "params": {"max_new_tokens": 32, "temperature": 0.7, "top_p": 0.9, "seed": 21},
    }


def test_real_model_paraphrases_and_eda_become_a_filtered_loadable_dataset(
    pg_db: str, broker_url: str, s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path,
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = factory_env(
        FACTORY_DATABASE_URL=pg_db, FACTORY_BROKER_URL=broker_url, FACTORY_STORAGE_URL=f"s3://{s3_bucket}",
        FACTORY_S3_ENDPOINT_URL=s3_server.endpoint, FACTORY_S3_ACCESS_KEY_ID="test",
        FACTORY_S3_SECRET_ACCESS_KEY="test", FACTORY_MODEL_CACHE_DIR=str(MODEL_CACHE), FACTORY_CHUNK_SIZE="10",
        # The quality floors below were measured in float32; auto would measure this machine first.
        FACTORY_TORCH_DTYPE="float32",
    )
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        client = httpx.Client(base_url=url, timeout=60, headers=auth_headers(pg_db))
        request.addfinalizer(client.close)
        created = client.post("/v1/jobs", json=_body())
        assert created.status_code == 202, created.text
        job = wait_job(client, created.json()["id"], timeout=900)
        assert job["status"] == "succeeded", job
        assert job["counts"] == {"total": 210, "pending": 0, "succeeded": 210, "failed": 0, "cancelled": 0}
        report = client.get(f"/v1/jobs/{job['id']}/report").json()
        parquet = client.get(f"/v1/jobs/{job['id']}/dataset/data/train-00000-of-00001.parquet").content

    with get_sessionmaker(pg_db)() as s:
        items = list(s.scalars(select(Item).where(Item.job_id == job["id"]).order_by(Item.seq)))
        verdicts = {v.item_id: v for v in s.scalars(
            select(AugmentationVerdict).where(AugmentationVerdict.job_id == job["id"]))}
    paraphrases = [i for i in items if i.key.startswith("paraphrase:")]
    edas = [i for i in items if i.key.startswith("eda:")]
    # k variants per row: one paraphrase for each of the first 10 rows, two EDA variants for all 100.
    assert [i.record["source_row_id"] for i in paraphrases] == [f"u{n:03d}" for n in range(1, 11)]
    assert sorted((i.record["source_row_id"], i.variant) for i in edas) == sorted(
        (f"u{n:03d}", v) for n in range(1, 101) for v in range(2))
    assert all(i.state == ItemState.SUCCEEDED and i.text is not None for i in items)
    assert len(verdicts) == 210
    # The model really ran, in one batched call, and said so in the provenance.
    prov = paraphrases[0].provenance
    assert prov is not None and prov["generator"] == "transformers" and prov["batch_size"] == 10
    assert len(prov["weights_sha256"]) == 64 and prov["weights_sha256"] != "0" * 64
    assert 0 < prov["completion_tokens"] <= 33 and prov["method"] == "paraphrase"
    assert prov["params"]["max_new_tokens"] == 32
    assert all(i.text and i.text.strip() for i in paraphrases)

    by_method = {m["method"]: m for m in report["methods"]}
    assert by_method["paraphrase"]["generated"] == 10 and by_method["eda"]["generated"] == 200
    accepted = report["generated"]["accepted"]
    assert accepted == sum(v.accepted for v in verdicts.values())
    assert by_method["eda"]["accepted"] >= 100  # most EDA variants survive the default filters
    assert report["filters"][0]["evaluated"] == 210
    assert report["model"]["weights_sha256"] == prov["weights_sha256"]

    shard = tmp_path / "train-00000-of-00001.parquet"
    shard.write_bytes(parquet)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(shard), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == 100 + accepted == report["rows"]
    kept_texts = {i.text for i in items if verdicts[i.id].accepted}
    generated_rows = [r for r in ds if r["method"] != "original"]
    assert {r["text"] for r in generated_rows} == kept_texts
    assert all(r["source_row_id"] and r["label"] for r in generated_rows)
