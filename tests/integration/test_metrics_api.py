"""GET /metrics on the API, in process: its own token instead of an API key, Prometheus's format, not in
the OpenAPI document; every request is counted by route template and answers with its request id."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from factory.config import Settings
from tests.keys import api_test_client

TOKEN = "metrics-token-in-process"


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                    metrics_token=TOKEN)


def _count(client: TestClient, route: str, status: str) -> float:
    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    return next((s.value for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == "factory_http_requests_total"
                 and s.labels == {"method": "GET", "route": route, "status": status}), 0.0)


def test_metrics_take_the_metrics_token_not_an_api_key(client: TestClient) -> None:
    refused = client.get("/metrics")  # the client sends a valid API key
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_metrics_token"
    assert refused.headers["www-authenticate"] == 'Bearer realm="metrics"'
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "factory_state_up 1.0" in ok.text and "factory_broker_up 1.0" in ok.text
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_requests_are_counted_by_route_template_and_carry_a_request_id(client: TestClient) -> None:
    before, unmatched = _count(client, "/v1/jobs/{job_id}", "404"), _count(client, "unmatched", "404")
    for job_id in ("job_a", "job_b", "job_c"):
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 404 and len(response.headers["x-request-id"]) == 16
    assert client.get("/no/such/route").status_code == 404
    assert _count(client, "/v1/jobs/{job_id}", "404") == before + 3  # one series, whatever the id
    assert _count(client, "/no/such/route", "404") == 0
    assert _count(client, "unmatched", "404") == unmatched + 1


def test_the_factorys_state_is_read_when_scraped(settings: Settings) -> None:
    with api_test_client(settings) as client:
        job = client.post("/v1/jobs", json={"kind": "personalization", "template": "Hi {{ name }}", "variants": 1,
                                            "audience": [{"id": f"r{i}", "name": "x"} for i in range(10)]})
        assert job.status_code == 202, job.text
        text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    queue = f"gen.{settings.model}"
    assert f'factory_queue_chunks{{queue="{queue}",state="pending"}} {job.json()["chunk_count"]}.0' in text
    assert f'factory_queue_messages{{queue="{queue}",state="ready"}} {job.json()["chunk_count"]}.0' in text
