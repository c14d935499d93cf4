"""Chained pipeline steps (factory/pipelines/steps.py, factory/pipelines/chain.py).

With a real scheduler process, a real worker (fake generator), real Redis and PostgreSQL: a batch →
batch → export chain runs every step, each over the previous one's output, all in the run's record;
a failing first step fails the run (signed webhook) and never starts the second. Through the API on
SQLite and PostgreSQL: a bad chain is a 4xx naming ``steps[i]...`` at save time, nothing written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from factory.config import Settings
from factory.db.models import Batch, Job, Pipeline, PipelineRunStep
from tests.integration.test_pipeline_scheduler import SECRET, _create, _wait_runs
from tests.integration.test_pipeline_scheduler import env as env
from tests.keys import api_test_client
from tests.pipeline_data import MODEL, chat_lines, upload
from tests.processes import scheduler, worker
from tests.rows import count_rows
from tests.services import wait_for
from tests.webhook_receiver import webhook_receiver

CANARY = "CANARY-7c1d-NOT-ECHOED"
SUMMARISE = {"model": MODEL, "max_tokens": 6, "messages": [{"role": "system", "content": "Say it shorter."}]}


def chain_spec(name: str, every_s: int, file_id: str, *extra_steps: dict[str, Any], **more: Any) -> dict[str, Any]:
    """A batch over ``file_id``, then ``extra_steps``."""
    return {"name": name, "schedule": {"every_seconds": every_s}, "input": {"source": "file", "file_id": file_id},
            "steps": [{"kind": "batch", "request": {"endpoint": "/v1/chat/completions"}}, *extra_steps], **more}


SECOND_BATCH = {"kind": "batch", "request": {"endpoint": "/v1/chat/completions", "metadata": {"step": "2"}},
                "body": SUMMARISE}


def _content(client: TestClient, file_id: str) -> list[dict[str, Any]]:
    r = client.get(f"/v1/files/{file_id}/content")
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


# --- with a real scheduler and worker -----------------------------------------------
@pytest.fixture
def pg_client(env: dict[str, str]) -> Iterator[TestClient]:
    settings = Settings(database_url=env["FACTORY_DATABASE_URL"], broker_url=env["FACTORY_BROKER_URL"],
                        storage_url=env["FACTORY_STORAGE_URL"], pipeline_min_interval_s=1, webhook_secret=SECRET)
    with api_test_client(settings) as c:
        yield c


@pytest.mark.slow
def test_a_chain_runs_each_step_over_the_previous_steps_output(
        env: dict[str, str], pg_client: TestClient, tmp_path: Path) -> None:
    client = pg_client
    file_id = upload(client, chat_lines("a", 3), "inbox-a.jsonl")
    export = {"kind": "export", "request": {"prefix": "shorter-"}}
    with worker(env, tmp_path / "worker.log"), scheduler(env, tmp_path / "scheduler.log"):
        pipeline_id = _create(client, chain_spec("chained", 3, file_id, SECOND_BATCH, export))
        run = _wait_runs(client, pipeline_id, 1, timeout=180)[0]
        assert client.post(f"/v1/pipelines/{pipeline_id}/pause").status_code == 200
    assert run["status"] == "succeeded", run
    first, second, exported = run["steps"]
    assert [(s["lane"], s["step"], s["kind"], s["status"]) for s in run["steps"]] == [
        (0, 0, "batch", "succeeded"), (0, 1, "batch", "succeeded"), (0, 2, "export", "succeeded")]
    assert first["batch_id"] == run["jobs"][0]["batch_id"] and first["input_file_id"] == file_id
    assert first["counts"]["succeeded"] == 3 and second["counts"]["succeeded"] == 3
    assert run["counts"]["total"] == 6 and run["counts"]["succeeded"] == 6
    batch1 = client.get(f"/v1/batches/{first['batch_id']}").json()
    batch2 = client.get(f"/v1/batches/{second['batch_id']}").json()
    assert batch1["status"] == batch2["status"] == "completed"
    assert first["output_file_id"] == batch1["output_file_id"] and second["input_file_id"] == batch2["input_file_id"]
    assert batch2["metadata"] == {"step": "2"}
    # The second batch's input is exactly the first's output: one line per output line, its text last.
    out1 = {line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"]
            for line in _content(client, batch1["output_file_id"])}
    in2 = _content(client, batch2["input_file_id"])
    assert sorted(out1) == sorted(line["custom_id"] for line in in2) == ["a-0", "a-1", "a-2"]
    for line in in2:
        assert line["url"] == "/v1/chat/completions" and line["body"]["max_tokens"] == 6
        assert line["body"]["messages"] == [*SUMMARISE["messages"],
                                            {"role": "user", "content": out1[line["custom_id"]]}]
    # The export step saved the second batch's output as a file under its prefix.
    assert second["output_file_id"] == batch2["output_file_id"] == exported["input_file_id"]
    meta = client.get(f"/v1/files/{exported['output_file_id']}").json()
    assert meta["filename"].startswith("shorter-chained-") and meta["filename"].endswith(".jsonl")
    assert _content(client, exported["output_file_id"]) == _content(client, batch2["output_file_id"])


@pytest.mark.slow
def test_an_augmentation_then_an_export_saves_the_dataset_under_the_prefix(
        env: dict[str, str], pg_client: TestClient, tmp_path: Path) -> None:
    client = pg_client
    rows = "id,text,label\n" + "".join(
        f"u{i},{text},{label}\n" for i, (text, label) in enumerate([
            ("Where is my order? It was supposed to arrive yesterday.", "track_order"),
            ("My parcel has not shown up and the tracking page is empty.", "track_order"),
            ("I want to cancel my order as I placed it by mistake.", "cancel_order"),
            ("Please cancel the order I made this morning before it ships.", "cancel_order")]))
    file_id = upload(client, rows.encode(), "tickets-labelled-1.csv", purpose="user_data")
    augment = {"kind": "augmentation", "request": {
        "dataset": {"format": "csv", "text_field": "text", "label_field": "label", "id_field": "id"},
        "methods": [{"method": "eda", "k": 2, "alpha": 0.1}, {"method": "char_noise", "k": 1, "rate": 0.03}],
        "task": "text-classification"}}
    spec = {"name": "nightly-dataset", "schedule": {"every_seconds": 3},
            "input": {"source": "file", "file_id": file_id},
            "steps": [augment, {"kind": "export", "request": {"prefix": "augmented-"}}]}
    with worker(env, tmp_path / "worker.log"), scheduler(env, tmp_path / "scheduler.log"):
        pipeline_id = _create(client, spec)
        run = _wait_runs(client, pipeline_id, 1, timeout=300)[0]
        assert client.post(f"/v1/pipelines/{pipeline_id}/pause").status_code == 200
    assert run["status"] == "succeeded", run
    job_step, exported = run["steps"]
    assert (job_step["kind"], job_step["status"], exported["kind"], exported["status"]) == (
        "augmentation", "succeeded", "export", "succeeded")
    dataset = client.get(f"/v1/jobs/{job_step['job_id']}/dataset/jsonl/train.jsonl")
    assert dataset.status_code == 200, dataset.text
    meta = client.get(f"/v1/files/{exported['output_file_id']}").json()
    assert meta["purpose"] == "user_data" and meta["filename"].startswith("augmented-nightly-dataset-"), meta
    content = client.get(f"/v1/files/{exported['output_file_id']}/content")
    assert content.content == dataset.content and len(content.text.splitlines()) == exported["counts"]["total"]


@pytest.mark.slow
def test_a_failing_first_step_fails_the_run_and_never_starts_the_second(
        env: dict[str, str], pg_client: TestClient, tmp_path: Path) -> None:
    client = pg_client
    poison = b"".join(json.dumps({"custom_id": f"p-{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": MODEL, "max_tokens": 4,
                                           "messages": [{"role": "user", "content": f"POISON {i}"}]}}).encode()
                      + b"\n" for i in range(2))
    file_id = upload(client, poison, "inbox-poison.jsonl")
    with webhook_receiver() as receiver, worker(env, tmp_path / "worker.log"), \
            scheduler(env, tmp_path / "scheduler.log"):
        pipeline_id = _create(client, chain_spec("doomed-chain", 3, file_id, SECOND_BATCH,
                                                 webhook_url=receiver.url))
        run = _wait_runs(client, pipeline_id, 1, timeout=180)[0]
        assert client.post(f"/v1/pipelines/{pipeline_id}/pause").status_code == 200
        failed: list[dict[str, Any]] = []

        def arrived() -> bool:
            for headers, body in list(receiver.received):
                OpenAI(api_key="test").webhooks.verify_signature(body, headers, secret=SECRET)
                payload = json.loads(body)
                if payload["type"] == "pipeline.run.failed" and payload["data"]["id"] == run["id"]:
                    failed.append(payload["data"])
            return bool(failed)

        wait_for(arrived, 60, "the run's failure webhook")
    assert run["status"] == "failed" and run["error"].startswith("steps[0]: job "), run
    [only] = run["steps"]
    assert (only["step"], only["kind"], only["status"]) == (0, "batch", "failed")
    assert only["counts"]["failed"] == 2 and only["counts"]["succeeded"] == 0
    assert failed[0]["status"] == "failed" and failed[0]["error"] == run["error"]
    assert [(s["step"], s["status"]) for s in failed[0]["steps"]] == [(0, "failed")]
    # Step 2 never started: one batch and one step per run that started (a later slot may have fired too).
    started = [r for r in client.get(f"/v1/pipelines/{pipeline_id}/runs").json()["data"] if r["jobs"]]
    assert all(len(r["steps"]) == 1 and r["steps"][0]["step"] == 0 for r in started), started
    assert count_rows(env["FACTORY_DATABASE_URL"], Batch) == len(started)
    assert count_rows(env["FACTORY_DATABASE_URL"], PipelineRunStep) == len(started)


@pytest.mark.slow
def test_a_step_that_cannot_be_created_fails_the_run_naming_it_and_leaves_nothing(
        env: dict[str, str], pg_client: TestClient, tmp_path: Path) -> None:
    client = pg_client
    # Line "x" asks two choices: chained, they become "x#0" and "x#1", and "x#0" is also the next line's
    # id, so the second batch's input repeats a custom_id and that batch would be refused.
    lines = [{"custom_id": "x", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": MODEL, "max_tokens": 4, "n": 2, "messages": [{"role": "user", "content": "hi"}]}},
             {"custom_id": "x#0", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "yo"}]}}]
    file_id = upload(client, b"".join(json.dumps(line).encode() + b"\n" for line in lines), "inbox-x.jsonl")
    with worker(env, tmp_path / "worker.log"), scheduler(env, tmp_path / "scheduler.log"):
        pipeline_id = _create(client, chain_spec("unchainable", 3, file_id, SECOND_BATCH))
        run = _wait_runs(client, pipeline_id, 1, timeout=180)[0]
        assert client.post(f"/v1/pipelines/{pipeline_id}/pause").status_code == 200
    assert run["status"] == "failed", run
    assert run["error"].startswith("steps[1].input: the input file has 1 invalid line(s)"), run
    [only] = run["steps"]
    assert (only["step"], only["status"], only["counts"]["succeeded"]) == (0, "succeeded", 3)
    started = [r for r in client.get(f"/v1/pipelines/{pipeline_id}/runs").json()["data"] if r["jobs"]]
    assert count_rows(env["FACTORY_DATABASE_URL"], Batch) == len(started)  # no second batch, ever
    assert count_rows(env["FACTORY_DATABASE_URL"], PipelineRunStep) == len(started)


# --- save-time checks, through the API on SQLite and PostgreSQL ----------------------
@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                    pipeline_min_interval_s=1)


BATCH = {"kind": "batch", "request": {"endpoint": "/v1/chat/completions"}}


@pytest.mark.parametrize(("case", "steps", "field"), [
    ("a campaign cannot take a batch's output",
     [BATCH, {"kind": "campaign", "request": {"name": "x"}}], "steps[1].kind"),
    ("nothing follows an export",
     [BATCH, {"kind": "export", "request": {"prefix": "out-"}}, SECOND_BATCH], "steps[2].kind"),
    ("an export cannot be first", [{"kind": "export", "request": {"prefix": "out-"}}], "steps[0].kind"),
    ("the first step takes no body", [{**BATCH, "body": SUMMARISE}], "steps[0].body"),
    ("the first step is checked as a direct submission",
     [{"kind": "batch", "request": {"endpoint": "/v1/embeddings"}}, SECOND_BATCH], "steps[0].request.endpoint"),
    ("a chained batch needs a body", [BATCH, {**SECOND_BATCH, "body": None}], "steps[1].body"),
    ("a chained batch runs chat lines",
     [BATCH, {**SECOND_BATCH, "request": {"endpoint": "/v1/personalize"}}], "steps[1].request.endpoint"),
    ("a chained batch's request as a direct submission",
     [BATCH, {**SECOND_BATCH, "request": {"endpoint": "/v1/chat/completions", "colour": CANARY}}],
     "steps[1].request.colour"),
    ("a chained batch's webhook as a direct submission's",
     [BATCH, {**SECOND_BATCH, "request": {"endpoint": "/v1/chat/completions", "webhook_url": "https://x.test/h"}}],
     "steps[1].request.webhook_url"),
    ("a chained batch's body as a batch line",
     [BATCH, {**SECOND_BATCH, "body": {**SUMMARISE, "temperature": 9}}], "steps[1].body.temperature"),
    ("a chained batch's model", [BATCH, {**SECOND_BATCH, "body": {**SUMMARISE, "model": CANARY}}],
     "steps[1].body.model"),
    ("an export prefix is a file name prefix", [BATCH, {"kind": "export", "request": {"prefix": "../" + CANARY}}],
     "steps[1].request.prefix"),
    ("too many steps", [BATCH, *[SECOND_BATCH] * 5], "steps"),
])
def test_a_bad_chain_is_refused_at_save_time_naming_the_step(
        client: TestClient, settings: Settings, case: str, steps: list[dict[str, Any]], field: str) -> None:
    file_id = upload(client, chat_lines("a"), "inbox-a.jsonl")
    steps = [{k: v for k, v in s.items() if v is not None} for s in steps]
    r = client.post("/v1/pipelines", json=chain_spec("chain", 60, file_id, *steps[1:]) | {"steps": steps})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field, r.json()
    assert CANARY not in r.text
    assert count_rows(settings.database_url, Pipeline) == 0
    assert count_rows(settings.database_url, Job) == 0 and count_rows(settings.database_url, Batch) == 0


def test_job_and_one_step_are_the_same_pipeline_and_a_chain_is_shown(client: TestClient, settings: Settings) -> None:
    file_id = upload(client, chat_lines("a"), "inbox-a.jsonl")
    one = {"name": "inbox", "schedule": {"every_seconds": 60}, "input": {"source": "file", "file_id": file_id},
           "job": BATCH}
    created = client.post("/v1/pipelines", json=one)
    assert created.status_code == 201 and created.json()["steps"] == [BATCH], created.text
    same = client.post("/v1/pipelines", json={**{k: v for k, v in one.items() if k != "job"}, "steps": [BATCH]})
    assert same.status_code == 200 and same.json()["applied"] == "unchanged", same.text
    both = client.post("/v1/pipelines", json={**one, "steps": [BATCH]})
    assert both.status_code == 422, both.text
    chained = client.post("/v1/pipelines", json=chain_spec("inbox", 60, file_id, SECOND_BATCH))
    assert chained.status_code == 200 and chained.json()["applied"] == "updated", chained.text
    assert chained.json()["steps"] == [BATCH, SECOND_BATCH] and chained.json()["job"] == BATCH
    back = client.patch(f"/v1/pipelines/{created.json()['id']}", json={"job": BATCH})
    assert back.status_code == 200 and back.json()["steps"] == [BATCH], back.text
