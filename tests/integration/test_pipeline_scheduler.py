"""Pipelines with a real scheduler process (``factory scheduler``: Celery beat + redbeat's Redis lock), a
real worker (fake generator) and real Redis and PostgreSQL. The API runs in this process.

Deadlines are generous (a loaded 2-core machine): every wait polls for its condition.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from sqlalchemy import select

from factory.config import Settings
from factory.db.models import PipelineRun
from factory.db.session import get_sessionmaker
from tests.keys import api_test_client
from tests.pipeline_data import batch_pipeline, chat_lines, upload
from tests.processes import factory_env, scheduler, worker
from tests.services import wait_for
from tests.webhook_receiver import webhook_receiver

pytestmark = pytest.mark.slow
TICK_S, OUTAGE_S = "0.5", "4"
SECRET = "whsec_" + base64.b64encode(b"pipeline-webhook-secret-0123456").decode()


@pytest.fixture
def env(pg_db: str, broker_url: str, tmp_path: Path) -> dict[str, str]:
    return factory_env(FACTORY_DATABASE_URL=pg_db, FACTORY_BROKER_URL=broker_url,
                       FACTORY_STORAGE_URL=f"file://{tmp_path}/objects", FACTORY_GENERATOR="fake",
                       FACTORY_PIPELINE_TICK_S=TICK_S, FACTORY_SCHEDULER_OUTAGE_S=OUTAGE_S,
                       FACTORY_SCHEDULER_LOCK_TIMEOUT_S="5", FACTORY_PIPELINE_MIN_INTERVAL_S="1",
                       FACTORY_WEBHOOK_SECRET=SECRET, FACTORY_WEBHOOK_ALLOW_PRIVATE="true")


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[TestClient]:
    settings = Settings(database_url=env["FACTORY_DATABASE_URL"], broker_url=env["FACTORY_BROKER_URL"],
                        storage_url=env["FACTORY_STORAGE_URL"], pipeline_min_interval_s=1, webhook_secret=SECRET)
    with api_test_client(settings) as c:
        yield c


def _runs(client: TestClient, pipeline_id: str) -> list[dict[str, Any]]:
    """Oldest slot first."""
    return list(reversed(client.get(f"/v1/pipelines/{pipeline_id}/runs", params={"limit": 100}).json()["data"]))


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _wait_runs(client: TestClient, pipeline_id: str, n: int, timeout: float = 120,
               status: tuple[str, ...] = ("succeeded", "skipped", "failed", "cancelled")) -> list[dict[str, Any]]:
    """At least ``n`` runs, every one ended (or in ``status``)."""
    found: list[dict[str, Any]] = []

    def enough() -> bool:
        found[:] = _runs(client, pipeline_id)
        return len(found) >= n and all(r["status"] in status for r in found)

    wait_for(enough, timeout, f"{n} runs of {pipeline_id}")
    return found


def _create(client: TestClient, spec: dict[str, Any]) -> str:
    r = client.post("/v1/pipelines", json=spec)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_an_every_few_seconds_pipeline_fires_each_slot_on_time_and_its_runs_follow_their_jobs(
        env: dict[str, str], client: TestClient, tmp_path: Path) -> None:
    file_id = upload(client, chat_lines("a", 3), "inbox-a.jsonl")
    with worker(env, tmp_path / "worker.log"), scheduler(env, tmp_path / "scheduler.log"):
        pipeline_id = _create(client, batch_pipeline("every-3s", 3, file_id=file_id))
        runs = _wait_runs(client, pipeline_id, 3)
    runs = [r for r in runs if r["missed"] == 0][:3] if len(runs) > 3 else runs
    slots = [_when(r["slot_at"]) for r in runs]
    assert all(r["trigger"] == "schedule" and r["status"] == "succeeded" for r in runs), runs
    assert all(r["counts"] == {"total": 3, "pending": 0, "succeeded": 3, "failed": 0, "cancelled": 0}
               for r in runs), runs
    assert all((b - a) % timedelta(seconds=3) == timedelta(0) for a, b in itertools.pairwise(slots)), slots
    assert len({r["jobs"][0]["batch_id"] for r in runs}) == len(runs)
    for r in runs:  # on time: fired within a few ticks of its slot, ended after it started
        assert timedelta(0) <= _when(r["fired_at"]) - _when(r["slot_at"]) < timedelta(seconds=10), r
        assert _when(r["fired_at"]) <= _when(r["started_at"]) <= _when(r["finished_at"]), r
        batch = client.get(f"/v1/batches/{r['jobs'][0]['batch_id']}").json()
        assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 3


def test_two_schedulers_fire_each_slot_once_and_the_standby_takes_over(
        env: dict[str, str], client: TestClient, tmp_path: Path) -> None:
    file_id = upload(client, chat_lines("a"), "inbox-a.jsonl")
    with worker(env, tmp_path / "worker.log"), scheduler(env, tmp_path / "one.log") as one, \
            scheduler(env, tmp_path / "two.log", wait=False) as two:
        pipeline_id = _create(client, batch_pipeline("every-2s", 2, file_id=file_id))
        _wait_runs(client, pipeline_id, 3)
        assert one.holds_lock() and not two.holds_lock()  # the second waits on redbeat's lock
        one.stop()
        two.wait_lock(60)
        before = len(_runs(client, pipeline_id))
        runs = _wait_runs(client, pipeline_id, before + 3)
    slots = [r["slot_at"] for r in runs]
    assert len(slots) == len(set(slots)), slots  # never two runs for one slot
    batches = [j["batch_id"] for r in runs for j in r["jobs"]]
    assert len(batches) == len(set(batches)) == sum(r["status"] != "skipped" for r in runs)
    # Every slot from the first to the last is accounted for: fired, or folded into the next firing.
    span = (_when(slots[-1]) - _when(slots[0])) // timedelta(seconds=2) + 1
    assert len(runs) + sum(r["missed"] for r in runs) == span, runs


def test_a_paused_pipeline_does_not_fire(env: dict[str, str], client: TestClient, tmp_path: Path) -> None:
    file_id = upload(client, chat_lines("a"), "inbox-a.jsonl")
    with worker(env, tmp_path / "worker.log"), scheduler(env, tmp_path / "scheduler.log"):
        paused = _create(client, batch_pipeline("paused", 1, file_id=file_id, enabled=False))
        later = _create(client, batch_pipeline("paused-later", 1, file_id=file_id, concurrency="queue"))
        control = _create(client, batch_pipeline("control", 1, file_id=file_id))
        _wait_runs(client, later, 1)
        assert client.post(f"/v1/pipelines/{later}/pause").json()["enabled"] is False
        at_pause = len(_runs(client, later))
        _wait_runs(client, control, len(_runs(client, control)) + 4)  # the scheduler went on ticking
    assert _runs(client, paused) == []
    after = _runs(client, later)
    assert len(after) <= at_pause + 1  # at most the firing that was under way when it was paused
    assert all(_when(r["fired_at"]) <= _when(client.get(f"/v1/pipelines/{later}").json()["updated_at"])
               + timedelta(seconds=2) for r in after)


def test_catch_up_after_the_scheduler_was_down_for_three_slots(
        env: dict[str, str], client: TestClient, tmp_path: Path) -> None:
    file_id = upload(client, chat_lines("a"), "inbox-a.jsonl")
    with worker(env, tmp_path / "worker.log"):
        with scheduler(env, tmp_path / "before.log"):
            once = _create(client, batch_pipeline("run-once", 3, file_id=file_id, catch_up="run_once"))
            skip = _create(client, batch_pipeline("skip", 3, file_id=file_id, catch_up="skip"))
            _wait_runs(client, once, 1)
            _wait_runs(client, skip, 1)
        stopped = time.time()
        due = {p: _when(client.get(f"/v1/pipelines/{p}").json()["next_fire_at"]) for p in (once, skip)}
        # Down until three slots of each have come due (and longer than the outage threshold).
        wait_for(lambda: all(datetime.now(due[p].tzinfo) > due[p] + timedelta(seconds=7) for p in due)
                 and time.time() - stopped > float(OUTAGE_S) + 1, 60, "three missed slots")
        before = {p: len(_runs(client, p)) for p in due}
        with scheduler(env, tmp_path / "after.log"):
            restarted = datetime.now(due[once].tzinfo)
            caught = _wait_runs(client, once, before[once] + 2)
            skipped = _wait_runs(client, skip, before[skip] + 2)
    first = caught[before[once]]
    assert first["trigger"] == "catch_up" and first["status"] == "succeeded" and len(first["jobs"]) == 1, first
    assert first["missed"] >= 2 and _when(first["slot_at"]) >= due[once] + timedelta(seconds=6)
    assert _when(first["slot_at"]) < restarted  # one run stands for the missed slots
    assert caught[before[once] + 1]["trigger"] == "schedule"
    assert _when(caught[before[once] + 1]["slot_at"]) > _when(first["slot_at"])
    gone = skipped[before[skip]]
    assert gone["trigger"] == "catch_up" and gone["status"] == "skipped" and gone["jobs"] == [], gone
    assert gone["missed"] >= 2 and "no scheduler ran" in gone["error"]
    nxt = skipped[before[skip] + 1]
    assert nxt["trigger"] == "schedule" and nxt["status"] == "succeeded" and _when(nxt["slot_at"]) > restarted


def test_new_since_last_run_takes_each_dropped_file_exactly_once(
        env: dict[str, str], client: TestClient, tmp_path: Path) -> None:
    upload(client, chat_lines("seed"), "inbox-000.jsonl")  # the prefix must exist when the pipeline is saved
    dropped: list[str] = []
    stop = threading.Event()
    with worker(env, tmp_path / "worker.log"), scheduler(env, tmp_path / "scheduler.log"):
        pipeline_id = _create(client, batch_pipeline("inbox", 1, prefix="inbox-", concurrency="queue"))
        upload(client, chat_lines("noise"), "elsewhere.jsonl")

        def run_now() -> None:  # "run now" racing the schedule the whole time
            while not stop.is_set():
                assert client.post(f"/v1/pipelines/{pipeline_id}/run").status_code in (202, 409)
                time.sleep(0.3)

        racer = threading.Thread(target=run_now)
        racer.start()
        try:
            for i in range(1, 7):
                dropped.append(upload(client, chat_lines(f"f{i}"), f"inbox-{i:03d}.jsonl"))
                if i % 2:
                    time.sleep(1.5)  # some alone, some two at once

            def all_taken() -> bool:
                runs = _runs(client, pipeline_id)
                return (client.get(f"/v1/pipelines/{pipeline_id}").json()["cursor"]["file_id"] == dropped[-1]
                        and all(r["status"] in ("succeeded", "skipped") for r in runs))

            wait_for(all_taken, 120, "every dropped file to be taken")
        finally:
            stop.set()
            racer.join()
    runs = _runs(client, pipeline_id)
    taken = [j["file_id"] for r in runs for j in r["jobs"]]
    assert len(taken) == len(set(taken)), taken  # no file twice
    assert set(taken) - set(dropped) == {taken[0]} and set(dropped) <= set(taken)  # plus the seed file, once
    assert all(r["status"] == "succeeded" for r in runs if r["jobs"])


def test_a_signed_webhook_on_run_success_and_failure_with_retries(
        env: dict[str, str], client: TestClient, tmp_path: Path) -> None:
    good_file = upload(client, chat_lines("a"), "inbox-a.jsonl")
    doomed_file = upload(client, chat_lines("b"), "inbox-b.jsonl")
    events: dict[str, dict[str, dict[str, Any]]] = {}  # type -> event id -> event (a retry repeats one)

    def recorded() -> list[PipelineRun]:
        with get_sessionmaker(env["FACTORY_DATABASE_URL"])() as s:
            return list(s.scalars(select(PipelineRun).where(PipelineRun.webhook_attempts > 0)))

    with webhook_receiver([500, 200]) as receiver, worker(env, tmp_path / "worker.log"), \
            scheduler(env, tmp_path / "scheduler.log"):
        good = _create(client, batch_pipeline("good", 3600, file_id=good_file, webhook_url=receiver.url))
        doomed = _create(client, batch_pipeline("doomed", 1, file_id=doomed_file, webhook_url=receiver.url))
        assert client.delete(f"/v1/files/{doomed_file}").status_code == 200  # its runs will fail to start
        run = client.post(f"/v1/pipelines/{good}/run").json()

        def both_arrived() -> bool:
            events.clear()
            for headers, body in list(receiver.received):
                OpenAI(api_key="test").webhooks.verify_signature(body, headers, secret=SECRET)
                payload = json.loads(body)
                events.setdefault(payload["type"], {})[payload["id"]] = payload
            return "pipeline.run.succeeded" in events and "pipeline.run.failed" in events

        wait_for(both_arrived, 90, "a success and a failure event")
        client.post(f"/v1/pipelines/{doomed}/pause")
        # The first delivery was answered 500 and retried once; every other one went through at once. The
        # receiver keeps the 500'd request too, so both may have "arrived" before that retry: wait for every
        # outcome while the worker still runs (recorded just after the receiver answered: poll for it).
        wait_for(lambda: all(r.webhook_delivered_at is not None for r in recorded()), 60, "the outcomes recorded")
    [ok] = [e for e in events["pipeline.run.succeeded"].values() if e["data"]["id"] == run["id"]]
    assert ok["data"]["pipeline"] == "good" and ok["data"]["status"] == "succeeded"
    assert ok["data"]["counts"]["succeeded"] == 2 and ok["data"]["jobs"][0]["file_id"] == good_file
    failed = next(iter(events["pipeline.run.failed"].values()))["data"]
    assert failed["pipeline"] == "doomed" and failed["jobs"] == [] and failed["error"].startswith("input.file_id")
    attempts = sorted(r.webhook_attempts for r in recorded())
    assert attempts.count(2) == 1 and set(attempts) == {1, 2}, attempts
    assert all(r.webhook_last_error is None for r in recorded())
