"""Files, batches and Idempotency-Key through the API, on SQLite and PostgreSQL with a real Redis.

No worker runs here: these tests check what the API writes and enqueues, and what it refuses.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from factory.batches import chunks as batch_chunks
from factory.batches import claim as batch_claim
from factory.batches import finalize as batch_finalize
from factory.batches import service as batches_service
from factory.config import Settings
from factory.db.base import DEFAULT_TENANT
from factory.db.models import Batch, Chunk, IdempotencyKey, Item, ItemState, Job, JobStatus, OutboxMessage, StoredFile
from factory.db.session import get_sessionmaker
from factory.files import service as files_service
from factory.jobs import execution
from factory.storage import open_store
from tests.keys import api_test_client
from tests.rows import count_rows

MODEL = "smollm2-135m-instruct"
QUEUE = f"gen.{MODEL}"
CANARY = "CANARY-93d1-DO-NOT-ECHO"


def chat(custom_id: str, content: str = "Say hi", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **body}}


def personalize(custom_id: str, names: list[str]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/personalize",
            "body": {"template": "Greet {{ name }}.", "audience": [{"id": n.lower(), "name": n} for n in names],
                     "params": {"max_new_tokens": 8, "seed": 3}}}


def augment(custom_id: str, **body: Any) -> dict[str, Any]:
    rows = [{"id": "r1", "text": "where is my parcel", "label": "track"},
            {"id": "r2", "text": "cancel my order", "label": "cancel"}]
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/augment",
            "body": {"dataset": {"rows": rows}, "methods": [{"method": "eda"}], **body}}


def jsonl(lines: list[Any]) -> bytes:
    return b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                    chunk_size=2, batch_max_lines=20, batch_max_file_bytes=64 * 1024, batch_max_line_bytes=4096,
                    chat_timeout_s=0.5)


def _count(settings: Settings, model: type) -> int:
    return count_rows(settings.database_url, model)


def _queued(settings: Settings, queue: str = QUEUE) -> list[str]:
    """Task names waiting in a Redis queue."""
    raw = redis.Redis.from_url(settings.broker_url or "").lrange(queue, 0, -1)
    return [json.loads(m)["headers"]["task"] for m in raw]


def upload(client: TestClient, data: bytes, **headers: str) -> dict[str, Any]:
    r = client.post("/v1/files", files={"file": ("in.jsonl", data, "application/jsonl")},
                    data={"purpose": "batch"}, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def create(client: TestClient, file_id: str, **extra: Any) -> Any:
    return client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h", **extra})


# --- files -------------------------------------------------------------------------
def test_files_upload_read_list_delete(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    data = jsonl([chat("a"), chat("b")])
    first = upload(client, data)
    assert first["object"] == "file" and first["purpose"] == "batch" and first["bytes"] == len(data)
    assert first["filename"] == "in.jsonl" and first["status"] == "processed"
    assert client.get(f"/v1/files/{first['id']}").json() == first
    assert client.get(f"/v1/files/{first['id']}/content").content == data
    others = [upload(client, jsonl([chat(f"x{i}")])) for i in range(2)]
    page = client.get("/v1/files", params={"limit": 2}).json()
    assert [f["id"] for f in page["data"]] == [others[1]["id"], others[0]["id"]] and page["has_more"] is True
    rest = client.get("/v1/files", params={"limit": 2, "after": page["last_id"]}).json()
    assert [f["id"] for f in rest["data"]] == [first["id"]] and rest["has_more"] is False
    asc = client.get("/v1/files", params={"order": "asc"}).json()
    assert [f["id"] for f in asc["data"]] == [first["id"], others[0]["id"], others[1]["id"]]
    r = client.delete(f"/v1/files/{first['id']}")
    assert r.json() == {"id": first["id"], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{first['id']}").status_code == 404
    assert client.get(f"/v1/files/{first['id']}/content").status_code == 404
    assert not list((tmp_path / "objects").rglob(f"{first['id']}/*"))


@pytest.mark.parametrize(("case", "data", "purpose", "status", "field"), [
    ("wrong purpose", jsonl([chat("a")]), "fine-tune", 422, "purpose"),
    ("empty", b"\n\n", "batch", 422, "file"),
    ("too many lines", jsonl([chat(f"c{i}") for i in range(21)]), "batch", 422, "file"),
    ("line too long", jsonl([chat("a", CANARY * 200)]), "batch", 422, "file"),
    ("too large", jsonl([chat(f"c{i}", "x" * 3500) for i in range(19)]), "batch", 413, "file"),
])
def test_bad_uploads_are_refused_and_nothing_is_stored(client: TestClient, settings: Settings, tmp_path: Path,
                                                       case: str, data: bytes, purpose: str, status: int,
                                                       field: str) -> None:
    r = client.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": purpose})
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == field and CANARY not in r.text
    assert _count(settings, StoredFile) == 0
    assert not list((tmp_path / "objects").rglob("*.jsonl"))


def test_upload_over_the_file_limit_is_413_before_reading(client: TestClient, settings: Settings) -> None:
    too_long = str(settings.batch_max_file_bytes + (2 << 20))
    r = client.post("/v1/files", content=b"x",
                    headers={"content-type": "multipart/form-data; boundary=b", "content-length": too_long})
    assert r.status_code == 413


# --- creating batches ------------------------------------------------------------------
def test_mixed_file_becomes_one_job_of_chunks_on_the_model_queue(client: TestClient, settings: Settings) -> None:
    file = upload(client, jsonl([chat("c1", n=2), personalize("p1", ["Ana", "Ben"]), augment("g1")]))
    r = create(client, file["id"], metadata={"campaign": "autumn"})
    assert r.status_code == 200, r.text
    batch = r.json()
    assert batch["object"] == "batch" and batch["status"] == "in_progress" and batch["model"] == MODEL
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert batch["metadata"] == {"campaign": "autumn"} and batch["errors"] is None
    assert batch["expires_at"] - batch["created_at"] == 24 * 3600
    assert batch["progress"]["items_total"] == 6 and batch["progress"]["items_done"] == 0
    with get_sessionmaker(settings.database_url)() as s:
        row = s.get(Batch, batch["id"])
        assert row is not None and row.job_id is not None
        job = s.get(Job, row.job_id)
        assert job is not None and (job.kind, job.queue, job.item_count, job.chunk_count) == ("batch", QUEUE, 6, 3)
        # No item is written at submit: each chunk names its lines of the stored file...
        chunks = list(s.scalars(select(Chunk).where(Chunk.job_id == job.id).order_by(Chunk.seq)))
        assert [c.pending_lines for c in chunks] == [
            {"offset": o, "length": n, "line": i + 1, "seq": 2 * i, "items": 2, "lines": 1}
            for i, (o, n) in enumerate(_line_spans(settings, job))]
        assert s.scalar(select(Item.id).where(Item.job_id == job.id)) is None
        # ...and the worker that claims a chunk writes its items from them.
        for chunk in chunks:
            assert claim_items(s, settings, job, chunk) == 2
        s.commit()
        assert all(c.pending_lines is None for c in s.scalars(select(Chunk).where(Chunk.job_id == job.id)))
        items = list(s.scalars(select(Item).where(Item.job_id == job.id).order_by(Item.seq)))
        assert [i.seq for i in items] == list(range(6)) and [i.chunk_id for i in items] == [
            c.id for c in chunks for _ in range(2)]
        assert [(i.key, i.variant, i.state) for i in items] == [
            ("c1", 0, ItemState.PENDING), ("c1", 1, ItemState.PENDING), ("p1", 0, ItemState.PENDING),
            ("p1", 1, ItemState.PENDING), ("g1", 0, ItemState.PENDING), ("g1", 1, ItemState.PENDING)]
        assert items[2].prompt == "Greet Ana." and items[3].record["recipient"] == "ben"
        assert items[5].prompt == "cancel my order" and items[5].record["method"] == "eda"
        assert items[5].request is not None and items[5].request["method"] == "eda"
        assert items[0].request is not None and items[0].request["params"]["max_new_tokens"] == 8
    assert _queued(settings) == ["factory.generate_chunk"] * 3
    assert client.get(f"/v1/batches/{batch['id']}").json()["status"] == "in_progress"


def claim_items(s: Any, settings: Settings, job: Job, chunk: Chunk) -> int:
    """What a worker's claim does with a deferred chunk: read its lines of the input file, write its items."""
    assert chunk.pending_lines is not None
    data = batch_claim.read_chunk_lines(open_store(settings), job.options, chunk.pending_lines)
    return batch_claim.write_chunk_items(s, settings, job, chunk, data)


def _line_spans(settings: Settings, job: Job) -> list[tuple[int, int]]:
    """(offset, length) of each line of the job's stored input file, newline included."""
    data = open_store(settings).get_bytes(job.options[batch_chunks.INPUT_KEY])
    spans, offset = [], 0
    for line in data.splitlines(keepends=True):
        spans.append((offset, len(line)))
        offset += len(line)
    return spans


def test_a_line_bigger_than_a_chunk_is_written_at_submit_and_the_others_when_claimed(client: TestClient,
                                                                                    settings: Settings) -> None:
    # chunk_size 2: [a] | b0 b1 | b2 | [c]  (a blank line, a byte-order mark and CRLF line ends on the way)
    data = b"\xef\xbb\xbf" + jsonl([chat("a"), b"", chat("b", n=3), chat("c")]).replace(b"\n", b"\r\n")
    batch = create(client, upload(client, data)["id"]).json()
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert batch["progress"]["items_total"] == 5
    with get_sessionmaker(settings.database_url)() as s:
        job = s.scalars(select(Job).join(Batch, Batch.job_id == Job.id).where(Batch.id == batch["id"])).one()
        chunks = list(s.scalars(select(Chunk).where(Chunk.job_id == job.id).order_by(Chunk.seq)))
        assert [c.pending_lines and (c.pending_lines["line"], c.pending_lines["seq"], c.pending_lines["items"])
                for c in chunks] == [(1, 0, 1), None, None, (4, 4, 1)]
        written = list(s.scalars(select(Item).where(Item.job_id == job.id).order_by(Item.seq)))
        assert [(i.key, i.variant, i.seq, i.chunk_id) for i in written] == [
            ("b", 0, 1, chunks[1].id), ("b", 1, 2, chunks[1].id), ("b", 2, 3, chunks[2].id)]
        # The last chunk is claimed first and its line succeeds: the only line finished so far.
        assert claim_items(s, settings, job, chunks[3]) == 1
        s.execute(update(Item).where(Item.job_id == job.id, Item.key == "c")
                  .values(state=ItemState.SUCCEEDED, text="hi"))
        s.commit()
        items = list(s.scalars(select(Item).where(Item.job_id == job.id).order_by(Item.seq)))
        assert [(i.key, i.seq) for i in items] == [("b", 1), ("b", 2), ("b", 3), ("c", 4)]
    out = client.get(f"/v1/batches/{batch['id']}").json()
    assert out["request_counts"] == {"total": 3, "completed": 1, "failed": 0}
    assert out["progress"]["items_done"] == 1
    lines = [json.loads(x) for x in client.get(f"/v1/batches/{batch['id']}/output").text.splitlines()]
    assert [x["custom_id"] for x in lines] == ["c"]


def test_a_line_the_worker_no_longer_expands_is_one_failed_item_and_the_totals_follow(
        client: TestClient, settings: Settings) -> None:
    batch = create(client, upload(client, jsonl([chat("a", n=2), chat("b")]))["id"]).json()
    assert batch["progress"]["items_total"] == 3
    stricter = settings.model_copy(update={"max_variants": 1})  # a worker configured below the API
    with get_sessionmaker(settings.database_url)() as s:
        job = s.scalars(select(Job).join(Batch, Batch.job_id == Job.id).where(Batch.id == batch["id"])).one()
        chunks = list(s.scalars(select(Chunk).where(Chunk.job_id == job.id).order_by(Chunk.seq)))
        assert [claim_items(s, stricter, job, c) for c in chunks] == [1, 1]
        s.commit()
        items = list(s.scalars(select(Item).where(Item.job_id == job.id).order_by(Item.seq)))
        assert [(i.key, i.state) for i in items] == [("a", ItemState.FAILED), ("b", ItemState.PENDING)]
        assert items[0].error is not None and items[0].error.startswith("invalid_request: n must be at most 1")
    out = client.get(f"/v1/batches/{batch['id']}").json()
    assert out["progress"]["items_total"] == 2 and out["progress"]["items_done"] == 1
    assert out["request_counts"] == {"total": 2, "completed": 0, "failed": 1}
    errors = [json.loads(x) for x in client.get(f"/v1/batches/{batch['id']}/errors").text.splitlines()]
    assert [(x["custom_id"], x["response"]["body"]["error"]["code"]) for x in errors] == [("a", "invalid_request")]


def test_an_input_file_deleted_while_its_batch_runs_keeps_its_content_until_the_batch_ends(
        client: TestClient, settings: Settings) -> None:
    file = upload(client, jsonl([chat("a"), chat("b"), chat("c")]))
    batch = create(client, file["id"]).json()
    assert client.delete(f"/v1/files/{file['id']}").json() == {"id": file["id"], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{file['id']}").status_code == 404
    # Its data is being erased: no new line starts (docs/privacy.md), the chunks already claimed finish.
    assert client.get(f"/v1/batches/{batch['id']}").json()["status"] == "cancelling"
    with get_sessionmaker(settings.database_url)() as s:
        job = s.scalars(select(Job).join(Batch, Batch.job_id == Job.id).where(Batch.id == batch["id"])).one()
        key = job.options[batch_chunks.INPUT_KEY]
        assert open_store(settings).exists(key)  # the workers still read their lines from it
        chunk = s.scalars(select(Chunk).where(Chunk.job_id == job.id).order_by(Chunk.seq)).first()
        assert chunk is not None
        assert claim_items(s, settings, job, chunk) == 2
        # Once the batch is finalized, the content goes too.
        batch_finalize.finalize_batch(s, open_store(settings), job)
        s.commit()
    assert not open_store(settings).exists(key)


@pytest.mark.parametrize("first", ["finalize", "delete"])
def test_an_input_file_deleted_as_its_batch_finalizes_leaves_no_object_behind(
        client: TestClient, settings: Settings, first: str) -> None:
    """The delete and the finalize step at the same moment: whichever takes the file's row first, the
    other waits for its commit, and one of them deletes the content."""
    file = upload(client, jsonl([chat("a"), chat("b")]))
    batch = create(client, file["id"]).json()
    assert client.post(f"/v1/batches/{batch['id']}/cancel").json()["status"] == "cancelling"
    store = open_store(settings)
    make_session = get_sessionmaker(settings.database_url)
    with make_session() as s:
        key = s.scalars(select(Job).join(Batch, Batch.job_id == Job.id).where(Batch.id == batch["id"])).one() \
            .options[batch_chunks.INPUT_KEY]

    def finalize(s: Any) -> None:
        job = s.scalars(select(Job).join(Batch, Batch.job_id == Job.id).where(Batch.id == batch["id"])).one()
        batch_claim.write_unclaimed_items(s, settings, store, job)
        batch_finalize.finalize_batch(s, store, job)
        execution.finish_job(s, job.id)

    def delete(s: Any) -> None:
        files_service.delete_file(s, store, DEFAULT_TENANT, file["id"],
                                  in_use=lambda: batches_service.reads_input(s, DEFAULT_TENANT, file["id"]))

    steps = {"finalize": finalize, "delete": delete}
    second_step = steps["delete" if first == "finalize" else "finalize"]
    with make_session() as holder:
        steps[first](holder)  # holds the row (its lock, or SQLite's write lock) until it commits
        done = threading.Event()

        def second() -> None:
            with make_session() as s:
                second_step(s)
                s.commit()
            done.set()

        thread = threading.Thread(target=second)
        thread.start()
        assert not done.wait(1.0)  # waits for the first to commit
        assert store.exists(key)
        holder.commit()
    thread.join(30)
    assert done.is_set()
    assert not store.exists(key)
    assert client.get(f"/v1/files/{file['id']}").status_code == 404
    assert client.get(f"/v1/batches/{batch['id']}").json()["status"] == "cancelled"


def test_bad_lines_fail_the_batch_naming_each_line_and_nothing_is_enqueued(client: TestClient,
                                                                           settings: Settings) -> None:
    lines: list[Any] = [
        chat("ok-1"),
        chat("ok-1"),                                                          # 2: duplicate custom_id
        {**chat("get"), "method": "GET"},                                      # 3
        b'{"custom_id": "broken", ' + CANARY.encode(),                          # 4: not JSON
        chat("model", model="gpt-9-ultra"),                                    # 5
        chat("temp", temperature=9),                                           # 6
        {**chat("url"), "url": "/v1/embeddings"},                              # 7
        personalize("p", []),                                                  # 8: empty audience
        augment("a1", methods=[{"method": "mixup"}]),                          # 9: unknown method
        augment("a2", extra=CANARY),                                           # 10: unknown field
        augment("a3", dataset={"rows": [{"id": "r", "text": CANARY}]}),        # 11: no label column
        augment("a4", methods=[{"method": "eda", "k": 100}]),                  # 12: k over the limit
    ]
    r = create(client, upload(client, jsonl(lines))["id"])
    assert r.status_code == 200, r.text
    batch = r.json()
    assert batch["status"] == "failed" and batch["failed_at"] is not None and batch["in_progress_at"] is None
    assert [(e["line"], e["code"], e["param"]) for e in batch["errors"]["data"]] == [
        (2, "duplicate_custom_id", "custom_id"), (3, "invalid_method", "method"), (4, "invalid_json_line", None),
        (5, "model_not_found", "body.model"), (6, "invalid_request", "body.temperature"),
        (7, "invalid_url", "url"), (8, "invalid_request", "body.audience"),
        (9, "invalid_request", "body.methods.0.method"), (10, "invalid_request", "body.extra"),
        (11, "invalid_request", "body.dataset.label_field"), (12, "invalid_request", "body.methods.0.k")]
    assert batch["request_counts"] == {"total": 12, "completed": 0, "failed": 0}
    assert CANARY not in r.text
    for model in (Job, Chunk, Item, OutboxMessage):
        assert _count(settings, model) == 0, model
    assert _count(settings, Batch) == 1 and _queued(settings) == []
    assert client.get(f"/v1/batches/{batch['id']}").json()["status"] == "failed"
    assert client.post(f"/v1/batches/{batch['id']}/cancel").status_code == 409


def test_mixing_models_fails_validation(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    models = tmp_path / "models.json"
    models.write_text(json.dumps([{"name": "other-model", "source": "local", "location": str(tmp_path)}]))
    import os

    os.environ["FACTORY_MODELS_FILE"] = str(models)
    try:
        batch = create(client, upload(client, jsonl([chat("a"), chat("b", model="other-model")]))["id"]).json()
    finally:
        del os.environ["FACTORY_MODELS_FILE"]
    assert [(e["line"], e["code"]) for e in batch["errors"]["data"]] == [(2, "mismatched_model")]


@pytest.mark.parametrize(("case", "extra", "status", "field"), [
    ("unknown file", {"input_file_id": "file_" + "0" * 28}, 404, "input_file_id"),
    ("wrong endpoint", {"endpoint": "/v1/embeddings"}, 422, "endpoint"),
    ("wrong window", {"completion_window": "1h"}, 422, "completion_window"),
    ("metadata too big", {"metadata": {f"k{i}": "v" for i in range(17)}}, 422, "metadata"),
    ("metadata value type", {"metadata": {"k": 1}}, 422, "metadata.k"),
    ("unknown field", {"surprise": CANARY}, 422, "surprise"),
    ("webhook without a secret", {"webhook_url": "http://127.0.0.1:9/hook"}, 422, "webhook_url"),
    ("missing file id", {"input_file_id": None}, 422, "input_file_id"),
])
def test_bad_batch_requests_are_4xx_and_write_nothing(client: TestClient, settings: Settings, case: str,
                                                      extra: dict[str, Any], status: int, field: str) -> None:
    file = upload(client, jsonl([chat("a")]))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h", **extra}
    r = client.post("/v1/batches", json={k: v for k, v in body.items() if v is not None})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == field and err["field"] == field and err["message"] and err["type"]
    assert CANARY not in r.text
    for model in (Batch, Job, Item, OutboxMessage):
        assert _count(settings, model) == 0


def test_list_batches_newest_first_with_cursor(client: TestClient) -> None:
    file = upload(client, jsonl([chat("a")]))
    ids = [create(client, file["id"]).json()["id"] for _ in range(3)]
    page = client.get("/v1/batches", params={"limit": 2}).json()
    assert [b["id"] for b in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = client.get("/v1/batches", params={"limit": 2, "after": page["last_id"]}).json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and rest["has_more"] is False
    assert client.get("/v1/batches", params={"limit": 101}).status_code == 422


# --- cancel and expiry (no worker: everything is still pending) ------------------------
def test_cancel_stops_pending_lines_and_queues_finalization(client: TestClient, settings: Settings) -> None:
    batch = create(client, upload(client, jsonl([chat(f"c{i}") for i in range(5)]))["id"]).json()
    r = client.post(f"/v1/batches/{batch['id']}/cancel")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "cancelling" and out["cancelling_at"] is not None
    assert out["request_counts"] == {"total": 5, "completed": 0, "failed": 5}
    assert _queued(settings).count("factory.finalize_job") == 1
    assert client.post(f"/v1/batches/{batch['id']}/cancel").json()["status"] == "cancelling"


class CountingStore:
    """The real store, counting its range reads."""

    def __init__(self, store: Any) -> None:
        self.store, self.ranges = store, 0

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self.ranges += 1
        return bytes(self.store.get_range(key, offset, length))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.mark.parametrize(("span_chunks", "reads"), [(None, 1), (2, 5)])
def test_a_cancelled_batch_answers_its_unclaimed_lines_with_few_reads(
        client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch, span_chunks: int | None,
        reads: int) -> None:
    # chunk_size 2: ten chunks of two lines; the third is claimed before the cancel.
    custom_ids = [f"c{i:02d}" for i in range(20)]
    batch = create(client, upload(client, jsonl([chat(c, content="x" * 150) for c in custom_ids]))["id"]).json()
    with get_sessionmaker(settings.database_url)() as s:
        job = s.scalars(select(Job).join(Batch, Batch.job_id == Job.id).where(Batch.id == batch["id"])).one()
        chunks = list(s.scalars(select(Chunk).where(Chunk.job_id == job.id).order_by(Chunk.seq)))
        lengths = {c.pending_lines and c.pending_lines["length"] for c in chunks}
        assert len(chunks) == 10 and len(lengths) == 1
        if span_chunks is not None:
            monkeypatch.setattr(batch_claim, "READ_SPAN_BYTES", span_chunks * lengths.pop())
        assert claim_items(s, settings, job, chunks[2]) == 2
        s.commit()
    assert client.post(f"/v1/batches/{batch['id']}/cancel").json()["status"] == "cancelling"
    store = CountingStore(open_store(settings))
    with get_sessionmaker(settings.database_url)() as s:
        job = s.scalars(select(Job).join(Batch, Batch.job_id == Job.id).where(Batch.id == batch["id"])).one()
        # Nine chunks answered in one read, the claimed chunk's lines read over (or, a span of two chunks:
        # 0-1 | 3-4 | 5-6 | 7-8 | 9).
        assert batch_claim.write_unclaimed_items(s, settings, store, job) == 18  # type: ignore[arg-type]
        assert store.ranges == reads
        items = list(s.scalars(select(Item).where(Item.job_id == job.id).order_by(Item.seq)))
        assert [(i.key, i.seq) for i in items] == [(c, n) for n, c in enumerate(custom_ids)]
        assert {i.state for i in items} == {ItemState.CANCELLED}  # the claimed chunk's by the cancel itself
        assert [i.prompt for i in items] == ["x" * 150] * 20


def test_a_batch_past_its_window_expires_when_read(db_url: str, broker_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                        chunk_size=2, batch_window_override_s=0.2)
    with api_test_client(settings) as client:
        batch = create(client, upload(client, jsonl([chat("a"), chat("b"), chat("c")]))["id"]).json()
        assert batch["expires_at"] - batch["created_at"] <= 1
        time.sleep(0.3)
        out = client.get(f"/v1/batches/{batch['id']}").json()
    # The unfinished lines stopped; the finalize step turns the batch into "expired".
    assert out["status"] == "finalizing" and out["cancelling_at"] is None
    assert out["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
    assert _queued(settings).count("factory.finalize_job") == 1
    with get_sessionmaker(settings.database_url)() as s:
        row = s.get(Batch, batch["id"])
        assert row is not None and row.expire_requested_at is not None
        job = s.get(Job, row.job_id)
        assert job is not None and job.status == JobStatus.CANCELLING
        # Nothing else is due: the periodic sweep finds nothing more to do.
        assert batches_service.expire_due_batches(s, settings).batch_ids == []


def test_periodic_expiry_sweep(db_url: str, broker_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                        batch_window_override_s=0.1)
    with api_test_client(settings) as client:
        ids = [create(client, upload(client, jsonl([chat("a")]))["id"]).json()["id"] for _ in range(2)]
    time.sleep(0.2)
    with get_sessionmaker(settings.database_url)() as s:
        expiry = batches_service.expire_due_batches(s, settings)
        s.commit()
        assert sorted(expiry.batch_ids) == sorted(ids) and len(expiry.outbox_ids) == 2
        assert batches_service.expire_due_batches(s, settings).batch_ids == []


# --- Idempotency-Key ------------------------------------------------------------------------
def test_idempotent_batch_create_and_cancel(client: TestClient, settings: Settings) -> None:
    file = upload(client, jsonl([chat("a"), chat("b")]))
    body = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    first = client.post("/v1/batches", json=body, headers={"Idempotency-Key": "create-1"})
    again = client.post("/v1/batches", json=body, headers={"Idempotency-Key": "create-1"})
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert _count(settings, Batch) == 1 and _count(settings, Job) == 1
    other = client.post("/v1/batches", json={**body, "metadata": {"x": "y"}}, headers={"Idempotency-Key": "create-1"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    # Same key on another path is another request too.
    assert client.post("/v1/jobs", json={}, headers={"Idempotency-Key": "create-1"}).status_code == 409
    cancel = f"/v1/batches/{first.json()['id']}/cancel"
    c1 = client.post(cancel, headers={"Idempotency-Key": "cancel-1"})
    c2 = client.post(cancel, headers={"Idempotency-Key": "cancel-1"})
    assert c1.status_code == c2.status_code == 200 and c1.content == c2.content


def test_idempotent_upload_survives_a_new_multipart_boundary(client: TestClient, settings: Settings) -> None:
    data = jsonl([chat("a")])
    first = upload(client, data, **{"Idempotency-Key": "upload-1"})
    # httpx draws a new random boundary for every request, as a retrying SDK does.
    second = upload(client, data, **{"Idempotency-Key": "upload-1"})
    assert second["id"] == first["id"] and _count(settings, StoredFile) == 1
    r = client.post("/v1/files", files={"file": ("in.jsonl", data + data.replace(b'"a"', b'"b"'))},
                    data={"purpose": "batch"}, headers={"Idempotency-Key": "upload-1"})
    assert r.status_code == 409


def test_idempotent_job_submit_and_validation_errors_are_replayed(client: TestClient, settings: Settings) -> None:
    body = {"kind": "personalization", "template": "Hi {{ name }}", "audience": [{"id": "a", "name": "A"}]}
    a = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "job-1"})
    b = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "job-1"})
    assert a.status_code == 202 and b.json()["id"] == a.json()["id"] and _count(settings, Job) == 1
    bad = {**body, "variants": 0}
    e1 = client.post("/v1/jobs", json=bad, headers={"Idempotency-Key": "job-2"})
    e2 = client.post("/v1/jobs", json=bad, headers={"Idempotency-Key": "job-2"})
    assert e1.status_code == e2.status_code == 422 and e1.content == e2.content
    assert client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "bad key"}).status_code == 422


def test_a_5xx_releases_the_key(client: TestClient, settings: Settings) -> None:
    """No worker consumes the priority queue here, so the chat request times out (504) and may be retried."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    r = client.post("/v1/chat/completions", json=body, headers={"Idempotency-Key": "chat-1"})
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    assert f"gen.{MODEL}.priority" in r.json()["error"]["message"]
    assert _count(settings, IdempotencyKey) == 0
    with get_sessionmaker(settings.database_url)() as s:
        job = s.scalar(select(Job))
        assert job is not None and job.kind == "chat" and job.queue == f"gen.{MODEL}.priority"
        assert job.status == JobStatus.CANCELLING  # given up: it will not run later
    assert sorted(_queued(settings, f"gen.{MODEL}.priority")) == ["factory.finalize_job", "factory.generate_chunk"]


def test_chat_bad_input_is_422(client: TestClient) -> None:
    for body, field in [({"model": MODEL, "messages": []}, "messages"),
                        ({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}, "model"),
                        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}, "stream"),
                        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 50}, "n")]:
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["param"] == field


def test_a_byte_order_mark_and_crlf_line_ends_are_accepted(client: TestClient) -> None:
    data = b"\xef\xbb\xbf" + jsonl([chat("a"), chat("b")]).replace(b"\n", b"\r\n")
    batch = create(client, upload(client, data)["id"]).json()
    assert batch["status"] == "in_progress" and batch["request_counts"]["total"] == 2


def test_a_failed_batch_with_a_webhook_queues_its_delivery(db_url: str, broker_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                        webhook_secret="s3cret")
    with api_test_client(settings) as client:
        file = upload(client, jsonl([{**chat("a"), "method": "PUT"}]))
        r = create(client, file["id"], webhook_url="https://hooks.example.com/batch")
        assert r.status_code == 200 and r.json()["status"] == "failed"
        bad = create(client, file["id"], webhook_url="ftp://hooks.example.com/batch")
        assert bad.status_code == 422 and bad.json()["error"]["param"] == "webhook_url"
    assert _queued(settings) == ["factory.deliver_batch_webhook"]
    with get_sessionmaker(settings.database_url)() as s:
        row = s.get(Batch, r.json()["id"])
        assert row is not None and row.webhook_url == "https://hooks.example.com/batch"
