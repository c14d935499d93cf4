"""Metrics and structured logs of real API and worker processes (fake generator, PostgreSQL, Redis).

- The API's /metrics shows the queue a job waits in (read from the broker and the database when
  scraped); the worker's /metrics shows items, tokens, failures and chunk latencies move while the job
  runs, and keeps every count although each pool child is replaced after one task.
- With FACTORY_LOG_FORMAT=json every line either process writes is a JSON object; the worker's lines
  about a chunk carry its job, tenant and chunk ids and timings; a record's value never appears.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.keys import auth_headers
from tests.processes import api_server, factory_env, wait_job, worker
from tests.services import free_port, wait_for

MODEL = "smollm2-135m-instruct"
QUEUE = f"gen.{MODEL}"
TOKEN = "metrics-token-for-tests"
CANARY = "CANARYVALUE77b2"  # a recipient's field: rendered, generated from (the fake echoes it), never logged
JOB_LABELS = {"kind": "personalization", "model": MODEL}


def _env(pg_db: str, broker_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return factory_env(FACTORY_DATABASE_URL=pg_db, FACTORY_BROKER_URL=broker_url,
                       FACTORY_STORAGE_URL=f"file://{tmp_path / 'objects'}", FACTORY_DATA_DIR=str(tmp_path / "data"),
                       FACTORY_GENERATOR="fake", FACTORY_CHUNK_SIZE="4", **extra)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    return _samples(response.text)


def _submit(client: httpx.Client, names: list[str]) -> str:
    response = client.post("/v1/jobs", json={
        "kind": "personalization", "template": "Write to {{ name }}.", "variants": 1, "params": {"seed": 7},
        "audience": [{"id": f"r{i:02d}", "name": name} for i, name in enumerate(names)]})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


@pytest.mark.slow
def test_metrics_move_during_a_job_and_survive_the_worker_replacing_its_children(
        pg_db: str, broker_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    port = free_port()
    env = _env(pg_db, broker_url, tmp_path, FACTORY_METRICS_TOKEN=TOKEN, FACTORY_METRICS_PORT=str(port),
               FACTORY_FAKE_DELAY_S="0.4")
    names = ["POISON" if i == 5 else f"n{i}" for i in range(20)]  # 5 chunks of 4; one item fails
    with api_server(env, tmp_path / "api.log") as url:
        client = httpx.Client(base_url=url, timeout=30, headers=auth_headers(pg_db))
        request.addfinalizer(client.close)
        assert httpx.get(f"{url}/metrics").status_code == 401  # the token is required, not an API key
        assert httpx.get(f"{url}/metrics", headers=client.headers).status_code == 401
        job_id = _submit(client, names)

        # No worker yet: the job's chunks wait in the broker and the database, and /metrics says so.
        api = _scrape(f"{url}/metrics")
        assert _value(api, "factory_queue_chunks", queue=QUEUE, state="pending") == 5
        assert _value(api, "factory_queue_messages", queue=QUEUE, state="ready") == 5
        assert _value(api, "factory_http_requests_total", method="POST", route="/v1/jobs", status="202") == 1

        metrics_url = f"http://127.0.0.1:{port}/metrics"
        with worker(env, tmp_path / "worker.log", args=("--max-tasks-per-child=1",)):
            assert httpx.get(metrics_url, timeout=10).status_code == 401
            seen: list[float] = []
            while client.get(f"/v1/jobs/{job_id}").json()["status"] in ("queued", "running"):
                seen.append(_value(_scrape(metrics_url), "factory_items_total", **JOB_LABELS, outcome="succeeded"))
                time.sleep(0.1)
            job = wait_job(client, job_id)
            # Totals the scrape adds up from every child that ran a task, each since replaced.
            wait_for(lambda: _value(_scrape(metrics_url), "factory_tasks_in_progress",
                                    task="factory.finalize_job") == 0, 60, "the finalize task to end")
            final = _scrape(metrics_url)
        lines = client.get(f"/v1/jobs/{job_id}/results").text.splitlines()
        api = _scrape(f"{url}/metrics")

    assert job["counts"] == {"total": 20, "pending": 0, "succeeded": 19, "failed": 1, "cancelled": 0}
    # One process per chunk: each child was replaced after its task.
    assert len({json.loads(line)["provenance"]["worker_pid"] for line in lines}) == 5
    assert seen == sorted(seen) and any(0 < v < 19 for v in seen), f"no scrape saw the job half done: {seen}"
    assert _value(final, "factory_items_total", **JOB_LABELS, outcome="succeeded") == 19
    assert _value(final, "factory_items_total", **JOB_LABELS, outcome="failed") == 1
    assert _value(final, "factory_item_failures_total", **JOB_LABELS, reason="PoisonedPrompt") == 1
    assert _value(final, "factory_chunk_runs_total", result="done") == 5
    assert _value(final, "factory_tokens_total", **JOB_LABELS, direction="completion") > 19
    for histogram in ("factory_chunk_queue_wait_seconds", "factory_chunk_generation_seconds",
                      "factory_chunk_write_seconds"):
        assert _value(final, f"{histogram}_count", **JOB_LABELS) == 5, histogram
        assert _value(final, f"{histogram}_bucket", **JOB_LABELS, le="+Inf") == 5, histogram
    assert _value(final, "factory_chunk_generation_seconds_sum", **JOB_LABELS) >= 5 * 0.4
    # Every child loaded the model once; none is running a task any more.
    assert _value(final, "factory_model_load_seconds_count", model=MODEL, generator="fake") >= 6
    assert _value(final, "factory_tasks_in_progress", task="factory.generate_chunk") == 0
    assert _value(api, "factory_queue_chunks", queue=QUEUE, state="pending") == 0
    assert _value(api, "factory_chunks", state="succeeded") == 5


@pytest.mark.slow
def test_json_logs_name_the_job_and_never_a_record_value(pg_db: str, broker_url: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    env = _env(pg_db, broker_url, tmp_path, FACTORY_LOG_FORMAT="json")
    names = [f"POISON {CANARY}" if i == 2 else f"{CANARY} {i}" for i in range(8)]
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log"):
        client = httpx.Client(base_url=url, timeout=30, headers=auth_headers(pg_db, tenant="acme"))
        request.addfinalizer(client.close)
        job_id = _submit(client, names)
        assert wait_job(client, job_id)["counts"]["failed"] == 1
        assert CANARY in client.get(f"/v1/jobs/{job_id}/results").text  # the value went through
        time.sleep(1)  # the finalize task's last lines

    logs = {}
    for name in ("api.log", "worker.log"):
        text = (tmp_path / name).read_text()
        assert CANARY not in text, f"{name} holds a record value"
        logs[name] = [json.loads(line) for line in text.splitlines() if line.strip()]  # each line is JSON
        assert all({"ts", "level", "logger", "message"} <= set(line) for line in logs[name])

    chunks = [line for line in logs["worker.log"] if line.get("event") == "chunk_finished"]
    assert len(chunks) == 2 and len({c["chunk_id"] for c in chunks}) == 2
    for line in chunks:
        assert (line["job_id"], line["tenant_id"], line["result"]) == (job_id, "acme", "done")
        assert line["generate_ms"] >= 0 and line["write_ms"] >= 0 and line["queue_ms"] >= 0
        assert line["task"] == "factory.generate_chunk" and line["attempt"] == 1
    assert sum(c["items_succeeded"] for c in chunks) == 7 and sum(c["items_failed"] for c in chunks) == 1
    failed = [line for line in logs["worker.log"] if line.get("event") == "item_failed"]
    assert len(failed) == 1 and failed[0]["reason"] == "PoisonedPrompt" and failed[0]["job_id"] == job_id
    assert failed[0]["item_id"]
    submitted = [line for line in logs["api.log"] if line.get("http_path") == "/v1/jobs"]
    assert submitted and submitted[0]["http_status"] == 202 and submitted[0]["tenant_id"] == "acme"
    assert submitted[0]["request_id"]
