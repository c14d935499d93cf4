"""The jobs API against real databases (SQLite and PostgreSQL) and a real Redis."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from factory.config import Settings
from factory.db.models import Chunk, Item, Job, OutboxMessage
from factory.db.session import get_sessionmaker
from tests.rows import count_rows

CANARY = "CANARY-7f3a9e-DO-NOT-ECHO"


def job_body(n: int = 5, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "personalization",
        "template": "Write a short note to {{ first_name }} about {{ product }}.",
        "audience": [{"id": f"r{i}", "first_name": f"Name{i}", "product": "boots"} for i in range(n)],
        "variants": 2,
        "params": {"max_new_tokens": 16, "temperature": 0.7, "seed": 7},
    }
    body.update(kw)
    return body


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                    chunk_size=4, max_audience=100)


def test_create_job_writes_rows_and_enqueues_one_message_per_chunk(client: TestClient, settings: Settings) -> None:
    r = client.post("/v1/jobs", json=job_body(5))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued"
    assert job["counts"] == {"total": 10, "pending": 10, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert job["chunk_count"] == 3  # 10 items / chunk_size 4
    assert job["seed"] == 7
    assert count_rows(settings.database_url, Item) == 10
    assert count_rows(settings.database_url, Chunk) == 3
    with get_sessionmaker(settings.database_url)() as s:
        msgs = list(s.scalars(select(OutboxMessage)))
        assert len(msgs) == 3 and all(m.sent_at is not None for m in msgs)
        items = list(s.scalars(select(Item).order_by(Item.seq)))
        assert items[0].prompt == "Write a short note to Name0 about boots."
        assert [(i.key, i.variant) for i in items[:3]] == [("r0", 0), ("r0", 1), ("r1", 0)]
        assert items[0].seed != items[1].seed
    # The broker holds one message per chunk, carrying only the chunk id.
    r_client = redis.Redis.from_url(settings.broker_url or "")
    queued = r_client.lrange("gen.smollm2-135m-instruct", 0, -1)
    assert len(queued) == 3
    chunk_ids = sorted(_task_args(m)[0] for m in queued)
    with get_sessionmaker(settings.database_url)() as s:
        assert chunk_ids == sorted(s.scalars(select(Chunk.id)))


def _task_args(raw: bytes) -> list[Any]:
    """The positional args of a Celery message as kombu stores it in Redis (JSON, base64 body)."""
    envelope = json.loads(raw)
    assert envelope["content-type"] == "application/json"
    args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    return list(args)


def test_get_job_and_unknown_job(client: TestClient) -> None:
    job = client.post("/v1/jobs", json=job_body(1)).json()
    r = client.get(f"/v1/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["id"] == job["id"]
    r = client.get("/v1/jobs/job_00000000000000000000000000ff")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_cancel_marks_pending_items_cancelled_and_queues_finalization(client: TestClient, settings: Settings) -> None:
    job = client.post("/v1/jobs", json=job_body(3)).json()
    r = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200
    out = r.json()
    assert out["status"] == "cancelling"  # the finalize task turns it into "cancelled"
    assert out["counts"]["cancelled"] == 6 and out["counts"]["pending"] == 0
    queued = redis.Redis.from_url(settings.broker_url or "").lrange("gen.smollm2-135m-instruct", 0, -1)
    assert [json.loads(m)["headers"]["task"] for m in queued].count("factory.finalize_job") == 1
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelling"  # idempotent


BAD_INPUTS: list[tuple[str, dict[str, Any] | str, str]] = [
    ("malformed json", "{not json", "body"),
    ("unknown kind", job_body(kind="teleport"), "kind"),
    ("syntax error", job_body(template="Hi {{ first_name "), "template"),
    ("missing variable", job_body(template="Hi {{ nickname }}"), "audience[0]"),
    ("empty audience", job_body(audience=[]), "audience"),
    ("oversized audience", job_body(101), "audience"),
    ("unknown model", job_body(model="gpt-9-ultra"), "model"),
    ("temperature too high", job_body(params={"temperature": 9.5}), "params.temperature"),
    ("max_new_tokens zero", job_body(params={"max_new_tokens": 0}), "params.max_new_tokens"),
    ("top_p zero", job_body(params={"top_p": 0}), "params.top_p"),
    ("variants out of range", job_body(variants=0), "variants"),
    ("unknown field", job_body(surprise=1), "surprise"),
    ("string for int", job_body(variants="2"), "variants"),
    ("duplicate keys", job_body(audience=[{"id": "a", "first_name": "x", "product": "y"}] * 2), "audience[1]"),
    ("missing key", job_body(audience=[{"first_name": "x", "product": "y"}]), "audience[0].id"),
    ("sandbox escape", job_body(template="{{ first_name.__class__.__mro__ }}"), "template"),
    ("nested record", job_body(audience=[{"id": "a", "first_name": {"x": 1}, "product": "y"}]), "audience[0]"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_422_naming_the_field_with_nothing_written(
    client: TestClient, settings: Settings, case: str, body: dict[str, Any] | str, field: str
) -> None:
    if isinstance(body, dict):
        # Plant a canary in every string the client sends: it must never come back.
        body = json.loads(json.dumps(body).replace("Name0", CANARY).replace("boots", CANARY))
        if case == "missing variable":
            body["template"] = "Hi {{ nickname }} " + CANARY
        resp = client.post("/v1/jobs", json=body)
    else:
        resp = client.post("/v1/jobs", content=body + CANARY, headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["field"].startswith(field), err
    assert err["message"]
    assert CANARY not in resp.text
    for model in (Job, Chunk, Item, OutboxMessage):
        assert count_rows(settings.database_url, model) == 0
    assert redis.Redis.from_url(settings.broker_url or "").llen("gen.smollm2-135m-instruct") == 0


def test_oversized_body_is_413(client: TestClient, settings: Settings) -> None:
    resp = client.post("/v1/jobs", content=b"x", headers={"content-type": "application/json",
                                                          "content-length": str(settings.max_body_bytes + 1)})
    assert resp.status_code == 413
