"""Verify: an item regenerated from its record on a worker, and the mismatch reasons.

A real API and a real worker process (fake generator) over Redis, on SQLite and PostgreSQL. The
record is edited in the database the way a wrong record would read (another seed, another weights
hash, another dtype): each verify names what differs. ``factory verify`` runs against the API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from factory.db.models import Item
from factory.db.session import get_sessionmaker
from tests.keys import api_key
from tests.processes import api_server, factory_env, wait_job, worker

pytestmark = pytest.mark.slow


def verified(client: httpx.Client, item_id: str, timeout: float = 120) -> dict[str, Any]:
    started = client.post(f"/v1/items/{item_id}/verify")
    assert started.status_code == 202, started.text
    body: dict[str, Any] = started.json()
    assert body["item_id"] == item_id and body["url"] == f"/v1/verifications/{body['id']}"
    deadline = time.monotonic() + timeout
    while body["result"] is None and body["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
        body = client.get(body["url"]).json()
    return body


def edit_record(db_url: str, item_id: str, **changes: Any) -> None:
    with get_sessionmaker(db_url)() as session:
        item = session.scalars(select(Item).where(Item.id == item_id)).one()
        item.provenance = {**(item.provenance or {}), **changes}
        session.commit()


def test_verify_regenerates_an_item_and_names_what_differs(db_url: str, broker_url: str, tmp_path: Path) -> None:
    env = factory_env(FACTORY_DATABASE_URL=db_url, FACTORY_BROKER_URL=broker_url, FACTORY_CHUNK_SIZE="8",
                      FACTORY_STORAGE_URL=f"file://{tmp_path}/objects", FACTORY_GENERATOR="fake")
    acme, globex = api_key(db_url, "acme"), api_key(db_url, "globex")
    audience = [{"id": f"r{i}", "name": f"Ana {i}"} for i in range(8)]
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log", pool="solo"), \
            httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {acme}"}) as client, \
            httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {globex}"}) as other:
        created = client.post("/v1/jobs", json={"kind": "personalization", "template": "Hi {{ name }}",
                                                "audience": audience, "params": {"seed": 5}})
        assert created.status_code == 202, created.text
        job = wait_job(client, created.json()["id"], timeout=120)
        assert job["status"] == "succeeded"
        lines = [json.loads(x) for x in client.get(f"/v1/jobs/{job['id']}/results").text.splitlines()]
        assert {x["provenance"]["batch_size"] for x in lines} == {8}  # made in one batch of 8
        first, second, third, fourth = (x["item_id"] for x in lines[:4])

        # Same record, same worker: a match, byte for byte, regenerated alone.
        answer = verified(client, first)
        assert (answer["result"], answer["reasons"], answer["job_id"]) == ("match", [], job["id"])
        regenerated = [json.loads(x) for x in client.get(f"/v1/jobs/{answer['id']}/results").text.splitlines()]
        assert [x["text"] for x in regenerated] == [lines[0]["text"]]
        assert regenerated[0]["provenance"]["verify"]["result"] == "match"
        assert regenerated[0]["provenance"]["batch_size"] == 1

        # Another seed in the record: the text differs from its second character ("[" + the seed's tag).
        edit_record(db_url, second, seed=lines[1]["provenance"]["seed"] + 1)
        answer = verified(client, second)
        assert answer["result"] == "mismatch"
        assert [(r["field"], r["at"]) for r in answer["reasons"]] == [("text", 1)]
        # Another weights hash recorded: the text matches, the model does not.
        edit_record(db_url, third, weights_sha256="f" * 64)
        answer = verified(client, third)
        assert answer["result"] == "mismatch"
        assert answer["reasons"] == [{"field": "weights_sha256", "recorded": "f" * 64, "now": "0" * 64, "at": None}]
        # Another dtype recorded (the fake generator runs in none).
        edit_record(db_url, fourth, dtype="bfloat16")
        answer = verified(client, fourth)
        assert answer["reasons"] == [{"field": "dtype", "recorded": "bfloat16", "now": "none", "at": None}]

        # Another tenant's item, an unknown id, an unknown verification: 404; a verify job's item: 422.
        assert other.post(f"/v1/items/{first}/verify").status_code == 404
        assert other.get(answer["url"]).status_code == 404
        assert client.post("/v1/items/itm_nope/verify").status_code == 404
        assert client.get("/v1/verifications/job_nope").status_code == 404
        assert client.get(f"/v1/verifications/{job['id']}").status_code == 404  # not a verification
        refused = client.post(f"/v1/items/{regenerated[0]['item_id']}/verify")
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "item_id"

        cli_env = {**os.environ, "FACTORY_API_KEY": acme}
        ok = subprocess.run([sys.executable, "-m", "factory.cli", "verify", first, "--api-url", url],
                            capture_output=True, text=True, env=cli_env, timeout=180)
        assert ok.returncode == 0, ok.stderr + ok.stdout
        assert json.loads(ok.stdout)["result"] == "match"
        bad = subprocess.run([sys.executable, "-m", "factory.cli", "verify", third, "--api-url", url],
                             capture_output=True, text=True, env=cli_env, timeout=180)
        assert bad.returncode == 1 and json.loads(bad.stdout)["reasons"][0]["field"] == "weights_sha256"


def verification_done(client: httpx.Client, started: httpx.Response, timeout: float = 180) -> dict[str, Any]:
    assert started.status_code == 202, started.text
    body: dict[str, Any] = started.json()
    deadline = time.monotonic() + timeout
    while body["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, body
        time.sleep(0.2)
        body = client.get(body["url"]).json()
    return body


def verified_ids(client: httpx.Client, verification_id: str) -> list[str]:
    lines = client.get(f"/v1/jobs/{verification_id}/results").text.splitlines()
    return sorted(json.loads(x)["provenance"]["verify"]["item_id"] for x in lines)


def test_verify_a_whole_job_or_a_seeded_sample_as_one_job(db_url: str, broker_url: str, tmp_path: Path) -> None:
    env = factory_env(FACTORY_DATABASE_URL=db_url, FACTORY_BROKER_URL=broker_url, FACTORY_CHUNK_SIZE="4",
                      FACTORY_STORAGE_URL=f"file://{tmp_path}/objects", FACTORY_GENERATOR="fake",
                      FACTORY_VERIFY_MAX_ITEMS="10")
    acme, globex = api_key(db_url, "acme"), api_key(db_url, "globex")
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log", pool="solo"), \
            httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {acme}"}) as client, \
            httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {globex}"}) as other:
        jobs = []
        for size in (10, 11):
            created = client.post("/v1/jobs", json={"kind": "personalization", "template": "Hi {{ name }}",
                                                    "audience": [{"id": f"r{i}", "name": f"Ana {i}"}
                                                                 for i in range(size)], "params": {"seed": 5}})
            assert created.status_code == 202, created.text
            jobs.append(wait_job(client, created.json()["id"], timeout=120))
        small, large = jobs
        assert small["status"] == large["status"] == "succeeded"
        results = client.get(f"/v1/jobs/{small['id']}/results").text.splitlines()
        items = sorted(json.loads(x)["item_id"] for x in results)
        edit_record(db_url, items[2], seed=123456)
        edit_record(db_url, items[7], weights_sha256="f" * 64)

        # The whole job: one verify job, chunked like any job; every item regenerated and counted.
        whole = verification_done(client, client.post(f"/v1/jobs/{small['id']}/verify"))
        assert whole["status"] == "succeeded" and whole["item_id"] is None and whole["job_id"] == small["id"]
        assert whole["counts"] == {"total": 10, "match": 8, "mismatch": 2, "failed": 0, "pending": 0}
        assert whole["result"] == "mismatch" and whole["reason_counts"] == {"text": 1, "weights_sha256": 1}
        assert sorted(m["item_id"] for m in whole["mismatches"]) == [items[2], items[7]]
        assert client.get(f"/v1/jobs/{whole['id']}").json()["counts"]["total"] == 10
        assert verified_ids(client, whole["id"]) == items
        regenerated = [json.loads(x) for x in client.get(f"/v1/jobs/{whole['id']}/results").text.splitlines()]
        assert {x["provenance"]["batch_size"] for x in regenerated} == {1}  # each alone, in chunks of 4

        # A sample: drawn with the seed given, so the same seed draws the same items again.
        first = verification_done(client, client.post(f"/v1/jobs/{large['id']}/verify", json={"sample": 4, "seed": 3}))
        again = verification_done(client, client.post(f"/v1/jobs/{large['id']}/verify", json={"sample": 4, "seed": 3}))
        assert (first["sample"], first["sample_seed"], first["counts"]["total"]) == (4, 3, 4)
        assert first["result"] == again["result"] == "match"
        assert verified_ids(client, first["id"]) == verified_ids(client, again["id"])
        drawn = client.post(f"/v1/jobs/{large['id']}/verify", json={"sample": 2}).json()
        assert isinstance(drawn["sample_seed"], int)  # drawn at random, and recorded

        # Bounded: a whole job over the limit, or a sample over it, is a 422 naming sample.
        for body in (None, {"sample": 11}):
            refused = client.post(f"/v1/jobs/{large['id']}/verify", json=body)
            assert refused.status_code == 422 and refused.json()["error"]["field"] == "sample", refused.text
        refused = client.post(f"/v1/jobs/{large['id']}/verify", json={"sample": 0})
        assert refused.status_code == 422
        # Another tenant's job: 404. A verify job's own items cannot be verified: 422 naming job_id.
        assert other.post(f"/v1/jobs/{small['id']}/verify").status_code == 404
        assert other.get(whole["url"]).status_code == 404
        refused = client.post(f"/v1/jobs/{whole['id']}/verify")
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "job_id"

        cli_env = {**os.environ, "FACTORY_API_KEY": acme}
        out = subprocess.run([sys.executable, "-m", "factory.cli", "verify", small["id"], "--api-url", url],
                             capture_output=True, text=True, env=cli_env, timeout=180)
        assert out.returncode == 1, out.stderr + out.stdout
        assert json.loads(out.stdout)["counts"]["mismatch"] == 2
