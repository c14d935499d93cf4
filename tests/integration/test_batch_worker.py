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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from sqlalchemy import func, select

from factory.batches import service as batches_service
from factory.config import Settings
from factory.db.models import Batch, Item, ItemState, Job, StoredFile
from factory.db.session import get_sessionmaker
from factory.storage import close_stores, open_store
from tests.processes import api_server, factory_env, worker
from tests.services import REPO

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
SECRET = "whsec_" + base64.b64encode(b"test-webhook-secret-0123456789ab").decode()
TERMINAL = ("completed", "failed", "cancelled", "expired")


def chat(custom_id: str, content: str, **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **body}}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def env_for(pg_db: str, broker_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return factory_env(FACTORY_DATABASE_URL=pg_db, FACTORY_BROKER_URL=broker_url,
                       FACTORY_STORAGE_URL=f"file://{tmp_path}/objects", FACTORY_GENERATOR="fake",
                       FACTORY_CHUNK_SIZE="2", **extra)


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


class Hooks:
    """A loopback webhook receiver: answers 500 to the first delivery, 200 after."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                hooks.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if len(hooks.received) == 1 else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/batch"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def hooks_server() -> Iterator[Hooks]:
    hooks = Hooks()
    try:
        yield hooks
    finally:
        hooks.close()


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
              {"custom_id": "g1", "method": "POST", "url": "/v1/augment", "body": {"records": []}}]
    with hooks_server() as hooks, api_server(env, tmp_path / "api.log") as url, \
            worker(env, tmp_path / "worker.log"):
        client = OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0)
        request.addfinalizer(client.close)
        uploaded = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h", metadata={"run": "t1"},
                                      extra_body={"webhook_url": hooks.url})
        assert batch.status == "in_progress" and batch.request_counts is not None
        while batch.status not in TERMINAL:
            time.sleep(0.3)
            batch = client.batches.retrieve(batch.id)
        assert batch.status == "completed", batch
        assert batch.request_counts is not None
        assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (8, 6, 2)
        assert batch.completed_at and batch.finalizing_at and batch.in_progress_at
        assert batch.usage is not None and batch.usage.output_tokens > 0
        assert batch.output_file_id and batch.error_file_id
        output = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        errors = [json.loads(x) for x in client.files.content(batch.error_file_id).text.splitlines()]
        http = httpx.Client(base_url=url, timeout=30)
        request.addfinalizer(http.close)
        partial = http.get(f"/v1/batches/{batch.id}/output").text
        assert partial == client.files.content(batch.output_file_id).text
        assert [b.id for b in client.batches.list(limit=5)] == [batch.id]
        assert {f.id for f in client.files.list()} == {uploaded.id, batch.output_file_id, batch.error_file_id}
        wait_until(lambda: {} if len(hooks.received) >= 2 else None, 60, "the webhook retry")

    assert sorted(x["custom_id"] for x in output + errors) == sorted(x["custom_id"] for x in lines)
    assert [x["custom_id"] for x in output] == ["c1", "c2", "c3", "c4", "c5", "p1"]
    c3 = next(x for x in output if x["custom_id"] == "c3")["response"]["body"]
    assert len(c3["choices"]) == 2 and c3["choices"][0]["message"]["content"].endswith("Tell me about item 3")
    p1 = next(x for x in output if x["custom_id"] == "p1")["response"]["body"]
    assert [(r["key"], r["text"].split("] ")[1]) for r in p1["results"]] == [("a", "Hi Ana"), ("b", "Hi Bo")]
    by_id = {x["custom_id"]: x for x in errors}
    assert by_id["poison"]["response"]["status_code"] == 500
    assert by_id["poison"]["response"]["body"]["error"]["code"] == "generation_failed"
    assert by_id["g1"]["response"]["body"]["error"]["code"] == "unsupported_endpoint"

    # The webhook: retried after a 500, same event id, signature valid for the SDK.
    assert len(hooks.received) == 2
    (h1, b1), (h2, b2) = hooks.received
    assert h1["webhook-id"] == h2["webhook-id"] and b1 == b2
    event = OpenAI(api_key="test").webhooks.unwrap(b2, h2, secret=SECRET)
    assert event.type == "batch.completed" and event.data.id == batch.id

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
        batches_service.finalize_batch(s, store, job)
        s.commit()
        assert (row.output_file_id, row.error_file_id) == (batch.output_file_id, batch.error_file_id)
        assert s.scalar(select(func.count()).select_from(StoredFile)) == 3
    assert sorted(p.read_bytes() for p in (tmp_path / "objects").rglob("content.jsonl")) == before


def test_cancel_a_running_batch_keeps_finished_lines(pg_db: str, broker_url: str, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
    env = env_for(pg_db, broker_url, tmp_path, FACTORY_FAKE_DELAY_S="1.0")
    lines = [chat(f"c{i:02d}", f"line {i}") for i in range(12)]
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        http = httpx.Client(base_url=url, timeout=30)
        request.addfinalizer(http.close)
        batch = create_batch(http, lines)
        running = batch_when(http, batch["id"], lambda b: b["request_counts"]["completed"] >= 2)
        partial = [json.loads(x) for x in http.get(f"/v1/batches/{batch['id']}/output").text.splitlines()]
        assert len(partial) >= running["request_counts"]["completed"] >= 2
        cancelled = http.post(f"/v1/batches/{batch['id']}/cancel").json()
        assert cancelled["status"] == "cancelling"
        done = batch_when(http, batch["id"], lambda b: b["status"] in TERMINAL)
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
        http = httpx.Client(base_url=url, timeout=30)
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
        done = batch_when(http, batch["id"], lambda b: b["status"] in TERMINAL)
        output, errors = file_lines(http, done["output_file_id"]), file_lines(http, done["error_file_id"])

    assert done["status"] == "expired" and done["expired_at"] is not None and done["cancelled_at"] is None
    counts = done["request_counts"]
    assert counts["total"] == 60 and counts["completed"] + counts["failed"] == 60
    assert 2 <= counts["completed"] < 60
    assert len(output) == counts["completed"]
    assert {x["error"]["code"] for x in errors} == {"batch_expired"} and len(errors) == counts["failed"]
    assert all(x["response"] is None for x in errors)
    assert sorted(x["custom_id"] for x in output + errors) == [x["custom_id"] for x in lines]


def test_sync_chat_overtakes_a_queued_batch_and_matches_its_seeded_line(
    pg_db: str, broker_url: str, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    env = env_for(pg_db, broker_url, tmp_path, FACTORY_FAKE_DELAY_S="1.0")
    probe = {"model": MODEL, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8,
             "seed": 42, "n": 2}
    lines = [chat("same", "Name a colour.", seed=42, n=2)] + [chat(f"b{i:02d}", f"line {i}") for i in range(15)]
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        http = httpx.Client(base_url=url, timeout=60)
        request.addfinalizer(http.close)
        batch = create_batch(http, lines)
        client = OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0)
        request.addfinalizer(client.close)
        completion = client.chat.completions.create(**probe)  # type: ignore[call-overload]
        during = http.get(f"/v1/batches/{batch['id']}").json()
        # Answered while most of the batch still waits: it did not queue behind it.
        assert during["status"] == "in_progress" and during["request_counts"]["completed"] <= 4, during
        done = batch_when(http, batch["id"], lambda b: b["status"] in TERMINAL)
        output = file_lines(http, done["output_file_id"])

    assert completion.object == "chat.completion" and len(completion.choices) == 2
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    line = next(x for x in output if x["custom_id"] == "same")["response"]["body"]
    # Same messages and seed: the same texts, whether sent alone or in a batch.
    assert [c["message"]["content"] for c in line["choices"]] == [c.message.content for c in completion.choices]
