"""No secret and no record value in the logs of a real API process and a real worker process.

PostgreSQL (its password a canary: the test server trusts local connections, so any password is
accepted), real Redis, real S3 (SeaweedFS accepts any key pair, so both keys are canaries), the
webhook secret a canary, the fake generator (it echoes the prompt, so a record's canary is in the
generated text too). Work that succeeds and work that fails: a poisoned item, bad requests that
carry the canary, a webhook that cannot be delivered to a URL with a token, a deleted upload. At
INFO and at DEBUG, every canary is grepped for in both processes' logs and in every error body.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.keys import api_key
from tests.processes import api_server, stack_env, wait_job, worker
from tests.services import SeaweedS3, free_port

VALUE = "CANARYVALUE4e1d"  # a recipient's field: stored, rendered, generated from; never logged
SECRETS = {"FACTORY_S3_ACCESS_KEY_ID": "CANARYACCESSKEY4e1d", "FACTORY_S3_SECRET_ACCESS_KEY": "CANARYSECRET4e1d",
           "FACTORY_WEBHOOK_SECRET": "CANARYWEBHOOKSECRET4e1d", "FACTORY_METRICS_TOKEN": "CANARYMETRICSTOKEN4e1d"}
DB_PASSWORD = "CANARYDBPASSWORD4e1d"
URL_TOKEN = "CANARYURLTOKEN4e1d"
CANARIES = [VALUE, DB_PASSWORD, URL_TOKEN, *SECRETS.values()]


def _chat_line(custom_id: str, content: str) -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "smollm2-135m-instruct", "max_tokens": 8,
                                "messages": [{"role": "user", "content": content}]}}).encode() + b"\n"


def _exercise(client: httpx.Client) -> list[str]:
    """Work through the API that touches the canaries; returns every error body it got."""
    bodies = []
    job = client.post("/v1/jobs", json={
        "kind": "personalization", "template": "{{ name }} asked about boots.", "variants": 1,
        "audience": [{"id": "r1", "name": VALUE}, {"id": "r2", "name": f"POISON {VALUE}"}], "params": {"seed": 3}})
    assert job.status_code == 202, job.text
    bad = [
        client.post("/v1/jobs", json={"kind": "personalization", "template": "{{ nope }}", "variants": 1,
                                      "audience": [{"id": "r1", "name": VALUE}]}),
        client.post("/v1/jobs", content=b'{"kind": "' + VALUE.encode() + b'", ', headers={"content-type":
                                                                                       "application/json"}),
        client.get("/v1/files", params={"after": VALUE}),
        client.post("/v1/batches", json={"input_file_id": VALUE, "endpoint": "/v1/chat/completions",
                                         "completion_window": "24h"}),
    ]
    for r in bad:
        assert 400 <= r.status_code < 500, r.text
        bodies.append(r.text)
    upload = client.post("/v1/files", files={"file": ("in.jsonl", _chat_line("a", f"Hello {VALUE}")
                                                      + _chat_line("b", f"POISON {VALUE}"))},
                         data={"purpose": "batch"}).json()
    hook = f"http://127.0.0.1:{free_port()}/hook?token={URL_TOKEN}"  # nobody listens: delivery fails
    batch = client.post("/v1/batches", json={"input_file_id": upload["id"], "endpoint": "/v1/chat/completions",
                                             "completion_window": "24h", "webhook_url": hook})
    assert batch.status_code == 200, batch.text
    assert wait_job(client, job.json()["id"])["counts"] == {"total": 2, "pending": 0, "succeeded": 1, "failed": 1,
                                                             "cancelled": 0}
    deadline = time.monotonic() + 120
    while client.get(f"/v1/batches/{batch.json()['id']}").json()["status"] != "completed":
        assert time.monotonic() < deadline, "the batch did not complete"
        time.sleep(0.25)
    assert VALUE in client.get(f"/v1/jobs/{job.json()['id']}/results").text  # the value went through
    data = client.post("/v1/files", files={"file": ("a.csv", f"id,name\nr1,{VALUE}\n".encode())},
                       data={"purpose": "user_data"}).json()
    assert client.delete(f"/v1/files/{data['id']}").status_code == 200
    scraped = client.get("/metrics", headers={"Authorization": f"Bearer {SECRETS['FACTORY_METRICS_TOKEN']}"})
    assert scraped.status_code == 200 and "factory_state_up 1.0" in scraped.text
    time.sleep(2)  # the webhook's first attempt
    return bodies


@pytest.mark.parametrize(("level", "log_format"), [("INFO", "text"), ("DEBUG", "text"), ("DEBUG", "json")])
def test_no_canary_reaches_a_log_or_an_error_body(pg_db: str, broker_url: str, s3_server: SeaweedS3,
                                                  s3_bucket: str, tmp_path: Path, level: str, log_format: str) -> None:
    database_url = make_url(pg_db).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    env = stack_env(database_url, broker_url, s3_server.endpoint, s3_bucket, FACTORY_GENERATOR="fake",
                    FACTORY_LOG_LEVEL=level, FACTORY_LOG_FORMAT=log_format, FACTORY_WEBHOOK_ALLOW_PRIVATE="true",
                    FACTORY_CHUNK_SIZE="2")
    env.update(SECRETS)
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    key = api_key(pg_db)  # a real key: its secret part (all but the 11-character prefix) is a canary too
    canaries = [*CANARIES, key[11:]]
    with api_server(env, api_log) as url, worker(env, worker_log):
        with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
            bodies = _exercise(client)
    logs = {"api": api_log.read_text(errors="replace"), "worker": worker_log.read_text(errors="replace")}
    # The logs are there and say things (the test can fail): requests, tasks, the poisoned item.
    assert "POST /v1/jobs" in logs["api"] and "succeeded" in logs["worker"]
    if level == "DEBUG":
        debug = '"level": "DEBUG"' if log_format == "json" else " DEBUG "
        assert debug in logs["api"] and debug.strip() in logs["worker"]
    if log_format == "json":  # one JSON object per line, nothing else
        assert all(json.loads(line) for text in logs.values() for line in text.splitlines() if line.strip())
    found = [(name, c) for name, text in [*logs.items(), *(("error body", b) for b in bodies)]
             for c in canaries if c in text]
    assert found == []
