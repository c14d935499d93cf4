"""What the OpenAPI document declares, and the answers the conformance run found wrong, in process.

The document's error responses and enums (tests/security/test_openapi_conformance.py fuzzes the
live API against it); a 405 lists every method of its path in ``Allow``; ``stream: 0`` is not
``false``; a list cursor naming nothing is a 404, like any id naming nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from factory.api.app import create_app
from factory.batches.lines import SUPPORTED_URLS
from factory.config import Settings
from factory.models.registry import allowed_models
from tests.keys import api_test_client

MODEL = "smollm2-135m-instruct"
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


def document(settings: Settings) -> dict[str, Any]:
    with TestClient(create_app(settings, run_migrations=False)) as client:
        response = client.get("/openapi.json")  # public: no key
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def operations(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{method.upper()} {path}": op for path, methods in doc["paths"].items() for method, op in methods.items()}


def error_schema(op: dict[str, Any], status: str) -> Any:
    return op["responses"][status]["content"]["application/json"]["schema"]


def test_every_keyed_operation_declares_its_errors_with_the_error_body(sqlite_session_url: str) -> None:
    ops = operations(document(Settings(database_url=sqlite_session_url)))
    keyed = {name: op for name, op in ops.items() if name.split()[1].startswith("/v1/")}
    assert len(keyed) == 48  # 34, the two provenance routes, 9 for pipelines, 3 for verify
    for name, op in keyed.items():
        for status in ("401", "403", "413", "422", "429", "503"):
            assert error_schema(op, status) == ERROR_BODY, (name, status)
        assert op["security"] == [{"HTTPBearer": []}], name
    without_404 = {name for name, op in keyed.items() if "404" not in op["responses"]}
    assert without_404 == {"GET /v1/admin/doctor", "GET /v1/admin/keys", "POST /v1/admin/keys",
                           "POST /v1/chat/completions", "GET /v1/provenance/lookup"}  # a lookup finds none: []
    for name, op in keyed.items():
        if "requestBody" in op:
            assert error_schema(op, "400") == error_schema(op, "415") == ERROR_BODY, name
    assert set(ops["PUT /v1/templates/{name}"]["responses"]) >= {"200", "201"}
    assert set(ops["POST /v1/templates"]["responses"]) >= {"201", "409"}
    assert set(ops["POST /v1/chat/completions"]["responses"]) >= {"500", "504"}
    assert set(ops["GET /v1/jobs/{job_id}/results"]["responses"]["200"]["content"]) == {"application/x-ndjson"}


def test_model_enums_are_the_models_this_deployment_accepts(sqlite_session_url: str) -> None:
    everything = document(Settings(database_url=sqlite_session_url))
    chat = everything["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]
    assert chat["enum"] == allowed_models() and MODEL in chat["enum"]
    assert "x-factory-model-name" not in str(everything)
    nothing_allowed = document(Settings(database_url=sqlite_session_url, model_allowlist=["no-such-model"]))
    assert nothing_allowed["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]["enum"] == []
    batch = everything["components"]["schemas"]["BatchCreate"]["properties"]
    assert batch["endpoint"]["enum"] == list(SUPPORTED_URLS)
    assert batch["completion_window"] == {"const": "24h", "title": "Completion Window", "type": "string"}


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects")


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("DELETE", "/v1/files", "GET, POST"),  # two routes on one path: both methods
    ("TRACE", "/v1/admin/keys", "GET, POST"),
    ("PUT", "/v1/jobs/job_x/cancel", "POST"),
    ("POST", "/healthz", "GET"),  # no key needed, still an Allow
])
def test_a_method_the_path_does_not_take_is_a_405_listing_every_method_it_does(
        settings: Settings, method: str, path: str, allow: str) -> None:
    with api_test_client(settings, scopes=("read", "write", "admin")) as client:
        response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allow
    assert response.json()["error"]["code"] == "http_error"


def test_stream_zero_is_not_false(settings: Settings) -> None:
    base = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    with api_test_client(settings) as client:
        for stream in (0, 0.0, True):
            response = client.post("/v1/chat/completions", json={**base, "stream": stream})
            assert response.status_code == 422, stream
            assert response.json()["error"]["field"] == "stream"


@pytest.mark.parametrize("path", ["/v1/templates/t", "/v1/brands/b"])
def test_a_version_past_the_column_is_a_422_not_a_500(settings: Settings, path: str) -> None:
    with api_test_client(settings) as client:
        response = client.get(path, params={"version": 2**63})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "version"


@pytest.mark.parametrize("path", ["/v1/files", "/v1/batches"])
def test_a_list_cursor_naming_nothing_is_a_404(settings: Settings, path: str) -> None:
    with api_test_client(settings) as client:
        response = client.get(path, params={"after": "file-nothing"})
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "after"
