"""OpenLineage run events: a real API and worker (fake generator) with a file sink, on SQLite and
PostgreSQL. A job that succeeds sends START then COMPLETE, one that fails START then FAIL, each
with the job's datasets and the same run id; nothing is sent when no sink is set."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from factory.lineage.events import run_id
from tests.keys import auth_headers
from tests.processes import api_server, factory_env, wait_job, worker

pytestmark = pytest.mark.slow


def events_for(sink: Path, job_id: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = sink.read_text().splitlines() if sink.exists() else []
        found = [e for e in map(json.loads, lines) if e["run"]["runId"] == run_id(job_id)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_jobs_send_their_run_events_with_their_datasets(db_url: str, broker_url: str, tmp_path: Path) -> None:
    sink = tmp_path / "lineage.jsonl"
    env = factory_env(FACTORY_DATABASE_URL=db_url, FACTORY_BROKER_URL=broker_url, FACTORY_GENERATOR="fake",
                      FACTORY_STORAGE_URL=f"file://{tmp_path}/objects", FACTORY_LINEAGE_FILE=str(sink),
                      FACTORY_CHUNK_MAX_ATTEMPTS="1")
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log", pool="solo"), \
            httpx.Client(base_url=url, timeout=30, headers=auth_headers(db_url, "acme")) as client:
        ok = client.post("/v1/jobs", json={"kind": "personalization", "template": "Hi {{ name }}",
                                           "audience": [{"id": "a", "name": "Ana"}, {"id": "b", "name": "Bo"}]})
        bad = client.post("/v1/jobs", json={"kind": "personalization", "template": "Hi {{ name }}",
                                            "audience": [{"id": "p", "name": "POISON"}]})
        assert ok.status_code == bad.status_code == 202, ok.text + bad.text
        assert wait_job(client, ok.json()["id"], timeout=120)["status"] == "succeeded"
        assert wait_job(client, bad.json()["id"], timeout=120)["status"] == "failed"
        good_events = events_for(sink, ok.json()["id"], 2)
        bad_events = events_for(sink, bad.json()["id"], 2)

    job_id = ok.json()["id"]
    assert [e["eventType"] for e in good_events] == ["START", "COMPLETE"]
    start, complete = good_events
    assert start["job"] == complete["job"] == {"namespace": "content-factory", "name": "acme.personalization"}
    assert start["inputs"] == [{"namespace": "content-factory://acme", "name": f"jobs/{job_id}/audience",
                                "facets": complete["inputs"][0]["facets"]}]
    assert start["outputs"] == []
    assert [(d["name"], d["facets"]["contentFactory"]["items"]) for d in complete["outputs"]] == [
        (f"jobs/{job_id}/results", 2)]
    assert complete["run"]["facets"]["contentFactory"]["status"] == "succeeded"
    assert complete["producer"].startswith("urn:content-factory:")
    assert [e["eventType"] for e in bad_events] == ["START", "FAIL"]
    assert "Ana" not in sink.read_text()  # ids, names and counts only


def test_no_sink_no_events(db_url: str, broker_url: str, tmp_path: Path) -> None:
    from factory.config import Settings
    from factory.lineage import events

    assert not events.enabled(Settings(database_url=db_url))
    assert events.enabled(Settings(database_url=db_url, lineage_file=str(tmp_path / "x.jsonl")))
