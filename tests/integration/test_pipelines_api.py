"""Pipelines through the API, on SQLite and PostgreSQL with a real Redis, and the scheduler's tick run in
this process (the scheduler and worker processes are in tests/integration/test_pipeline_scheduler.py).

Save-time checks: every bad spec is a 4xx naming the field, and nothing is written.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update
from sqlalchemy.orm import ORMExecuteState

from factory.client import load_campaign_file
from factory.config import Settings
from factory.db.base import utcnow
from factory.db.models import Batch, Job, Pipeline, PipelineRun
from factory.db.session import get_sessionmaker
from factory.pipelines import firing, service
from factory.pipelines.cli import load_specs
from factory.pipelines.repository import PipelineRepository
from factory.pipelines.tick import run_tick
from factory.storage import open_store
from tests.pipeline_data import batch_pipeline, chat_lines, upload
from tests.rows import count_rows

CANARY = "CANARY-51f0-NOT-ECHOED"
UNKNOWN_FILE = "file_000000000000000000000000000000"


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                    chunk_size=2, pipeline_min_interval_s=1)


def _due_now(settings: Settings, pipeline_id: str) -> None:
    """Move the pipeline's next slot to a second ago (as if its time had come)."""
    with get_sessionmaker(settings.database_url)() as s:
        s.execute(update(Pipeline).where(Pipeline.id == pipeline_id)
                  .values(next_fire_at=utcnow() - timedelta(seconds=1)))
        s.commit()


def _runs(client: TestClient, pipeline_id: str) -> list[dict[str, object]]:
    r = client.get(f"/v1/pipelines/{pipeline_id}/runs")
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def test_apply_is_idempotent_by_name(client: TestClient, settings: Settings) -> None:
    upload(client, chat_lines("a"), "inbox-a.jsonl")
    spec = batch_pipeline("hourly-inbox", prefix="inbox-")
    r = client.post("/v1/pipelines", json=spec)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["applied"] == "created" and created["enabled"] is True and created["cursor"] is None
    assert len(created["next_fire_times"]) == 3 and created["next_fire_times"][0] == created["next_fire_at"]
    again = client.post("/v1/pipelines", json=spec)
    assert again.status_code == 200 and again.json()["applied"] == "unchanged"
    assert again.json()["next_fire_at"] == created["next_fire_at"]
    changed = client.post("/v1/pipelines", json={**spec, "concurrency": "queue"})
    assert changed.status_code == 200 and changed.json()["applied"] == "updated"
    assert changed.json()["id"] == created["id"] and changed.json()["concurrency"] == "queue"
    assert [p["name"] for p in client.get("/v1/pipelines").json()["data"]] == ["hourly-inbox"]
    assert count_rows(settings.database_url, Pipeline) == 1


def test_cron_schedules_in_their_time_zone(client: TestClient) -> None:
    upload(client, chat_lines("a"), "inbox-a.jsonl")
    r = client.post("/v1/pipelines", json={**batch_pipeline("weekly", prefix="inbox-"),
                                           "schedule": {"cron": "0 6 * * MON", "timezone": "Europe/Berlin"}})
    assert r.status_code == 201, r.text
    times = r.json()["next_fire_times"]
    assert len(times) == 3
    # 06:00 in Berlin is 04:00 or 05:00 UTC (summer or winter time), a week apart.
    assert all(t.endswith(("T04:00:00Z", "T05:00:00Z")) for t in times), times


@pytest.mark.parametrize(("case", "change", "status", "field"), [
    ("invalid cron", {"schedule": {"cron": "61 * * * *"}}, 422, "schedule.cron"),
    ("six-field cron", {"schedule": {"cron": "* * * * * *"}}, 422, "schedule.cron"),
    ("unknown time zone", {"schedule": {"cron": "0 6 * * MON", "timezone": "Mars/Olympus"}}, 422,
     "schedule.timezone"),
    ("path as time zone", {"schedule": {"cron": "0 6 * * MON", "timezone": "../../etc/passwd"}}, 422,
     "schedule.timezone"),
    ("interval too short", {"schedule": {"every_seconds": 0}}, 422, "schedule.every_seconds"),
    ("cron and interval", {"schedule": {"cron": "0 6 * * *", "every_seconds": 60}}, 422, "schedule"),
    ("bad endpoint", {"job": {"kind": "batch", "request": {"endpoint": "/v1/embeddings"}}}, 422,
     "job.request.endpoint"),
    ("unknown request field", {"job": {"kind": "batch", "request": {"endpoint": "/v1/chat/completions",
                                                                    "colour": CANARY}}}, 422, "job.request.colour"),
    ("input set twice", {"job": {"kind": "batch", "request": {"endpoint": "/v1/chat/completions",
                                                              "input_file_id": UNKNOWN_FILE}}}, 422,
     "job.request.input_file_id"),
    ("unknown kind", {"job": {"kind": "verify", "request": {}}}, 422, "job.kind"),
    ("missing file", {"input": {"source": "file", "file_id": UNKNOWN_FILE}}, 404, "input.file_id"),
    ("prefix matches nothing", {"input": {"source": "newest", "prefix": "nothing-here-"}}, 404, "input.prefix"),
    ("prefix of another purpose", {"input": {"source": "newest", "prefix": "audience"}}, 404, "input.prefix"),
    ("no input", {"input": None}, 422, "input"),
    ("webhook without a secret", {"webhook_url": "https://example.com/hook"}, 422, "webhook_url"),
    ("bad name", {"name": "Weekly Newsletter!"}, 422, "name"),
])
def test_bad_specs_are_refused_at_save_time(client: TestClient, settings: Settings, case: str,
                                            change: dict[str, object], status: int, field: str) -> None:
    upload(client, chat_lines("a"), "inbox-a.jsonl")
    upload(client, b"id,name\n1,Ana\n", "audience.csv", purpose="user_data")
    r = client.post("/v1/pipelines", json={**batch_pipeline("inbox", prefix="inbox-"), **change})
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field, r.json()
    assert CANARY not in r.text
    assert count_rows(settings.database_url, Pipeline) == 0
    assert count_rows(settings.database_url, Job) == 0 and count_rows(settings.database_url, Batch) == 0


def test_a_batch_file_with_a_bad_line_is_refused_at_save_time(client: TestClient, settings: Settings) -> None:
    bad = upload(client, chat_lines("a") + b'{"custom_id": "x", "method": "GET", "url": "/v1/chat/completions"}\n',
                 "inbox-bad.jsonl")
    r = client.post("/v1/pipelines", json=batch_pipeline("inbox", file_id=bad))
    assert r.status_code == 422 and r.json()["error"]["field"] == "input.file_id", r.text
    assert "line 3" in r.json()["error"]["message"]
    assert count_rows(settings.database_url, Job) == 0 and count_rows(settings.database_url, Batch) == 0


def test_a_campaign_spec_is_checked_as_a_direct_submission_would_be(client: TestClient, settings: Settings) -> None:
    audience = upload(client, b"id,first_name\n1,Ana\n", "audience-week1.csv", purpose="user_data")
    spec = {"name": "weekly-newsletter", "schedule": {"cron": "0 6 * * MON", "timezone": "Europe/Berlin"},
            "input": {"source": "newest", "prefix": "audience-"},
            "job": {"kind": "campaign", "request": {
                "name": "weekly", "brand": "acme", "audience": {"format": "csv", "key_column": "id"},
                "messages": [{"channel": "email", "template": "weekly-email"}]}}}
    r = client.post("/v1/pipelines", json=spec)  # no such brand yet: the campaign's own 422
    assert r.status_code == 422 and r.json()["error"]["field"] == "job.request.brand", r.text
    assert count_rows(settings.database_url, Pipeline) == 0 and count_rows(settings.database_url, Job) == 0
    assert audience.startswith("file_")


def test_run_now_writes_the_run_with_its_batch_and_follows_the_concurrency_policy(
        client: TestClient, settings: Settings) -> None:
    file_id = upload(client, chat_lines("a"), "inbox-a.jsonl")
    pipeline = client.post("/v1/pipelines", json=batch_pipeline("fixed", file_id=file_id)).json()
    r = client.post(f"/v1/pipelines/{pipeline['id']}/run")
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["trigger"] == "manual" and run["status"] == "queued" and len(run["jobs"]) == 1
    assert run["jobs"][0]["file_id"] == file_id and run["jobs"][0]["batch_id"].startswith("batch_")
    assert run["counts"]["total"] == 2
    second = client.post(f"/v1/pipelines/{pipeline['id']}/run").json()  # concurrency "skip"
    assert second["status"] == "skipped" and second["jobs"] == []
    assert run["id"] in second["error"]
    assert [x["id"] for x in _runs(client, pipeline["id"])] == [second["id"], run["id"]]
    assert count_rows(settings.database_url, Batch) == 1


def test_the_tick_fires_a_due_slot_once_and_moves_on(client: TestClient, settings: Settings) -> None:
    upload(client, chat_lines("a"), "inbox-a.jsonl")
    pipeline = client.post("/v1/pipelines", json=batch_pipeline("inbox", 60, prefix="inbox-",
                                                                source="newest")).json()
    assert run_tick(settings).fired == []  # not due yet
    _due_now(settings, pipeline["id"])
    report = run_tick(settings)
    assert len(report.fired) == 1 and report.errors == 0
    assert run_tick(settings).fired == []  # the same slot again: nothing
    runs = _runs(client, pipeline["id"])
    assert len(runs) == 1 and runs[0]["trigger"] == "schedule" and runs[0]["status"] == "queued"
    after = client.get(f"/v1/pipelines/{pipeline['id']}").json()
    assert after["next_fire_at"] > runs[0]["slot_at"]


def test_two_firings_of_one_slot_write_one_run(client: TestClient, settings: Settings) -> None:
    """Two schedulers that read the same state: the compare-and-set lets one of them write."""
    upload(client, chat_lines("a"), "inbox-a.jsonl")
    pipeline_id = client.post("/v1/pipelines", json=batch_pipeline("inbox", 60, prefix="inbox-",
                                                                   source="newest")).json()["id"]
    _due_now(settings, pipeline_id)
    store, now, maker = open_store(settings), utcnow(), get_sessionmaker(settings.database_url)
    with maker() as first, maker() as second:
        a = PipelineRepository(first).get_by_id(pipeline_id)
        b = PipelineRepository(second).get_by_id(pipeline_id)
        assert a is not None and b is not None
        slot_a, slot_b = firing.due(a, now, None), firing.due(b, now, None)
        assert slot_a is not None and slot_a == slot_b
        firing.fire(first, settings, store, a, slot_a)
        first.commit()
        with pytest.raises(firing.AlreadyFired):
            firing.fire(second, settings, store, b, slot_b)
        second.rollback()
    with maker() as s:
        assert len(s.scalars(select(PipelineRun)).all()) == 1 and len(s.scalars(select(Batch)).all()) == 1


def test_new_since_last_run_takes_each_file_once(client: TestClient, settings: Settings) -> None:
    first = [upload(client, chat_lines(f"f{i}"), f"inbox-{i}.jsonl") for i in range(2)]
    upload(client, chat_lines("other"), "elsewhere.jsonl")
    pipeline_id = client.post("/v1/pipelines", json=batch_pipeline("inbox", prefix="inbox-")).json()["id"]
    run = client.post(f"/v1/pipelines/{pipeline_id}/run").json()
    assert [j["file_id"] for j in run["jobs"]] == first
    with get_sessionmaker(settings.database_url)() as s:  # let the first run end, so the next may start
        s.execute(update(Job).values(status="succeeded", finished_at=utcnow()))
        s.commit()
    empty = client.post(f"/v1/pipelines/{pipeline_id}/run").json()
    assert empty["status"] == "skipped" and empty["error"] == "no new input file since the last run"
    later = upload(client, chat_lines("f2"), "inbox-2.jsonl")
    run = client.post(f"/v1/pipelines/{pipeline_id}/run").json()
    assert [j["file_id"] for j in run["jobs"]] == [later]
    assert client.get(f"/v1/pipelines/{pipeline_id}").json()["cursor"]["file_id"] == later


def test_pause_resume_patch_delete(client: TestClient, settings: Settings) -> None:
    upload(client, chat_lines("a"), "inbox-a.jsonl")
    pipeline_id = client.post("/v1/pipelines", json=batch_pipeline("inbox", prefix="inbox-")).json()["id"]
    paused = client.post(f"/v1/pipelines/{pipeline_id}/pause").json()
    assert paused["enabled"] is False and paused["next_fire_at"] is None and paused["next_fire_times"] == []
    _due_now(settings, pipeline_id)  # even with a slot in the past, a paused pipeline does not fire
    assert run_tick(settings).fired == []
    resumed = client.post(f"/v1/pipelines/{pipeline_id}/resume").json()
    assert resumed["enabled"] is True and resumed["next_fire_at"] is not None
    r = client.patch(f"/v1/pipelines/{pipeline_id}", json={"schedule": {"cron": "*/5 * * * *"}})
    assert r.status_code == 200 and r.json()["schedule"] == {"cron": "*/5 * * * *", "timezone": "UTC"}
    r = client.patch(f"/v1/pipelines/{pipeline_id}", json={"schedule": {"cron": "nope"}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "schedule.cron"
    assert client.get(f"/v1/pipelines/{pipeline_id}").json()["schedule"]["cron"] == "*/5 * * * *"
    assert client.delete(f"/v1/pipelines/{pipeline_id}").status_code == 204
    assert client.get(f"/v1/pipelines/{pipeline_id}").status_code == 404
    assert count_rows(settings.database_url, Pipeline) == 0


def test_pause_and_resume_ride_over_a_firing_between_their_read_and_write(client: TestClient,
                                                                          settings: Settings) -> None:
    """A scheduler firing bumps the revision after the pause read the pipeline: the pause still lands."""
    upload(client, chat_lines("a"), "inbox-a.jsonl")
    pipeline_id = client.post("/v1/pipelines", json=batch_pipeline("inbox", prefix="inbox-")).json()["id"]
    maker = get_sessionmaker(settings.database_url)
    bumps = 0

    def fire_first(state: ORMExecuteState) -> None:
        nonlocal bumps
        if state.is_update and bumps == 0:
            bumps += 1
            with maker() as other:
                other.execute(update(Pipeline).where(Pipeline.id == pipeline_id)
                              .values(revision=Pipeline.revision + 1))
                other.commit()

    for enabled in (False, True):
        bumps = 0
        with maker() as s:
            event.listen(s, "do_orm_execute", fire_first)
            tenant = PipelineRepository(s).get_by_id(pipeline_id)
            assert tenant is not None
            pipeline = service.set_enabled(s, settings, tenant.tenant_id, pipeline_id, enabled)
            s.commit()
            assert pipeline.enabled is enabled and bumps == 1
    described = client.get(f"/v1/pipelines/{pipeline_id}").json()
    assert described["enabled"] is True and described["next_fire_at"] is not None


def test_another_tenant_sees_nothing(client: TestClient, settings: Settings) -> None:
    upload(client, chat_lines("a"), "inbox-a.jsonl")
    pipeline_id = client.post("/v1/pipelines", json=batch_pipeline("inbox", prefix="inbox-")).json()["id"]
    from tests.keys import api_test_client

    with api_test_client(settings, tenant="globex") as other:
        assert other.get("/v1/pipelines").json()["data"] == []
        for method, path in (("GET", ""), ("GET", "/runs"), ("POST", "/run"), ("POST", "/pause"),
                             ("DELETE", "")):
            r = other.request(method, f"/v1/pipelines/{pipeline_id}{path}")
            assert r.status_code == 404, (method, path, r.text)
        # The prefix looks at this tenant's files only.
        r = other.post("/v1/pipelines", json=batch_pipeline("inbox", prefix="inbox-"))
        assert r.status_code == 404 and r.json()["error"]["field"] == "input.prefix"


def test_the_readme_weekly_newsletter_applies_and_runs(client: TestClient, settings: Settings) -> None:
    """README, "Scheduled pipelines": the example brand and templates, marketing's audience upload, the
    example pipeline file applied (twice: the second changes nothing), then run now."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    campaign = load_campaign_file(examples / "campaign" / "campaign-segments.json")
    assert campaign.brand is not None
    brand = dict(campaign.brand)
    assert client.put(f"/v1/brands/{brand.pop('name')}", json=brand).status_code in (200, 201)
    for template in campaign.templates:
        body = dict(template)
        assert client.put(f"/v1/templates/{body.pop('name')}", json=body).status_code in (200, 201)
    audience = upload(client, (examples / "campaign" / "audience-240.csv").read_bytes(), "audience-240.csv",
                      purpose="user_data")
    [spec] = load_specs(examples / "pipelines" / "weekly-newsletter.yaml")
    r = client.post("/v1/pipelines", json=spec)
    assert r.status_code == 201, r.text
    assert client.post("/v1/pipelines", json=spec).json()["applied"] == "unchanged"
    run = client.post(f"/v1/pipelines/{r.json()['id']}/run").json()
    assert run["status"] == "queued" and run["jobs"][0]["file_id"] == audience
    campaign_out = client.get(f"/v1/campaigns/{run['jobs'][0]['job_id']}").json()
    assert campaign_out["name"] == "weekly-newsletter" and campaign_out["recipients"] == 240
    assert run["counts"]["total"] == campaign_out["counts"]["total"] > 0
