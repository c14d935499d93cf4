"""The OpenAPI document says what the API does: schemathesis against the live ``/openapi.json``.

A real API process on PostgreSQL (which refuses more than SQLite, a NUL for one) and
Redis, with a worker for the priority queue only, so a chat completion gets its answer
while submitted jobs just wait in the queue. Every phase (examples, coverage, fuzzing,
stateful) and every check runs, a fixed number of examples per operation, derandomized:
no 5xx, no status, content type, header or body the document does not declare, no
request the document admits refused, none it forbids accepted, and a 405 with ``Allow``
for a method a path does not take.

The admin routes get a key of their own tenant: revoking keys is one of them, and the
fuzzer would otherwise revoke the key the rest of the run needs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from factory.auth.principal import READ, SCOPES, WRITE
from tests.keys import api_key
from tests.processes import api_server, factory_env, worker
from tests.services import REPO

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 15
RUN_TIMEOUT_S = 300
MODEL = "smollm2-135m-instruct"
# Bodies whose content is checked beyond what JSON Schema can state, so a schema-valid body may still be a
# 422 naming the field: a template must compile and use only declared variables, every record must carry
# the key field the body names, a CSV or JSONL audience or upload must parse, a batch's input file must be
# an upload of batch lines, a webhook needs the server's secret and a public address, a brand's
# required phrases may not contain its banned ones, and a pipeline's cron must parse, its zone exist and
# its job pass the kind's own checks (its schedule and input also take one of two shapes each); a chat
# completion's response_format schema must be one the grammar can enforce (keywords, size, depth), and stop
# strings cannot be combined with it.
CHECKED_BEYOND_SCHEMA = ["POST /v1/chat/completions", "POST /v1/jobs", "POST /v1/campaigns", "POST /v1/templates",
                         "PUT /v1/templates/{name}",
                         "POST /v1/files", "POST /v1/batches", "POST /v1/brands", "PUT /v1/brands/{name}",
                         "POST /v1/pipelines", "PATCH /v1/pipelines/{pipeline_id}"]


# schemathesis's default list for rejected invalid data, plus 413 (Content Too Large).
NEGATIVE_DATA_REJECTED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


def config(key: str, admin_key: str) -> str:
    return f"""
workers = 1
hooks = "tests.security.schemathesis_hooks"
request-timeout = 30
headers = {{ Authorization = "Bearer {key}" }}

[generation]
max-examples = {EXAMPLES_PER_OPERATION}
deterministic = true

# A body over its endpoint's byte limit is refused whole, before it is parsed: 413 is a rejection too.
[checks.negative_data_rejection]
expected-statuses = {json.dumps(NEGATIVE_DATA_REJECTED)}

[[operations]]
include-path-regex = "^/v1/admin/"
headers = {{ Authorization = "Bearer {admin_key}" }}

# A NUL in a JSON string is refused by the strict JSON decoding (the hostile catalogue's case); until
# then PostgreSQL refuses it late, a 500. Drop this once every body is decoded strictly.
[[operations]]
include-method = ["POST", "PUT"]
generation.allow-x00 = false

[[operations]]
include-name = {json.dumps(CHECKED_BEYOND_SCHEMA)}
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]
"""


def test_live_api_conforms_to_its_openapi_document(pg_db: str, broker_url: str, tmp_path: Path) -> None:
    env = factory_env(FACTORY_DATABASE_URL=pg_db, FACTORY_BROKER_URL=broker_url,
                      FACTORY_STORAGE_URL=f"file://{tmp_path}/objects", FACTORY_GENERATOR="fake",
                      FACTORY_CHAT_TIMEOUT_S="30", FACTORY_MAX_BODY_BYTES=str(1 << 20),
                      FACTORY_BATCH_MAX_FILE_BYTES=str(1 << 20))
    settings_file = tmp_path / "schemathesis.toml"
    settings_file.write_text(config(api_key(pg_db, "fuzz", (READ, WRITE)), api_key(pg_db, "fuzz-admin", SCOPES)))
    with api_server(env, tmp_path / "api.log") as url, \
            worker(env, tmp_path / "worker.log", pool="solo", queues=f"gen.{MODEL}.priority"):
        document = httpx.get(f"{url}/openapi.json").json()
        operations = sum(len(methods) for methods in document["paths"].values())
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(settings_file), "--no-color", "run",
             f"{url}/openapi.json", "--checks", "all", "--output-truncate", "false"],
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, cwd=REPO)
        api_log = (tmp_path / "api.log").read_text(errors="replace")
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-60000:]
    assert re.search(rf"Tested: {operations}\b", report), report[-5000:]
    assert "Authentication failed" not in report, report[-5000:]
    assert "Traceback" not in api_log, api_log[-5000:]
    assert json.dumps(document).count("x-factory-model-name") == 0  # every model field got its enum
