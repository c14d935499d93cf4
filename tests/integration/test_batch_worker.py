"""Batches end to end with real API and worker processes (fake generator), PostgreSQL and Redis.

The openai SDK drives the API; cancel and expiry hit a batch while it runs
(``FACTORY_FAKE_DELAY_S`` makes every chunk take a second); a synchronous chat
request overtakes a queued batch through the priority queue; the webhook goes to a
loopback HTTP server and is verified with the SDK.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from openai import OpenAI
from sqlalchemy import func, select

from factory.batches import finalize as batch_finalize
from factory.batches.schemas import FINAL_STATUSES
from factory.config import Settings
from factory.db.models import AugmentationVerdict, Batch, Chunk, Item, ItemState, Job, StoredFile
from factory.db.session import get_sessionmaker
from factory.storage import close_stores, open_store
from tests.keys import api_key, auth_headers
from tests.processes import api_server, factory_env, worker
from tests.security.pg_app_role import libpq_dsn
from tests.services import REPO
from tests.webhook_receiver import webhook_receiver
from workers.kinds.augmentation import apply_rule

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
AUGMENT_ROWS = [{"id": "r1", "text": "where is my parcel right now", "label": "track_order"},
                {"id": "r2", "text": "please cancel the order I placed yesterday", "label": "cancel_order"},
                {"id": "r3", "text": "has my package been shipped yet", "label": "track_order"},
                {"id": "r4", "text": "I want to cancel my purchase today", "label": "cancel_order"}]
SECRET = "whsec_" + base64.b64encode(b"test-webhook-secret-0123456789ab").decode()


def chat(custom_id: str, content: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **body}}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def env_for(pg_db: str, broker_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return factory_env(FACTORY_DATABASE_URL=pg_db, FACTORY_BROKER_URL=broker_url,
                       FACTORY_STORAGE_URL=f"file://{tmp_path}/objects", FACTORY_GENERATOR="fake",
                       FACTORY_CHUNK_SIZE="2", FACTORY_API_KEY=api_key(pg_db), **extra)  # for the CLI


def wait_until(check: Callable[[], dict[str, Any] | None], timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def batch_when(http: httpx.Client, batch_id: str, predicate: Callable[[dict[str, Any]], bool],
               timeout: float = 120) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        batch: dict[str, Any] = http.get(f"/v1/batches/{batch_id}").json()
        return batch if predicate(batch) else None

    return wait_until(check, timeout, f"batch {batch_id}")


def file_lines(http: httpx.Client, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in http.get(f"/v1/files/{file_id}/content").text.splitlines()]


def create_batch(http: httpx.Client, lines: list[dict[str, Any]]) -> dict[str, Any]:
    file_id = http.post("/v1/files", files={"file": ("in.jsonl", jsonl(lines))}, data={"purpose": "batch"}).json()["id"]
    r = http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                       "completion_window": "24h"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def transactions_open_since_before(database_url: str) -> int:
    """Run while a delivery is being received: how many transactions of this database began before it
    arrived and are still open a second later (the sender's, if it POSTs inside one)."""
    with psycopg.connect(libpq_dsn(database_url), autocommit=True) as conn:
        arrived = conn.execute("SELECT clock_timestamp()").fetchone()
        time.sleep(1.0)
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid() AND xact_start < %s", arrived).fetchone()
    assert row is not None
    return int(row[0])


def test_sdk_batch_runs_to_completion_with_files_webhook_and_idempotent_finalization(
    pg_db: str, broker_url: str, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    env = env_for(pg_db, broker_url, tmp_path, FACTORY_WEBHOOK_SECRET=SECRET, FACTORY_WEBHOOK_ALLOW_PRIVATE="true")
    lines = [chat(f"c{i}", f"Tell me about item {i}") for i in range(1, 6)]
    lines[2]["body"]["n"] = 2
    lines += [chat("poison", "POISON pill"),
              {"custom_id": "p1", "method": "POST", "url": "/v1/personalize",
               "body": {"template": "Hi {{ name }}", "params": {"seed": 1},
                        "audience": [{"id": "a", "name": "Ana"}, {"id": "b", "name": "Bo"}]}},
              {"custom_id": "g1", "method": "POST", "url": "/v1/augment",
               "body": {"dataset": {"rows": AUGMENT_ROWS}, "params": {"seed": 4},
                        "methods": [{"method": "eda", "k": 2}, {"method": "paraphrase", "k": 1}]}}]
    with webhook_receiver([500, 200]) as hooks, api_server(env, tmp_path / "api.log") as url, \
            worker(env, tmp_path / "worker.log"):
        hooks.probe = lambda: transactions_open_since_before(pg_db)
        client = OpenAI(base_url=f"{url}/v1", api_key=api_key(pg_db), max_retries=0)
        request.addfinalizer(client.close)
        uploaded = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h", metadata={"run": "t1"},
                                      extra_body={"webhook_url": hooks.url})
        assert batch.status == "in_progress" and batch.request_counts is not None
        while batch.status not in FINAL_STATUSES:
            time.sleep(0.3)
            batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed", batch
        assert batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (8, 7, 1)
        assert batch.completed_at and batch.finalizing_at and batch.in_progress_at
        assert batch.usage is not None and batch.usage.output_tokens > 0
        assert batch.output_file_id and batch.error_file_id
        output = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        errors = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
        http = httpx.Client(base_url=url, timeout=30, headers=auth_headers(pg_db))
        request.addfinalizer(http.close)
        partial = http.get(f"/v1/batches/{batch.id}/output").text
        assert partial == client.files.content(batch.output_file_id).text
        assert [b.id for b in client.batches.list(limit=5)] == [batch.id]
        assert {f.id for f in client.files.list()} == {uploaded.id, batch.output_file_id, batch.error_file_id}
        # Wait for the delivery to be recorded, not just received: stopping the worker between the
        # receiver's 200 and the commit would leave the attempt unrecorded.
        with get_sessionmaker(pg_db)() as s:
            def delivered() -> dict[str, Any] | None:
                row = s.get(Batch, batch.id)
                done = row is not None and row.webhook_delivered_at is not None
                s.rollback()  # no transaction of ours stays open while a delivery is probed
                return {} if done else None

            wait_until(delivered, 60, "the webhook retry")

    assert sorted(x["custom_id"] for x in output + errors) == sorted(x["custom_id"] for x in lines)
    assert [x["custom_id"] for x in output] == ["c1", "c2", "c3", "c4", "c5", "p1", "g1"]
    assert [x["custom_id"] for x in errors] == ["poison"]
    c3 = next(x for x in output if x["custom_id"] == "c3")["response"]["body"]
    assert len(c3["choices"]) == 2 and c3["choices"][0]["message"]["content"].endswith("Tell me about item 3")
    p1 = next(x for x in output if x["custom_id"] == "p1")["response"]["body"]
    assert [(r["key"], r["text"].split("] ")[1]) for r in p1["results"]] == [("a", "Hi Ana"), ("b", "Hi Bo")]
    by_id = {x["custom_id"]: x for x in errors}
    assert by_id["poison"]["response"]["status_code"] == 500
    assert by_id["poison"]["response"]["body"]["error"]["code"] == "generation_failed"
    g1 = next(x for x in output if x["custom_id"] == "g1")["response"]["body"]
    check_augment_body(pg_db, batch.id, g1)

    # The webhook: retried after a 500, same event id, signature valid for the SDK.
    assert len(hooks.received) == 2
    (h1, b1), (h2, b2) = hooks.received
    assert h1["webhook-id"] == h2["webhook-id"] and b1 == b2
    event = OpenAI(api_key="test").webhooks.unwrap(b2, h2, secret=SECRET)
    assert event.type == "batch.completed" and event.data.id == batch.id
    # Each POST went out with no transaction open: the worker read what to send, committed, sent.
    assert hooks.probed == [0, 0]

    # Finalizing again changes nothing: same file ids, same bytes, no new rows.
    settings = Settings(database_url=pg_db, storage_url=f"file://{tmp_path}/objects")
    store = open_store(settings)
    request.addfinalizer(close_stores)
    before = sorted(p.read_bytes() for p in (tmp_path / "objects").rglob("content.jsonl"))
    with get_sessionmaker(pg_db)() as s:
        row = s.get(Batch, batch.id)
        assert row is not None and row.webhook_attempts == 2 and row.webhook_delivered_at is not None
        job = s.get(Job, row.job_id)
        assert job is not None
        batch_finalize.finalize_batch(s, store, job)
        s.commit()
        assert (row.output_file_id, row.error_file_id) == (batch.output_file_id, batch.error_file_id)
        assert s.scalar(select(func.count()).select_from(StoredFile)) == 3
    assert sorted(p.read_bytes() for p in (tmp_path / "objects").rglob("content.jsonl")) == before


def check_augment_body(db: str, batch_id: str, body: dict[str, Any]) -> None:
    """An augment line's response against its items and verdicts: EDA by rules, the fake paraphrases
    (echoes of the prompt) refused by the filters, the source rows first (include_source)."""
    with get_sessionmaker(db)() as s:
        row = s.get(Batch, batch_id)
        assert row is not None
        items = list(s.scalars(select(Item).where(Item.job_id == row.job_id, Item.key == "g1").order_by(Item.seq)))
        verdicts = {v.item_id: v for v in s.scalars(
            select(AugmentationVerdict).where(AugmentationVerdict.job_id == row.job_id))}
    assert [(i.record["method"], i.record["source_row_id"], i.record["variant"]) for i in items] == [
        ("paraphrase", r["id"], 0) for r in AUGMENT_ROWS] + [
        ("eda", r["id"], k) for r in AUGMENT_ROWS for k in range(2)]
    assert set(verdicts) == {i.id for i in items}  # judged once each, only the augment line's items
    for item in items[4:]:
        assert item.request is not None and item.provenance is not None and item.provenance["generator"] == "rules"
        assert item.text == apply_rule("eda", item.prompt, item.request["options"], item.seed, item.record["variant"])
    assert {i.provenance["method"] for i in items if i.provenance} == {"paraphrase", "eda"}

    assert body["object"] == "augmentation.result" and body["model"] == MODEL and body["id"].startswith("aug-")
    generated = [{"text": i.text, "label": i.record["label"], "method": i.record["method"],
                  "source_row_id": i.record["source_row_id"], "variant": i.record["variant"]} for i in items]
    originals = [{"text": r["text"], "label": r["label"], "method": "original", "source_row_id": r["id"],
                  "variant": None} for r in AUGMENT_ROWS]
    assert body["data"] == originals + [g for g, i in zip(generated, items, strict=True) if verdicts[i.id].accepted]
    assert body["rejected"] == [{**g, "reason": verdicts[i.id].reason}
                                for g, i in zip(generated, items, strict=True) if not verdicts[i.id].accepted]
    assert {r["method"] for r in body["rejected"]} >= {"paraphrase"}
    assert all(r["method"] != "paraphrase" for r in body["data"])  # the fake's echoes never pass
    report = body["report"]
    accepted = len(body["data"]) - 4
    assert (report["generated"], report["accepted"]) == (12, accepted) and accepted >= 1
    assert sum(report["rejected_by"].values()) == 12 - accepted == len(body["rejected"])
    assert report["acceptance_rate"] == round(accepted / 12, 4)
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"])


def test_cancel_a_running_batch_keeps_finished_lines(pg_db: str, broker_url: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    env = env_for(pg_db, broker_url, tmp_path, FACTORY_FAKE_DELAY_S="1.0")
    lines = [chat(f"c{i:02d}", f"line {i}") for i in range(12)]
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        http = httpx.Client(base_url=url, timeout=30, headers=auth_headers(pg_db))
        request.addfinalizer(http.close)
        batch = create_batch(http, lines)
        running = batch_when(http, batch["id"], lambda b: b["request_counts"]["completed"] >= 2)
        partial = [json.loads(x) for x in http.get(f"/v1/batches/{batch['id']}/output").text.splitlines()]
        assert len(partial) >= running["request_counts"]["completed"] >= 2
        cancelled = http.post(f"/v1/batches/{batch['id']}/cancel").json()
        assert cancelled["status"] == "cancelling"
        done = batch_when(http, batch["id"], lambda b: b["status"] in FINAL_STATUSES)
        output, errors = file_lines(http, done["output_file_id"]), file_lines(http, done["error_file_id"])
        status = subprocess.run([sys.executable, "-m", "factory.cli", "status", batch["id"], "--wait",
                                 "--api-url", url], cwd=REPO, env={**env, "COLUMNS": "200"},
                                capture_output=True, text=True, timeout=120)

    assert status.returncode == 0, status.stderr[-2000:]
    counts = done["request_counts"]
    assert f"{batch['id']}  cancelled  total=12 completed={counts['completed']} failed={counts['failed']}" \
        in status.stdout
    assert done["status"] == "cancelled" and done["cancelled_at"] and done["cancelling_at"]
    assert counts["total"] == 12 and counts["completed"] + counts["failed"] == 12
    assert 2 <= counts["completed"] < 12
    assert len(output) == counts["completed"] and len(errors) == counts["failed"]
    assert {x["custom_id"] for x in partial} <= {x["custom_id"] for x in output}
    assert {x["error"]["code"] for x in errors} == {"batch_cancelled"}
    assert sorted(x["custom_id"] for x in output + errors) == [x["custom_id"] for x in lines]


def test_expiry_of_a_running_batch_by_the_periodic_command(pg_db: str, broker_url: str, tmp_path: Path,
                                                           request: pytest.FixtureRequest) -> None:
    env = env_for(pg_db, broker_url, tmp_path, FACTORY_FAKE_DELAY_S="1.0", FACTORY_BATCH_WINDOW_OVERRIDE_S="3")
    # Far more work than the window: the batch must still run when the command (a cold Python start) gets to it.
    lines = [chat(f"e{i:02d}", f"line {i}") for i in range(60)]
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        http = httpx.Client(base_url=url, timeout=30, headers=auth_headers(pg_db))
        request.addfinalizer(http.close)
        batch = create_batch(http, lines)
        assert batch["expires_at"] - batch["created_at"] == 3
        with get_sessionmaker(pg_db)() as s:  # watch the rows, not the API: reading a batch would expire it
            def due_with_progress() -> dict[str, Any] | None:
                s.rollback()
                row = s.get(Batch, batch["id"])
                assert row is not None and row.expires_at is not None and row.job_id is not None
                done = s.scalar(select(func.count()).select_from(Item).where(
                    Item.job_id == row.job_id, Item.state == ItemState.SUCCEEDED)) or 0
                return {} if done >= 2 and time.time() > row.expires_at.timestamp() + 0.2 else None

            wait_until(due_with_progress, 60, "the window to pass with some lines done")
        out = subprocess.run([sys.executable, "-m", "factory.cli", "batches", "expire"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert batch["id"] in out.stdout
        done = batch_when(http, batch["id"], lambda b: b["status"] in FINAL_STATUSES)
        output, errors = file_lines(http, done["output_file_id"]), file_lines(http, done["error_file_id"])

    assert done["status"] == "expired" and done["expired_at"] is not None and done["cancelled_at"] is None
    counts = done["request_counts"]
    assert counts["total"] == 60 and counts["completed"] + counts["failed"] == 60
    assert 2 <= counts["completed"] < 60
    assert len(output) == counts["completed"]
    assert {x["error"]["code"] for x in errors} == {"batch_expired"} and len(errors) == counts["failed"]
    assert all(x["response"] is None for x in errors)
    assert sorted(x["custom_id"] for x in output + errors) == [x["custom_id"] for x in lines]


def test_a_deleted_input_cancels_its_batch_cleanly_and_a_vanished_one_fails_its_chunks(
    pg_db: str, broker_url: str, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    """Items are written by the worker that claims a chunk, from the stored input file. Deleting the
    file through the API while the batch runs erases the batch's data (docs/privacy.md): the batch is
    cancelled, every line is still answered (as cancelled, read from the kept content by the
    finalize step), and the content goes once the batch ends. If the content vanishes behind the
    factory's back, the chunks fail (counted as failed lines) instead of being retried forever."""
    env = env_for(pg_db, broker_url, tmp_path)
    lines = [chat(f"d{i}", f"line {i}") for i in range(5)]
    objects = tmp_path / "objects"
    with api_server(env, tmp_path / "api.log") as url:
        http = httpx.Client(base_url=url, timeout=30, headers=auth_headers(pg_db))
        request.addfinalizer(http.close)
        kept = create_batch(http, lines)
        assert http.delete(f"/v1/files/{kept['input_file_id']}").json()["deleted"] is True
        gone = create_batch(http, lines)
        inputs = {p.parent.name: p for p in objects.rglob("content.jsonl")}
        assert set(inputs) == {kept["input_file_id"], gone["input_file_id"]}  # both contents still there
        inputs[gone["input_file_id"]].unlink()
        with worker(env, tmp_path / "worker.log"):
            done = batch_when(http, kept["id"], lambda b: b["status"] in FINAL_STATUSES)
            failed = batch_when(http, gone["id"], lambda b: b["status"] in FINAL_STATUSES)
            errors_file = file_lines(http, done["error_file_id"])

    assert done["status"] == "cancelled" and done["request_counts"] == {"total": 5, "completed": 0, "failed": 5}
    assert [(x["custom_id"], x["error"]["code"]) for x in errors_file] == [(x["custom_id"], "batch_cancelled")
                                                                             for x in lines]
    assert not inputs[kept["input_file_id"]].exists()  # deleted with the batch's end
    assert failed["request_counts"] == {"total": 5, "completed": 0, "failed": 5}
    with get_sessionmaker(pg_db)() as s:
        row = s.get(Batch, failed["id"])
        assert row is not None
        errors = list(s.scalars(select(Chunk.last_error).where(Chunk.job_id == row.job_id)))
    assert len(errors) == 3 and all("input file cannot be read back" in (e or "") for e in errors)


def test_sync_chat_overtakes_a_queued_batch_and_matches_its_seeded_line(
    pg_db: str, broker_url: str, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    env = env_for(pg_db, broker_url, tmp_path, FACTORY_FAKE_DELAY_S="1.0")
    probe = {"model": MODEL, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8,
             "seed": 42, "n": 2}
    lines = [chat("same", "Name a colour.", seed=42, n=2)] + [chat(f"b{i:02d}", f"line {i}") for i in range(15)]
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        http = httpx.Client(base_url=url, timeout=60, headers=auth_headers(pg_db))
        request.addfinalizer(http.close)
        batch = create_batch(http, lines)
        client = OpenAI(base_url=f"{url}/v1", api_key=api_key(pg_db), max_retries=0)
        request.addfinalizer(client.close)
        completion = client.chat.completions.create(**probe)  # type: ignore[call-overload]
        during = http.get(f"/v1/batches/{batch['id']}").json()
        # Answered while most of the batch still waits: it did not queue behind it.
        assert during["status"] == "in_progress" and during["request_counts"]["completed"] <= 4, during
        done = batch_when(http, batch["id"], lambda b: b["status"] in FINAL_STATUSES)
        output = file_lines(http, done["output_file_id"])

    assert completion.object == "chat.completion" and len(completion.choices) == 2
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    line = next(x for x in output if x["custom_id"] == "same")["response"]["body"]
    # Same messages and seed: the same texts, whether sent alone or in a batch.
    assert [c["message"]["content"] for c in line["choices"]] == [c.message.content for c in completion.choices]
