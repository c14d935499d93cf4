"""Another tenant's resources do not exist for you: every id of tenant A is a 404 to tenant B.

Tenant A makes one of each resource (job, results, batch, file, template, brand,
campaign, export, augmentation report and dataset); for every URL that reads or acts
on one of them, A gets an answer that is not a 404 (so the URL is right) and B gets a
404 (so the id is hidden, not merely forbidden). Lists show B none of A's resources,
and A's resources cannot be used by reference in B's submissions. On SQLite and on
PostgreSQL, with a real Redis.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from factory.config import Settings
from factory.db.models import Job
from factory.storage import open_store
from factory.storage.keys import dataset_file_key
from tests import campaign_data as data
from tests.keys import api_test_client
from tests.rows import count_rows

MODEL = "smollm2-135m-instruct"
CHAT_LINE = {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}}
AUGMENT = {"kind": "augmentation", "methods": [{"method": "eda", "k": 1}], "params": {"seed": 1},
           "dataset": {"rows": [{"id": f"r{i}", "text": f"message number {i} about my order", "label": "a"}
                                for i in range(3)]}}


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects")


def _ok(resp: Any, status: int = 200) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    return dict(resp.json())


def _resources_of(a: TestClient, settings: Settings) -> dict[str, str]:
    """One of each resource type, made by ``a``; returns their ids and names."""
    job = _ok(a.post("/v1/jobs", json={"kind": "personalization", "template": "Hi {{ name }}",
                                       "audience": [{"id": "r1", "name": "Ana"}]}), 202)
    batch_file = _ok(a.post("/v1/files", files={"file": ("in.jsonl", json.dumps(CHAT_LINE).encode() + b"\n")},
                            data={"purpose": "batch"}))
    batch = _ok(a.post("/v1/batches", json={"input_file_id": batch_file["id"], "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h"}))
    audience = _ok(a.post("/v1/files", files={"file": ("audience.csv", data.AUDIENCE_CSV.read_bytes())},
                          data={"purpose": "user_data"}))
    _ok(a.post("/v1/brands", json=data.brand()), 201)
    for name in ("autumn-email-segment", "autumn-sms-segment"):
        _ok(a.post("/v1/templates", json=data.template(name)), 201)
    campaign = _ok(a.post("/v1/campaigns", json=data.segment_campaign()), 202)
    augmentation = _ok(a.post("/v1/jobs", json=AUGMENT), 202)
    # What the exporter writes when the job ends (no worker runs here), so that A can read it.
    open_store(settings).put_bytes(dataset_file_key("acme", augmentation["id"], "README.md"), b"# card")
    return {"job": job["id"], "batch": batch["id"], "batch_file": batch_file["id"], "audience": audience["id"],
            "brand": data.brand()["name"], "template": "autumn-sms-segment", "campaign": campaign["id"],
            "augmentation": augmentation["id"]}


def _urls(r: dict[str, str]) -> list[tuple[str, str]]:
    """Every route that names one resource by id or name: (method, path)."""
    return [
        ("GET", f"/v1/jobs/{r['job']}"), ("GET", f"/v1/jobs/{r['job']}/results"),
        ("POST", f"/v1/jobs/{r['job']}/cancel"),
        ("GET", f"/v1/batches/{r['batch']}"), ("GET", f"/v1/batches/{r['batch']}/output"),
        ("GET", f"/v1/batches/{r['batch']}/errors"), ("POST", f"/v1/batches/{r['batch']}/cancel"),
        ("GET", f"/v1/files/{r['batch_file']}"), ("GET", f"/v1/files/{r['batch_file']}/content"),
        ("GET", f"/v1/files/{r['audience']}"), ("GET", f"/v1/files/{r['audience']}/content"),
        ("DELETE", f"/v1/files/{r['audience']}"),
        ("GET", f"/v1/templates/{r['template']}"), ("GET", f"/v1/brands/{r['brand']}"),
        ("GET", f"/v1/campaigns/{r['campaign']}"), ("GET", f"/v1/campaigns/{r['campaign']}/report"),
        ("GET", f"/v1/campaigns/{r['campaign']}/exports/csv"),
        ("GET", f"/v1/jobs/{r['augmentation']}/report"), ("GET", f"/v1/jobs/{r['augmentation']}/dataset"),
        ("GET", f"/v1/jobs/{r['augmentation']}/dataset/README.md"),
    ]


def test_every_resource_of_another_tenant_is_a_404(settings: Settings) -> None:
    with api_test_client(settings, tenant="acme") as a, api_test_client(settings, tenant="globex") as b:
        ids = _resources_of(a, settings)
        jobs_before = count_rows(settings.database_url, Job)
        # B first: its cancel and delete attempts must leave A's resources as they were.
        for method, path in _urls(ids):
            resp = b.request(method, path)
            assert resp.status_code == 404, (method, path, resp.status_code)
            assert not any(v in resp.text for v in ids.values() if v.startswith(("job_", "batch_", "file-"))), path
        for method, path in _urls(ids):
            if method == "GET":
                assert a.request(method, path).status_code != 404, (method, path)
        assert a.get(f"/v1/files/{ids['audience']}").status_code == 200  # B's DELETE did nothing
        assert a.get(f"/v1/jobs/{ids['job']}").json()["status"] == "queued"  # nor B's cancel
        assert count_rows(settings.database_url, Job) == jobs_before


def test_lists_show_only_the_callers_resources_and_names_are_per_tenant(settings: Settings) -> None:
    with api_test_client(settings, tenant="acme") as a, api_test_client(settings, tenant="globex") as b:
        ids = _resources_of(a, settings)
        for path in ("/v1/files", "/v1/batches", "/v1/templates"):
            assert _ok(b.get(path))["data"] == [], path
            assert _ok(a.get(path))["data"], path
        # The same names are free for B: templates and brands are per tenant.
        _ok(b.post("/v1/brands", json=data.brand()), 201)
        _ok(b.post("/v1/templates", json=data.template(ids["template"])), 201)
        assert _ok(b.get(f"/v1/templates/{ids['template']}"))["version"] == 1


def test_another_tenants_ids_cannot_be_used_by_reference(settings: Settings) -> None:
    with api_test_client(settings, tenant="acme") as a, api_test_client(settings, tenant="globex") as b:
        ids = _resources_of(a, settings)
        jobs_before = count_rows(settings.database_url, Job)
        batch = b.post("/v1/batches", json={"input_file_id": ids["batch_file"], "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h"})
        assert batch.status_code == 404 and batch.json()["error"]["field"] == "input_file_id"
        # A's brand and templates do not exist for B; once B has its own, A's audience file still does not.
        by_name = b.post("/v1/campaigns", json=data.segment_campaign())
        assert by_name.status_code == 422 and by_name.json()["error"]["field"] == "brand", by_name.text
        _ok(b.post("/v1/brands", json=data.brand()), 201)
        for name in ("autumn-email-segment", "autumn-sms-segment"):
            _ok(b.post("/v1/templates", json=data.template(name)), 201)
        by_file = b.post("/v1/campaigns", json=data.segment_campaign(
            audience={"file_id": ids["audience"], "format": "csv", "key_column": "id"}))
        assert by_file.status_code in (404, 422) and "audience" in by_file.json()["error"]["field"], by_file.text
        dataset = b.post("/v1/jobs", json={**AUGMENT, "dataset": {"file_id": ids["audience"], "format": "csv"}})
        assert dataset.status_code in (404, 422) and "dataset" in dataset.json()["error"]["field"]
        assert count_rows(settings.database_url, Job) == jobs_before


def test_idempotency_keys_are_per_tenant(settings: Settings) -> None:
    body = {"kind": "personalization", "template": "Hi {{ name }}", "audience": [{"id": "r1", "name": "Ana"}]}
    with api_test_client(settings, tenant="acme") as a, api_test_client(settings, tenant="globex") as b:
        first = _ok(a.post("/v1/jobs", json=body, headers={"Idempotency-Key": "same-key"}), 202)
        other = b.post("/v1/jobs", json=body, headers={"Idempotency-Key": "same-key"})
        assert other.status_code == 202 and "idempotent-replayed" not in other.headers
        assert other.json()["id"] != first["id"]
        again = a.post("/v1/jobs", json=body, headers={"Idempotency-Key": "same-key"})
        assert again.headers.get("idempotent-replayed") == "true" and again.json()["id"] == first["id"]
    assert count_rows(settings.database_url, Job) == 2
