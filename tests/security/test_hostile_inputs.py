"""Every endpoint that takes a body, against the hostile catalogue (``catalogue.py``), on both databases.

Each case must get its exact 4xx within seconds, never a 5xx; the error names a field and
never carries the hostile value; and nothing is written: every table's row count, the
database's size on disk, the stored objects and the broker's keys are as before.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from factory.api.app import create_app
from factory.api.routing import post_routes
from factory.config import Settings
from factory.db.base import Base
from factory.db.session import get_engine
from tests.conftest import truncate
from tests.security.catalogue import (
    CANARY,
    MODEL,
    TEST_LIMITS,
    Case,
    catalogue,
    covered_routes,
)
from tests.security.conftest import open_client

CASES = catalogue(Settings(**TEST_LIMITS))
SECONDS = 5.0


# Nothing a case sends may write anything, and every test compares the database, storage and
# broker before and after its request: so one database per backend, one broker database and one
# app serve the whole module (hundreds of cases), instead of a fresh set per case.
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, redis_server: str, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[Settings]:
    url: str = request.getfixturevalue("sqlite_session_url" if request.param == "sqlite" else "pg_url")
    truncate(url)
    broker = f"{redis_server}/{1 + uuid.uuid4().int % 15}"
    redis.Redis.from_url(broker).flushdb()
    # Hundreds of requests from one key: no request-rate limit here (tests/security/test_quotas.py has those).
    yield Settings(database_url=url, broker_url=broker, generator="fake", quota_requests_per_key=0,
                   quota_requests_per_tenant=0,
                   storage_url=f"file://{tmp_path_factory.mktemp('hostile')}/objects", **TEST_LIMITS)
    redis.Redis.from_url(broker).flushdb()


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with open_client(settings) as c:
        yield c


def test_the_catalogue_covers_every_endpoint_that_takes_a_body() -> None:
    """A new POST/PUT/PATCH route fails here until hostile cases for it are added to the catalogue."""
    routes = set(post_routes(create_app(Settings(), run_migrations=False).routes))
    assert ("POST", "/v1/jobs") in routes
    assert routes == covered_routes(), f"not covered: {routes - covered_routes()}; stale: {covered_routes() - routes}"
    assert {(c.method, c.route) for c in CASES} == routes


def _database_size(url: str) -> int:
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))  # with -wal and -shm
    with get_engine(url).connect() as conn:
        return int(conn.scalar(text("SELECT pg_database_size(current_database())")) or 0)


def _snapshot(settings: Settings) -> dict[str, Any]:
    with get_engine(settings.database_url).connect() as conn:
        counts = {t.name: conn.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}
    objects = Path(settings.storage_url.removeprefix("file://"))
    return {"rows": counts, "db_bytes": _database_size(settings.database_url),
            "objects": sorted(str(p.relative_to(objects)) for p in objects.rglob("*")) if objects.exists() else [],
            "broker_keys": redis.Redis.from_url(settings.broker_url or "").dbsize()}


def _send(client: TestClient, case: Case) -> Any:
    content = iter(case.content) if isinstance(case.content, tuple) else case.content
    return client.request(case.method, case.url, content=content, headers=case.headers)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.method} {c.route}: {c.name}" for c in CASES])
def test_hostile_request_is_refused_with_nothing_written(client: TestClient, settings: Settings, case: Case) -> None:
    before = _snapshot(settings)
    started = time.monotonic()
    resp = _send(client, case)
    assert time.monotonic() - started < SECONDS
    assert resp.status_code == case.status, resp.text[:500]
    error = resp.json()["error"]
    assert error["field"] and error["field"].startswith(case.field), error
    assert error["message"] and case.message_has in error["message"]
    for forbidden in case.forbidden:
        assert forbidden not in resp.text
    assert _snapshot(settings) == before


@pytest.mark.parametrize(("name", "body", "param"), [
    ("lone surrogate", {"messages": [{"role": "user", "content": "\ud800" + CANARY}]}, "body.messages[0].content"),
    ("NUL", {"messages": [{"role": "user", "content": "\x00" + CANARY}]}, "body.messages[0].content"),
    ("NaN", {"temperature": float("nan")}, "body.temperature"),
    ("duplicate key", {"DUPLICATE": True}, "body.model"),
])
def test_a_hostile_batch_line_fails_the_batch_naming_its_line_and_field(
        client: TestClient, settings: Settings, name: str, body: dict[str, Any], param: str) -> None:
    """Upload accepts the file (valid UTF-8 JSONL); the batch is refused with the line and the JSON path."""
    lines = []
    for i in range(3):
        line_body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        if i == 1:
            line_body |= {k: v for k, v in body.items() if k != "DUPLICATE"}
        text_line = json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": line_body})
        if i == 1 and "DUPLICATE" in body:
            text_line = text_line.replace('{"model": ', f'{{"model": "{MODEL}", "model": ', 1)
        lines.append(text_line)
    upload = client.post("/v1/files", files={"file": ("in.jsonl", "\n".join(lines).encode())},
                         data={"purpose": "batch"})
    assert upload.status_code == 200, upload.text
    before = _snapshot(settings)["rows"]
    resp = client.post("/v1/batches", json={"input_file_id": upload.json()["id"],
                                            "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    assert resp.status_code == 200, resp.text
    batch = resp.json()
    assert batch["status"] == "failed"
    assert [(e["line"], e["param"]) for e in batch["errors"]["data"]] == [(2, param)]
    assert CANARY not in resp.text and "ud800" not in resp.text
    after = _snapshot(settings)["rows"]
    assert {t: after[t] - before[t] for t in after if after[t] != before[t]} == {"batches": 1}


@pytest.mark.parametrize(("method", "url", "field"), [
    ("GET", "/v1/jobs/job_%00", "job_id"),
    ("POST", "/v1/jobs/job_%00/cancel", "job_id"),
    ("GET", "/v1/files?after=file_%00", "after"),
    ("GET", "/v1/files?purpose=batch%1b", "purpose"),
    ("GET", "/v1/batches?after=batch_%00", "after"),
    ("GET", "/v1/templates/greeting%00", "name"),
    ("PUT", "/v1/brands/acme%00", "name"),
    ("GET", "/v1/campaigns/cmp_%7f/report", "campaign_id"),
])
def test_control_characters_in_the_url_are_refused(client: TestClient, settings: Settings, method: str, url: str,
                                                    field: str) -> None:
    """PostgreSQL refuses NUL in a compared string: without this check these are 500s there, not 404s."""
    before = _snapshot(settings)
    resp = client.request(method, url, headers={"content-type": "application/json"}, content=b"{}")
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == field
    assert _snapshot(settings) == before
