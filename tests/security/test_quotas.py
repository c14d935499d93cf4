"""Quotas and rate limits per tenant and per API key, on SQLite and PostgreSQL with a real Redis.

Request rates: a burst over a key's limit gets 429 with Retry-After, another key of the same
tenant keeps its own budget, the tenant's ceiling counts all its keys, and the window frees
up again. Work quotas (concurrent jobs, queued items, items per day) refuse with 429 on every
submit path and write nothing. A tenant's own values replace the settings'.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from typer.testing import CliRunner

from factory import embedded_redis
from factory.cli import app as cli_app
from factory.config import Settings, get_settings
from factory.db.models import Batch, Chunk, Item, ItemState, Job, JobStatus, OutboxMessage
from factory.db.session import get_sessionmaker, session_scope
from factory.errors import InvalidInput, NotFound
from factory.quotas import counters, service
from tests import campaign_data
from tests.keys import api_test_client
from tests.rows import count_rows
from tests.services import free_port

UNLIMITED = {"quota_requests_per_key": 0, "quota_requests_per_tenant": 0, "quota_concurrent_jobs": 0,
             "quota_queued_items": 0, "quota_items_per_day": 0}
WRITTEN = (Job, Chunk, Item, OutboxMessage, Batch)


@pytest.fixture
def base(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                    chunk_size=4, max_audience=300, quota_retry_after_s=7, chat_timeout_s=0.5, **UNLIMITED)


def with_quotas(base: Settings, **quotas: int) -> Settings:
    return base.model_copy(update={f"quota_{name}": value for name, value in quotas.items()})


def job_body(recipients: int) -> dict[str, Any]:
    """A personalization job of ``recipients`` x 2 variants items."""
    return {"kind": "personalization", "template": "Hello {{ name }}.", "variants": 2,
            "audience": [{"id": f"r{i}", "name": f"N{i}"} for i in range(recipients)]}


def chat_body(n: int) -> dict[str, Any]:
    return {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Say hi"}], "n": n}


def rows(settings: Settings) -> dict[str, int]:
    return {model.__name__: count_rows(settings.database_url, model) for model in WRITTEN}


def assert_refused(r: Any, field: str, code: str = "quota_exceeded") -> int:
    """A 429 naming ``field``, with whole seconds in Retry-After; returns them."""
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["field"] == field and field in error["message"]
    retry_after = r.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    return int(retry_after)


def set_quota(settings: Settings, tenant: str, name: str, value: int | None) -> None:
    with session_scope(settings.database_url) as session:
        service.set_quota(session, settings, tenant, name, value)


# --- request rates ---------------------------------------------------------------------
def test_a_burst_over_the_key_rate_gets_429_and_a_sibling_key_has_its_own_budget(base: Settings) -> None:
    settings = with_quotas(base, requests_per_key=3, requests_window_s=4)
    with api_test_client(settings) as first, api_test_client(settings) as sibling:
        answers = [first.get("/v1/files") for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 200]
        assert [r.headers["X-RateLimit-Remaining"] for r in answers] == ["2", "1", "0"]
        assert {r.headers["X-RateLimit-Limit"] for r in answers} == {"3"}
        refused = first.get("/v1/files")
        retry_after = assert_refused(refused, "requests_per_key", "rate_limit_exceeded")
        assert retry_after <= 4 and refused.headers["X-RateLimit-Remaining"] == "0"
        assert first.get("/healthz").status_code == 200  # probes carry no key and are not counted
        assert sibling.get("/v1/files").status_code == 200
        time.sleep(retry_after + 0.5)
        again = first.get("/v1/files")
        assert again.status_code == 200, again.text


def test_the_tenant_ceiling_counts_every_key_of_the_tenant(base: Settings) -> None:
    settings = with_quotas(base, requests_per_tenant=3, requests_window_s=60)
    with api_test_client(settings) as a, api_test_client(settings) as b, api_test_client(settings) as c, \
            api_test_client(settings, tenant="other") as other:
        assert [x.get("/v1/files").status_code for x in (a, b, a)] == [200, 200, 200]
        assert_refused(c.get("/v1/files"), "requests_per_tenant", "rate_limit_exceeded")
        assert other.get("/v1/files").status_code == 200


def test_a_key_over_its_own_rate_leaves_its_tenant_budget_to_the_other_keys(base: Settings) -> None:
    settings = with_quotas(base, requests_per_key=2, requests_per_tenant=4, requests_window_s=60)
    with api_test_client(settings) as noisy, api_test_client(settings) as quiet:
        assert [noisy.get("/v1/files").status_code for _ in range(6)] == [200, 200, 429, 429, 429, 429]
        assert [quiet.get("/v1/files").status_code for _ in range(2)] == [200, 200]


# --- work quotas -------------------------------------------------------------------------
def test_concurrent_jobs_quota_refuses_a_job_and_writes_nothing(base: Settings) -> None:
    settings = with_quotas(base, concurrent_jobs=2)
    with api_test_client(settings) as client:
        first = [client.post("/v1/jobs", json=job_body(1)).json()["id"] for _ in range(2)]
        before = rows(settings)
        retry = {"Idempotency-Key": "third-job"}
        r = client.post("/v1/jobs", json=job_body(1), headers=retry)
        assert assert_refused(r, "concurrent_jobs") == 7  # FACTORY_QUOTA_RETRY_AFTER_S
        assert rows(settings) == before
        with session_scope(settings.database_url) as s:  # one job ends: a place frees up
            s.execute(update(Job).where(Job.id == first[0]).values(status=JobStatus.SUCCEEDED))
        r = client.post("/v1/jobs", json=job_body(1), headers=retry)  # the 429 was not kept for replay
        assert r.status_code == 202 and "Idempotent-Replayed" not in r.headers


def test_queued_items_quota_counts_the_items_not_generated_yet(base: Settings) -> None:
    settings = with_quotas(base, queued_items=10)
    with api_test_client(settings) as client:
        job_id = client.post("/v1/jobs", json=job_body(5)).json()["id"]  # 10 items
        before = rows(settings)
        assert_refused(client.post("/v1/jobs", json=job_body(1)), "queued_items")
        assert rows(settings) == before
        with session_scope(settings.database_url) as s:  # 4 items generated; their job still runs
            done = list(s.scalars(select(Item.id).where(Item.job_id == job_id).order_by(Item.seq).limit(4)))
            s.execute(update(Item).where(Item.id.in_(done)).values(state=ItemState.SUCCEEDED))
        assert client.post("/v1/jobs", json=job_body(2)).status_code == 202  # 6 + 4 = 10
        assert_refused(client.post("/v1/jobs", json=job_body(1)), "queued_items")


def test_items_per_day_quota_is_counted_in_redis_with_the_items_each_request_adds(base: Settings) -> None:
    settings = with_quotas(base, items_per_day=12)
    with api_test_client(settings) as client:
        assert client.post("/v1/jobs", json=job_body(5)).status_code == 202  # 10 items
        before = rows(settings)
        assert_refused(client.post("/v1/jobs", json=job_body(2)), "items_per_day")  # 14 > 12
        r = client.post("/v1/jobs", json=job_body(7))
        assert_refused(r, "items_per_day")
        assert "more than the whole quota" in r.json()["error"]["message"]
        assert rows(settings) == before
        assert client.post("/v1/jobs", json=job_body(1)).status_code == 202  # 12: exactly the quota
        assert_refused(client.post("/v1/jobs", json=job_body(1)), "items_per_day")
    keys = redis.Redis.from_url(settings.broker_url or "").keys(f"{counters.KEY_PREFIX}*")
    assert keys and all(b"items" in k for k in keys)


def _personalization(client: TestClient) -> Any:
    return client.post("/v1/jobs", json=job_body(1))


def _augmentation(client: TestClient) -> Any:
    dataset = [{"id": f"r{i}", "text": f"where is my parcel number {i}", "label": "track"} for i in range(2)]
    return client.post("/v1/jobs", json={"kind": "augmentation", "dataset": {"rows": dataset},
                                         "methods": [{"method": "eda", "k": 2}]})


def _campaign(client: TestClient) -> Any:
    assert client.post("/v1/brands", json=campaign_data.brand()).status_code in (201, 409)
    for name in ("autumn-email-segment", "autumn-sms-segment"):
        assert client.post("/v1/templates", json=campaign_data.template(name)).status_code in (201, 409)
    return client.post("/v1/campaigns", json=campaign_data.segment_campaign())


def _batch(client: TestClient) -> Any:
    lines = b"".join(json.dumps({"custom_id": c, "method": "POST", "url": "/v1/chat/completions",
                                 "body": chat_body(1)}).encode() + b"\n" for c in "ab")
    uploaded = client.post("/v1/files", files={"file": ("in.jsonl", lines, "application/jsonl")},
                           data={"purpose": "batch"})
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]
    return client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h"})


def _chat(client: TestClient) -> Any:
    return client.post("/v1/chat/completions", json=chat_body(2))  # 2 items


@pytest.mark.parametrize("submit", [_personalization, _augmentation, _campaign, _batch, _chat],
                         ids=lambda f: f.__name__.strip("_"))
def test_every_submit_path_is_held_by_the_quotas(base: Settings, submit: Any) -> None:
    settings = with_quotas(base, concurrent_jobs=1)
    with api_test_client(settings) as client:
        assert _personalization(client).status_code == 202
        before = rows(settings)
        assert_refused(submit(client), "concurrent_jobs")
        assert rows(settings) == before
    with session_scope(settings.database_url) as s:
        s.execute(update(Job).values(status=JobStatus.SUCCEEDED))
    with api_test_client(with_quotas(base, items_per_day=1)) as client:
        assert_refused(submit(client), "items_per_day")  # every path's job has 2 items or more
        assert rows(settings) == before


# --- per-tenant values ---------------------------------------------------------------------
def test_a_tenant_of_its_own_raises_or_lowers_a_limit(base: Settings) -> None:
    settings = with_quotas(base, concurrent_jobs=1)
    with api_test_client(settings, tenant="acme") as acme, api_test_client(settings, tenant="zeta") as zeta:
        set_quota(settings, "acme", "concurrent_jobs", 3)
        assert [acme.post("/v1/jobs", json=job_body(1)).status_code for _ in range(4)] == [202, 202, 202, 429]
        assert [zeta.post("/v1/jobs", json=job_body(1)).status_code for _ in range(2)] == [202, 429]
        set_quota(settings, "zeta", "concurrent_jobs", 0)  # 0 = unlimited
        assert zeta.post("/v1/jobs", json=job_body(1)).status_code == 202
        set_quota(settings, "acme", "concurrent_jobs", None)  # back to the setting: 1, and acme has 3
        assert_refused(acme.post("/v1/jobs", json=job_body(1)), "concurrent_jobs")
    set_quota(settings, "acme", "requests_per_key", 2)  # read by an app at its first request of acme
    with api_test_client(settings, tenant="acme") as acme, api_test_client(settings, tenant="zeta") as zeta:
        assert [acme.get("/v1/files").status_code for _ in range(3)] == [200, 200, 429]
        assert [zeta.get("/v1/files").status_code for _ in range(3)] == [200, 200, 200]


def test_set_quota_refuses_unknown_names_values_and_tenants(base: Settings) -> None:
    with api_test_client(base, tenant="acme"):
        pass
    for args, error, field in ((("acme", "jobs_per_hour", 1), InvalidInput, "name"),
                               (("acme", "concurrent_jobs", -1), InvalidInput, "value"),
                               (("nobody", "concurrent_jobs", 1), NotFound, "tenant")):
        with pytest.raises(error) as caught, session_scope(base.database_url) as session:
            service.set_quota(session, base, *args)  # type: ignore[arg-type]
        assert caught.value.field == field


def test_factory_tenants_set_quota(base: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    with api_test_client(base, tenant="acme"):
        pass
    monkeypatch.setenv("FACTORY_DATABASE_URL", base.database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        result = runner.invoke(cli_app, ["tenants", "set-quota", "acme", "queued_items", "500"])
        assert result.exit_code == 0, result.output
        assert "queued_items" in result.output and "500" in result.output
        assert runner.invoke(cli_app, ["tenants", "set-quota", "acme", "queued_items", "lots"]).exit_code == 2
        assert runner.invoke(cli_app, ["tenants", "set-quota", "nobody", "queued_items", "1"]).exit_code == 2
        with session_scope(base.database_url) as session:
            assert service.tenant_quotas(session, base, "acme").queued_items == 500
        assert runner.invoke(cli_app, ["tenants", "set-quota", "acme", "queued_items", "default"]).exit_code == 0
        with session_scope(base.database_url) as session:
            assert service.tenant_quotas(session, base, "acme").queued_items == base.quota_queued_items
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


# --- where the counters live -------------------------------------------------------------------
def test_an_unreachable_redis_lets_requests_through_and_says_so_once(
        base: Settings, caplog: pytest.LogCaptureFixture) -> None:
    settings = base.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0",
                                       "quota_requests_per_key": 1, "quota_items_per_day": 1})
    with caplog.at_level(logging.WARNING, logger=counters.__name__), api_test_client(settings) as client:
        assert [client.get("/v1/files").status_code for _ in range(3)] == [200, 200, 200]
        assert client.post("/v1/jobs", json=job_body(1)).status_code == 202  # 2 items: admitted all the same
    warnings = [r for r in caplog.records if r.name == counters.__name__]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()


def test_the_counters_work_in_the_embedded_redis_of_the_demo(tmp_path: Path) -> None:
    url = embedded_redis.ensure_running(tmp_path / "data")  # redis://:password@127.0.0.1:port/0
    try:
        demo = counters.Counters(url)
        verdicts = [demo.requests(2, 30, "requests_per_key", "key_demo") for _ in range(3)]
        assert [v.allowed if v else None for v in verdicts] == [True, True, False]
    finally:
        embedded_redis.stop(tmp_path / "data")


def test_an_admitted_submit_writes_the_rows_a_refused_one_does_not(base: Settings) -> None:
    with api_test_client(base) as client:
        assert client.post("/v1/jobs", json=job_body(1)).status_code == 202
    counted = rows(base)
    assert counted["Job"] == 1 and counted["Item"] == 2 and counted["OutboxMessage"] == 1
    with get_sessionmaker(base.database_url)() as s:
        assert s.scalar(select(Job.status)) == JobStatus.QUEUED
