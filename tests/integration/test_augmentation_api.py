"""Submitting augmentation jobs, against real databases (SQLite and PostgreSQL) and a real Redis."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from factory.client import load_job_file
from factory.config import Settings
from factory.db.models import AugmentationSourceRow, Chunk, Item, Job, OutboxMessage
from factory.db.session import get_sessionmaker
from tests.rows import count_rows

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "augmentation"
CANARY = "CANARY-5d1c-DO-NOT-ECHO"


def rows(n: int = 6) -> list[dict[str, Any]]:
    labels = ["refund", "track_order", "cancel_order"]
    return [{"id": f"r{i}", "text": f"Customer message number {i} about my order.", "label": labels[i % 3]}
            for i in range(n)]


def body(**kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": "augmentation",
        "dataset": {"rows": rows()},
        "methods": [{"method": "paraphrase", "k": 2}, {"method": "eda", "k": 3}],
        "params": {"seed": 11},
    }
    out.update(kw)
    return out


def content(data: bytes, fmt: str, **kw: Any) -> dict[str, Any]:
    return {"content": base64.b64encode(data).decode(), "format": fmt, **kw}


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                    chunk_size=4, rule_chunk_size=10, max_dataset_rows=200)


def test_augmentation_job_plans_k_items_per_row_and_method(client: TestClient, settings: Settings) -> None:
    r = client.post("/v1/jobs", json=body())
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "augmentation" and job["status"] == "queued"
    # 6 rows x 2 paraphrases (chunks of 4) + 6 rows x 3 EDA variants (chunks of 10).
    assert job["counts"]["total"] == 12 + 18
    assert job["chunk_count"] == 3 + 2
    assert count_rows(settings.database_url, AugmentationSourceRow) == 6
    with get_sessionmaker(settings.database_url)() as s:
        items = list(s.scalars(select(Item).order_by(Item.seq)))
        chunks = {c.id: c.seq for c in s.scalars(select(Chunk))}
        stored = s.scalar(select(Job))
        assert stored is not None
        assert stored.options["dataset"]["rows"] == 6 and len(stored.options["dataset"]["sha256"]) == 64
    assert Counter(i.key.split(":")[0] for i in items) == {"paraphrase": 12, "eda": 18}
    assert [(i.key, i.variant) for i in items[:3]] == [("paraphrase:r0", 0), ("paraphrase:r0", 1),
                                                      ("paraphrase:r1", 0)]
    # LLM items and rule items never share a chunk.
    llm_chunks = {chunks[i.chunk_id] for i in items if i.key.startswith("paraphrase")}
    rule_chunks = {chunks[i.chunk_id] for i in items if i.key.startswith("eda")}
    assert llm_chunks == {0, 1, 2} and rule_chunks == {3, 4}
    para = items[0]
    assert para.request is not None and para.request["method"] == "paraphrase"
    assert para.request["messages"][-1]["content"].endswith("Sentence: Customer message number 0 about my order.")
    assert "(refund)" in para.request["messages"][-1]["content"]
    assert para.record == {"method": "paraphrase", "label": "refund", "source_row_id": "r0",
                           "source_text": "Customer message number 0 about my order."}
    eda = items[12]
    assert eda.request == {"method": "eda", "options": {"alpha": 0.1,
                                                       "operations": ["synonym", "insert", "swap", "delete"]}}
    assert eda.prompt == "Customer message number 0 about my order."
    assert len({i.seed for i in items}) == 30  # every item its own seed
    queued = redis.Redis.from_url(settings.broker_url or "").lrange("gen.smollm2-135m-instruct", 0, -1)
    assert len(queued) == 5


def test_generate_plans_k_rows_per_label_with_seed_rows_as_turns(client: TestClient, settings: Settings) -> None:
    r = client.post("/v1/jobs", json=body(methods=[{"method": "generate", "k": 2, "shots": 1}],
                                          labels={"refund": "wants money back"}))
    assert r.status_code == 202, r.text
    with get_sessionmaker(settings.database_url)() as s:
        items = list(s.scalars(select(Item).order_by(Item.seq)))
    assert [(i.key, i.variant) for i in items] == [
        ("generate:refund", 0), ("generate:refund", 1), ("generate:track_order", 0), ("generate:track_order", 1),
        ("generate:cancel_order", 0), ("generate:cancel_order", 1)]
    first = items[0]
    assert first.request is not None
    messages = first.request["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[-1]["content"] == "Write a short message from a customer with the intent: wants money back."
    assert first.record["shots"][0] in {"r0", "r3"}
    assert messages[1]["content"] in {rows()[0]["text"], rows()[3]["text"]}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_dataset_content_in_each_format_gives_the_same_rows(client: TestClient, settings: Settings,
                                                            fmt: str) -> None:
    data = rows(4)
    r = client.post("/v1/jobs", json=body(dataset=content(_dataset_bytes(data, fmt), fmt)))
    assert r.status_code == 202, r.text
    _assert_same_rows_as_inline(client, settings, r.json()["id"], data)


def _assert_same_rows_as_inline(client: TestClient, settings: Settings, job_id: str,
                                data: list[dict[str, Any]]) -> None:
    """The job's source rows are ``data``, and its dataset fingerprint is the inline rows' one."""
    inline = client.post("/v1/jobs", json=body(dataset={"rows": data}))
    with get_sessionmaker(settings.database_url)() as s:
        jobs = {j.id: j for j in s.scalars(select(Job))}
        got = [(x.row_id, x.label, x.text) for x in s.scalars(
            select(AugmentationSourceRow).where(AugmentationSourceRow.job_id == job_id)
            .order_by(AugmentationSourceRow.seq))]
    assert got == [(d["id"], d["label"], d["text"]) for d in data]
    # Same rows, same fingerprint, whatever the format or source.
    assert jobs[job_id].options["dataset"]["sha256"] == jobs[inline.json()["id"]].options["dataset"]["sha256"]


def test_the_shipped_example_job_is_accepted(client: TestClient) -> None:
    job = load_job_file(EXAMPLE / "job.json")
    r = client.post("/v1/jobs", json=job)
    assert r.status_code == 202, r.text
    # 100 rows: paraphrase x1, generate x4 for 8 intents, EDA x2, char noise x1.
    assert r.json()["counts"]["total"] == 100 + 32 + 200 + 100


def _csv(rows_: list[dict[str, Any]], fields: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows_)
    return buf.getvalue().encode()


NOT_UTF8 = "id,text,label\nr1,caf\xe9 au lait,order\n".encode("latin-1")

BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("missing label column (csv)", body(dataset=content(_csv(rows(), ["id", "text"]), "csv")),
     "dataset.label_field", "has no column 'label'"),
    ("missing label column (rows)", body(dataset={"rows": [{"id": "a", "text": CANARY}]}),
     "dataset.label_field", "has no column 'label'"),
    ("label field renamed", body(dataset={"rows": rows(), "label_field": "intent"}),
     "dataset.label_field", "has no column 'intent'"),
    ("empty text", body(dataset={"rows": [*rows(2), {"id": "x", "text": "   ", "label": CANARY}]}),
     "dataset.text_field", "dataset row 2 has an empty 'text'"),
    ("unknown method", body(methods=[{"method": "backtranslate", "k": 1}]), "methods[0].method",
     "Input should be 'paraphrase', 'generate', 'eda' or 'char_noise'"),
    ("k zero", body(methods=[{"method": "eda", "k": 0}]), "methods[0].k", "greater than or equal to 1"),
    ("k too large", body(methods=[{"method": "paraphrase", "k": 17}]), "methods[0].k", "less than or equal to 16"),
    ("not utf-8", body(dataset=content(NOT_UTF8, "csv")), "dataset.content",
     "dataset.content is not valid UTF-8 (first bad byte at offset 20)"),
    ("not utf-8 jsonl", body(dataset=content(b'{"id": "a", "text": "\xff\xfe", "label": "x"}\n', "jsonl")),
     "dataset.content", "is not valid UTF-8"),
    ("not base64", body(dataset={"content": "%%%not-base64%%%", "format": "csv"}), "dataset.content",
     "is not valid base64"),
    ("not parquet", body(dataset=content(b"PAR1 garbage " + CANARY.encode(), "parquet")), "dataset.content",
     "is not a readable Parquet file"),
    # Rows are read as a stream, so the first problem in file order is the one reported.
    ("bad jsonl line", body(dataset=content(b'{"id": 1, "text": "hi there", "label": "x"}\n{not json\n', "jsonl")),
     "dataset.content", "JSONL line 2 is not valid JSON"),
    ("content without format", body(dataset={"content": "aWQ="}), "dataset",
     "'format' (csv, jsonl or parquet) is required"),
    ("rows and content", body(dataset={"rows": rows(), "content": "aWQ=", "format": "csv"}), "dataset",
     "give exactly one of 'rows', 'content' or 'file_id'"),
    ("duplicate id", body(dataset={"rows": [*rows(2), {"id": "r0", "text": "again", "label": "refund"}]}),
     "dataset.id_field", "repeats an id"),
    ("missing id column", body(dataset={"rows": [{"text": "hello there", "label": "x"}]}), "dataset.id_field",
     "has no column 'id'"),
    ("label is a list", body(dataset={"rows": [{"id": "a", "text": "hello", "label": [CANARY]}]}),
     "dataset.rows[0].label.str", "Input should be a valid string"),
    ("no methods", body(methods=[]), "methods", "at least 1 item"),
    ("repeated method", body(methods=[{"method": "eda"}, {"method": "eda"}]), "methods",
     "each method may appear once"),
    ("described label absent", body(labels={CANARY: "x"}), "labels",
     "labels describes a label that no dataset row carries"),
    ("band inverted", body(filters={"similarity_band": {"min": 0.9, "max": 0.5}}), "filters.similarity_band",
     "min must be below max"),
    ("eda alpha too high", body(methods=[{"method": "eda", "alpha": 0.9}]), "methods[0].alpha", ""),
    ("unknown eda operation", body(methods=[{"method": "eda", "operations": ["shuffle"]}]),
     "methods[0].operations[0]", ""),
    ("unknown filter option", body(filters={"toxicity": True}), "filters.toxicity", "Extra inputs"),
    ("too many rows", body(dataset={"rows": [{"id": f"{i}", "text": "t", "label": "l"} for i in range(201)]}),
     "dataset", "more than 200 rows"),
    ("unknown model", body(model="gpt-9-ultra"), "model", ""),
    ("bad task name", body(task="Text Classification!"), "task", ""),
]


@pytest.mark.parametrize(("case", "payload", "field", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_naming_the_problem_and_writes_nothing(
    client: TestClient, settings: Settings, case: str, payload: dict[str, Any], field: str, message: str,
) -> None:
    r = client.post("/v1/jobs", json=payload)
    assert r.status_code == 422, (case, r.text)
    err = r.json()["error"]
    assert err["field"] == field, (case, err)
    assert message in err["message"], (case, err)
    assert CANARY not in r.text
    for model in (Job, Item, Chunk, AugmentationSourceRow, OutboxMessage):
        assert count_rows(settings.database_url, model) == 0, (case, model)


def _upload(client: TestClient, raw: bytes, purpose: str = "user_data") -> str:
    r = client.post("/v1/files", files={"file": ("dataset.bin", raw)}, data={"purpose": purpose})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _dataset_bytes(data: list[dict[str, Any]], fmt: str) -> bytes:
    if fmt == "csv":
        return _csv(data, ["id", "text", "label"])
    if fmt == "jsonl":
        return "".join(json.dumps(d) + "\n" for d in data).encode()
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(data), out)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_dataset_uploaded_to_files_gives_the_same_rows_as_inline(client: TestClient, settings: Settings,
                                                                   fmt: str) -> None:
    data = rows(5)
    file_id = _upload(client, _dataset_bytes(data, fmt))
    r = client.post("/v1/jobs", json=body(dataset={"file_id": file_id, "format": fmt}))
    assert r.status_code == 202, r.text
    _assert_same_rows_as_inline(client, settings, r.json()["id"], data)


FILE_BAD: list[tuple[str, bytes | None, str, str, int, str, str]] = [
    # (case, uploaded bytes, purpose, format, status, field, message)
    ("unknown file", None, "user_data", "csv", 404, "dataset.file_id", "no such file"),
    ("batch file", b'{"custom_id": "a"}\n', "batch", "jsonl", 422, "dataset.file_id", "purpose 'user_data'"),
    ("not utf-8", NOT_UTF8, "user_data", "csv", 422, "dataset.file_id",
     "not valid UTF-8 (first bad byte at offset 20)"),
    ("missing label column", _csv(rows(), ["id", "text"]), "user_data", "csv", 422, "dataset.label_field",
     "has no column 'label'"),
    ("duplicate id", _csv([*rows(3), {"id": "r1", "text": CANARY, "label": "refund"}], ["id", "text", "label"]),
     "user_data", "csv", 422, "dataset.id_field", "repeats an id"),
    ("not parquet", b"PAR1 garbage " + CANARY.encode(), "user_data", "parquet", 422, "dataset.file_id",
     "is not a readable Parquet file"),
]


@pytest.mark.parametrize(("case", "raw", "purpose", "fmt", "status", "field", "message"), FILE_BAD,
                         ids=[b[0] for b in FILE_BAD])
def test_a_bad_dataset_file_is_a_4xx_naming_the_field_and_writes_nothing(
    client: TestClient, settings: Settings, case: str, raw: bytes | None, purpose: str, fmt: str, status: int,
    field: str, message: str,
) -> None:
    file_id = _upload(client, raw, purpose) if raw is not None else "file_000000000000000000000000000000"
    r = client.post("/v1/jobs", json=body(dataset={"file_id": file_id, "format": fmt}))
    assert r.status_code == status, (case, r.text)
    err = r.json()["error"]
    assert err["field"] == field and message in err["message"], (case, err)
    assert CANARY not in r.text
    for model in (Job, Item, Chunk, AugmentationSourceRow, OutboxMessage):
        assert count_rows(settings.database_url, model) == 0, (case, model)


def test_report_and_dataset_are_refused_until_the_job_ends(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=body()).json()
    r = client.get(f"/v1/jobs/{job['id']}/report")
    assert r.status_code == 409 and r.json()["error"]["field"] == "job_id"
    assert "written when it ends" in r.json()["error"]["message"]
    assert client.get(f"/v1/jobs/{job['id']}/dataset").status_code == 409
    # Only names the exporter writes are served, whatever the job's state.
    r = client.get(f"/v1/jobs/{job['id']}/dataset/..%2F..%2Fmanifest.json")
    assert r.status_code == 404
    personal = client.post("/v1/jobs", json={"kind": "personalization", "template": "Hi {{ n }}",
                                             "audience": [{"id": "a", "n": "x"}]}).json()
    r = client.get(f"/v1/jobs/{personal['id']}/report")
    assert r.status_code == 404 and "only augmentation jobs" in r.json()["error"]["message"]
    assert client.get("/v1/jobs/job_00000000000000000000000000ff/report").status_code == 404
