"""The shipped augmentation example through `factory submit`, an API process and a real worker process
(fake generator for the LLM methods; real EDA, noise, filters and embeddings), PostgreSQL and an S3 server.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from factory.augmentation import prompts
from factory.db.models import AugmentationVerdict, Item, ItemState
from factory.db.session import get_sessionmaker
from factory.provenance.hashing import schema_sha256
from tests.keys import api_key, auth_headers
from tests.processes import api_server, factory_env, wait_job, worker
from tests.services import REPO, SeaweedS3
from workers.kinds.augmentation import apply_rule

EXAMPLE = REPO / "examples" / "augmentation"


@pytest.mark.slow
def test_example_job_via_cli_yields_k_variants_per_row_a_report_and_a_loadable_dataset(
    pg_db: str, broker_url: str, s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path,
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = factory_env(
        FACTORY_DATABASE_URL=pg_db, FACTORY_BROKER_URL=broker_url, FACTORY_STORAGE_URL=f"s3://{s3_bucket}",
        FACTORY_S3_ENDPOINT_URL=s3_server.endpoint, FACTORY_S3_ACCESS_KEY_ID="test",
        FACTORY_S3_SECRET_ACCESS_KEY="test", FACTORY_GENERATOR="fake", FACTORY_CHUNK_SIZE="8",
        FACTORY_RULE_CHUNK_SIZE="64", FACTORY_API_KEY=api_key(pg_db),  # the CLI's key
    )
    with open(EXAMPLE / "intents.csv", encoding="utf-8") as fh:
        source = list(csv.DictReader(fh))
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        out = subprocess.run([sys.executable, "-m", "factory.cli", "submit", str(EXAMPLE / "job.json"),
                              "--api-url", url], cwd=REPO, env={**env, "COLUMNS": "200"}, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        match = re.search(r"job (job_[0-9a-f]{28}): 432 items queued", out.stdout)
        assert match, out.stdout
        job_id = match.group(1)
        client = httpx.Client(base_url=url, timeout=60, headers=auth_headers(pg_db))
        request.addfinalizer(client.close)
        job = wait_job(client, job_id, timeout=600)
        assert job["status"] == "succeeded", job
        assert job["counts"] == {"total": 432, "pending": 0, "succeeded": 432, "failed": 0, "cancelled": 0}
        report = client.get(f"/v1/jobs/{job_id}/report").json()
        listing = client.get(f"/v1/jobs/{job_id}/dataset").json()
        parquet = client.get(f"/v1/jobs/{job_id}/dataset/data/train-00000-of-00001.parquet")
        card = client.get(f"/v1/jobs/{job_id}/dataset/README.md")
        missing = client.get(f"/v1/jobs/{job_id}/dataset/data/train-00001-of-00002.parquet")
        cli_env = {**env, "COLUMNS": "200"}
        fetched = subprocess.run([sys.executable, "-m", "factory.cli", "dataset", job_id, "--out",
                                  str(tmp_path / "ds"), "--api-url", url], cwd=REPO, env=cli_env,
                                 capture_output=True, text=True, timeout=120)
        assert fetched.returncode == 0, fetched.stdout + fetched.stderr
        printed = subprocess.run([sys.executable, "-m", "factory.cli", "report", job_id, "--api-url", url],
                                 cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=120)
        assert printed.returncode == 0 and json.loads(printed.stdout) == report

    # k variants per row (or per label) for every method, each item ended once.
    assert {m["method"]: (m["k"], m["items"]) for m in report["methods"]} == {
        "paraphrase": (1, {"succeeded": 100}), "generate": (4, {"succeeded": 32}),
        "eda": (2, {"succeeded": 200}), "char_noise": (1, {"succeeded": 100})}
    with get_sessionmaker(pg_db)() as s:
        items = list(s.scalars(select(Item).where(Item.job_id == job_id).order_by(Item.seq)))
        verdicts = int(s.scalar(select(func.count()).select_from(AugmentationVerdict)
                                .where(AugmentationVerdict.job_id == job_id)) or 0)
    assert verdicts == 432 and all(i.state == ItemState.SUCCEEDED for i in items)
    per_row = {(i.key.split(":")[0], i.record["source_row_id"]) for i in items if not i.key.startswith("generate")}
    assert len(per_row) == 300  # 3 per-row methods x 100 rows
    # Rule-based variants are reproducible from the item alone.
    for item in [i for i in items if i.key.startswith(("eda:", "char_noise:"))][::37]:
        assert item.request is not None
        assert item.text == apply_rule(item.request["method"], item.prompt, item.request["options"], item.seed,
                                       item.variant)
        assert item.provenance is not None and item.provenance["generator"] == "rules"

    assert report["generated"]["generated"] == 432
    assert report["generated"]["accepted"] + report["generated"]["rejected"] == 432
    assert [f["name"] for f in report["filters"]] == [
        "length", "charset", "prompt_leftover", "exact_duplicate", "similarity_band", "label_consistency",
        "near_duplicate"]
    assert report["label_distribution"]["before"] == dict(
        (label, sum(r["label"] == label for r in source)) for label in dict.fromkeys(r["label"] for r in source))
    # The fake generator's answers echo the prompt ("Rewrite this sentence..."): the filters must drop them.
    assert report["methods"][0]["accepted"] == 0
    assert report["rows"] == 100 + report["generated"]["accepted"]
    assert [f["name"] for f in listing["data"]] == [
        "README.md", "data/train-00000-of-00001.parquet", "jsonl/train.jsonl", "rejected.jsonl"]
    assert parquet.status_code == 200 and parquet.headers["content-type"] == "application/vnd.apache.parquet"
    assert card.status_code == 200 and "machine-generated" in card.text
    assert missing.status_code == 404

    # The downloaded folder is a dataset as the hub lays it out: load it the way its users will.
    folder = tmp_path / "ds"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "README.md", "data/train-00000-of-00001.parquet", "jsonl/train.jsonl", "rejected.jsonl"]
    assert (folder / "data" / "train-00000-of-00001.parquet").read_bytes() == parquet.content
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(folder / "data" / "train-*.parquet"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == report["rows"]
    methods = ds["method"]
    assert methods.count("original") == 100
    assert set(methods) <= {"original", "paraphrase", "generate", "eda", "char_noise"}
    assert {json.loads(p)["job_seed"] for p, m in zip(ds["provenance"], methods, strict=True) if m != "original"} \
        == {7}

    s3 = s3_server.client()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix=f"tenants/default/jobs/{job_id}/")
            ["Contents"]}
    assert f"tenants/default/jobs/{job_id}/report.json" in keys
    assert f"tenants/default/jobs/{job_id}/dataset/jsonl/train.jsonl" in keys


@pytest.mark.slow
def test_structured_generate_rows_are_the_records_text_with_the_label_asked_for(
    pg_db: str, broker_url: str, s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    env = factory_env(
        FACTORY_DATABASE_URL=pg_db, FACTORY_BROKER_URL=broker_url, FACTORY_STORAGE_URL=f"s3://{s3_bucket}",
        FACTORY_S3_ENDPOINT_URL=s3_server.endpoint, FACTORY_S3_ACCESS_KEY_ID="test",
        FACTORY_S3_SECRET_ACCESS_KEY="test", FACTORY_GENERATOR="fake", FACTORY_CHUNK_SIZE="8",
    )
    job_spec = json.loads((EXAMPLE / "job.json").read_text())
    with open(EXAMPLE / "intents.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    body = {"kind": "augmentation", "dataset": {"rows": rows}, "labels": job_spec["labels"],
            "methods": [{"method": "generate", "k": 2, "shots": 2, "output": "json"}],
            "params": {"max_new_tokens": 32, "seed": 5}}
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        client = httpx.Client(base_url=url, timeout=60, headers=auth_headers(pg_db))
        request.addfinalizer(client.close)
        r = client.post("/v1/jobs", json=body)
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["id"], timeout=300)
        assert job["status"] == "succeeded" and job["counts"]["succeeded"] == 16, job

    with get_sessionmaker(pg_db)() as s:
        items = list(s.scalars(select(Item).where(Item.job_id == job["id"]).order_by(Item.seq)))
    assert len(items) == 16 and {i.record["label"] for i in items} == set(job_spec["labels"])
    for item in items:
        assert item.request and item.provenance and item.text
        record = json.loads(item.provenance["raw_text"])  # what the model wrote: the record
        assert record["label"] == item.record["label"] and item.text == record["text"]
        assert item.provenance["response_format"]["schema_sha256"] == schema_sha256(
            prompts.record_schema(item.record["label"]))
        assert item.request["params"] == {"max_new_tokens": 32 + prompts.RECORD_TOKENS}
