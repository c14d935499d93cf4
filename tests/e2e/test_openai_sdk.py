"""The official openai SDK, unchanged, against the factory: real model, API and worker processes,
Redis, PostgreSQL and an S3 server.

files.create -> batches.create -> batches.retrieve until done -> files.content, for a file
mixing chat, personalize and augment lines; and a second file with bad lines, which fails
validation as OpenAI's does (errors naming the lines, nothing run).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from sqlalchemy import select

from factory.batches.schemas import FINAL_STATUSES
from factory.db.models import Batch, Item, Job
from factory.db.session import get_sessionmaker
from tests.conftest import MODEL_CACHE
from tests.keys import api_key
from tests.processes import api_server, factory_env, worker
from tests.services import SeaweedS3

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"


def chat(custom_id: str, content: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 16,
                     "temperature": 0.7, "seed": 11, **body}}


AUGMENT_ROWS = [{"id": "r1", "text": "Where is my parcel right now?", "label": "track_order"},
                {"id": "r2", "text": "Please cancel the order I placed yesterday.", "label": "cancel_order"},
                {"id": "r3", "text": "Has my package been shipped yet?", "label": "track_order"},
                {"id": "r4", "text": "I want to cancel my purchase today.", "label": "cancel_order"}]

GOOD = [
    chat("chat-1", "Write a one-line slogan for a bike shop."),
    chat("chat-2", "Name a fruit.", n=2, max_tokens=8),
    {**chat("chat-3", "Count from one to ten in words.", stop=["five"], temperature=0.0)},
    {"custom_id": "pers-1", "method": "POST", "url": "/v1/personalize",
     "body": {"template": "Write one short sentence inviting {{ first_name }} to our sale.",
              "audience": [{"id": "r1", "first_name": "Ana"}, {"id": "r2", "first_name": "Ben"}],
              "params": {"max_new_tokens": 16, "seed": 5}}},
    {"custom_id": "aug-1", "method": "POST", "url": "/v1/augment",
     "body": {"model": MODEL, "dataset": {"rows": AUGMENT_ROWS}, "params": {"seed": 9},
              "methods": [{"method": "eda", "k": 2}, {"method": "paraphrase", "k": 1}]}},
    {"custom_id": "chat-4", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": MODEL, "max_completion_tokens": 12,
              "messages": [{"role": "system", "content": "You answer in one word."},
                           {"role": "user", "content": "What colour is the sky?"}]}},
]

BAD = [
    chat("ok", "Hello"),
    chat("ok", "Hello again"),                                          # line 2: duplicate custom_id
    {"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}},  # 3: model not allowed
    {"custom_id": "y", "method": "DELETE", "url": "/v1/chat/completions", "body": {}},  # 4
    {"custom_id": "z", "method": "POST", "url": "/v1/augment",                         # 5: unknown method
     "body": {"dataset": {"rows": AUGMENT_ROWS}, "methods": [{"method": "back_translate"}]}},
]


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def check_augment_body(body: dict[str, Any]) -> None:
    """The augment line: its source rows, then what passed the filters; the rest with the reason."""
    assert body["object"] == "augmentation.result" and body["model"] == MODEL and body["id"].startswith("aug-")
    labels = {r["id"]: r["label"] for r in AUGMENT_ROWS}
    assert body["data"][:4] == [{"text": r["text"], "label": r["label"], "method": "original", "source_row_id": r["id"],
                                 "variant": None} for r in AUGMENT_ROWS]
    made = body["data"][4:] + body["rejected"]
    assert sorted((r["method"], r["source_row_id"], r["variant"]) for r in made) == sorted(
        [("eda", r, k) for r in labels for k in range(2)] + [("paraphrase", r, 0) for r in labels])
    assert all(r["label"] == labels[r["source_row_id"]] and r["text"].strip() for r in made)
    assert all(r["reason"] for r in body["rejected"]) and all("reason" not in r for r in body["data"])
    report = body["report"]
    assert (report["generated"], report["accepted"]) == (12, len(body["data"]) - 4)
    assert sum(report["rejected_by"].values()) == len(body["rejected"]) == 12 - report["accepted"]
    assert report["acceptance_rate"] == round(report["accepted"] / 12, 4)
    assert body["usage"]["completion_tokens"] > 0  # the paraphrases ran on the model; EDA costs no tokens


def test_openai_sdk_batch_flow_with_the_real_model(
    pg_db: str, broker_url: str, s3_server: SeaweedS3, s3_bucket: str, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    env = factory_env(
        FACTORY_DATABASE_URL=pg_db, FACTORY_BROKER_URL=broker_url, FACTORY_STORAGE_URL=f"s3://{s3_bucket}",
        FACTORY_S3_ENDPOINT_URL=s3_server.endpoint, FACTORY_S3_ACCESS_KEY_ID="test",
        FACTORY_S3_SECRET_ACCESS_KEY="test", FACTORY_MODEL_CACHE_DIR=str(MODEL_CACHE), FACTORY_CHUNK_SIZE="4",
    )
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        client = OpenAI(base_url=f"{url}/v1", api_key=api_key(pg_db))
        request.addfinalizer(client.close)

        good_file = client.files.create(file=("good.jsonl", jsonl(GOOD)), purpose="batch")
        bad_file = client.files.create(file=("bad.jsonl", jsonl(BAD)), purpose="batch")
        assert good_file.purpose == "batch" and good_file.bytes == len(jsonl(GOOD))
        batch = client.batches.create(input_file_id=good_file.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        failed = client.batches.create(input_file_id=bad_file.id, endpoint="/v1/chat/completions",
                                       completion_window="24h")

        # Synchronous chat on the same worker pool, while the batch is queued.
        reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Say hello."}],
                                               max_tokens=8, seed=3)

        deadline = time.monotonic() + 600
        while batch.status not in FINAL_STATUSES and time.monotonic() < deadline:
            time.sleep(1)
            batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed", batch
        assert batch.output_file_id is not None
        output = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        errors = ([] if batch.error_file_id is None else
                  [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()])
        listed = [b.id for b in client.batches.list()]

    # The failed batch: validation errors naming the lines, as OpenAI reports them.
    assert failed.status == "failed" and failed.errors is not None and failed.errors.data is not None
    assert [(e.line, e.code) for e in failed.errors.data] == [
        (2, "duplicate_custom_id"), (3, "model_not_found"), (4, "invalid_method"), (5, "invalid_request")]
    assert failed.errors.data[3].param == "body.methods.0.method"
    assert failed.output_file_id is None and failed.request_counts is not None
    assert listed == [failed.id, batch.id]

    # Every custom_id exactly once across the output and error files.
    ids = [x["custom_id"] for x in output + errors]
    assert sorted(ids) == sorted(x["custom_id"] for x in GOOD) and len(ids) == len(set(ids))
    assert errors == [] and batch.error_file_id is None  # every line of the good file ran
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (6, 6, 0)
    assert batch.usage is not None and batch.usage.input_tokens > 0 and batch.usage.output_tokens > 0

    bodies = {x["custom_id"]: x["response"]["body"] for x in output}
    for custom_id in ("chat-1", "chat-2", "chat-3", "chat-4"):
        body = bodies[custom_id]
        assert body["object"] == "chat.completion" and body["model"] == MODEL
        assert all(c["finish_reason"] in ("stop", "length") for c in body["choices"])
        assert 0 < body["usage"]["completion_tokens"] <= 16 * len(body["choices"])
    assert bodies["chat-1"]["choices"][0]["message"]["content"].strip()
    assert len(bodies["chat-2"]["choices"]) == 2
    assert "five" not in bodies["chat-3"]["choices"][0]["message"]["content"]
    assert [r["key"] for r in bodies["pers-1"]["results"]] == ["r1", "r2"]
    assert all(r["text"].strip() for r in bodies["pers-1"]["results"])

    check_augment_body(bodies["aug-1"])

    assert reply.choices[0].message.content and reply.usage is not None and reply.usage.completion_tokens <= 8

    with get_sessionmaker(pg_db)() as s:
        row = s.get(Batch, batch.id)
        assert row is not None
        job = s.get(Job, row.job_id)
        assert job is not None and job.kind == "batch" and job.item_count == 19  # 1 + 2 + 1 + 2 + 12 + 1
        items = list(s.scalars(select(Item).where(Item.job_id == job.id)))
        ran = [i for i in items if i.provenance]
        assert len(ran) == 19 and {i.provenance["generator"] for i in ran if i.provenance} == {"transformers",
                                                                                               "rules"}
        assert {i.record["method"] for i in ran if i.provenance and i.provenance["generator"] == "rules"} == {"eda"}
        assert s.get(Batch, failed.id) is not None and s.get(Batch, failed.id).job_id is None  # type: ignore[union-attr]
