"""Every result is marked as machine-made and hashed; a text leads back to the items that made it.

A real API and a real worker process (fake generator) over Redis, on SQLite and PostgreSQL; the
``factory whence`` command runs against that API as a user would.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from factory.provenance.marking import TRAINED_ALGORITHMIC_MEDIA
from tests.keys import api_key
from tests.processes import api_server, factory_env, wait_job, worker

pytestmark = pytest.mark.slow


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_results_are_marked_and_found_again_by_their_text(db_url: str, broker_url: str, tmp_path: Path) -> None:
    env = factory_env(FACTORY_DATABASE_URL=db_url, FACTORY_BROKER_URL=broker_url,
                      FACTORY_STORAGE_URL=f"file://{tmp_path}/objects", FACTORY_GENERATOR="fake")
    acme, globex = api_key(db_url, "acme"), api_key(db_url, "globex")
    audience = [{"id": f"r{i}", "name": f"Ana {i}"} for i in range(5)]
    with api_server(env, tmp_path / "api.log") as url, worker(env, tmp_path / "worker.log", pool="solo"), \
            httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {acme}"}) as client, \
            httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {globex}"}) as other:
        created = client.post("/v1/jobs", json={"kind": "personalization", "template": "Hi {{ name }}",
                                                "audience": audience, "params": {"seed": 3}})
        assert created.status_code == 202, created.text
        job = wait_job(client, created.json()["id"], timeout=120)
        assert job["status"] == "succeeded"
        lines = [json.loads(x) for x in client.get(f"/v1/jobs/{job['id']}/results").text.splitlines()]
        assert len(lines) == 5
        for line in lines:
            prov = line["provenance"]
            assert prov["content_sha256"] == sha256(line["text"])
            assert prov["ai_generated"] is True
            assert prov["digital_source_type"] == TRAINED_ALGORITHMIC_MEDIA

        first = lines[0]
        found = client.get("/v1/provenance/lookup", params={"sha256": sha256(first["text"])})
        assert found.status_code == 200, found.text
        matches = found.json()["data"]
        assert [(m["item_id"], m["job_id"], m["kind"], m["key"], m["variant"]) for m in matches] == [
            (first["item_id"], job["id"], "personalization", first["key"], 0)]
        assert matches[0]["provenance"]["seed"] == first["provenance"]["seed"]
        # Another tenant's key finds nothing; an unknown hash finds nothing; a malformed one is a 422.
        assert other.get("/v1/provenance/lookup", params={"sha256": sha256(first["text"])}).json()["data"] == []
        assert client.get("/v1/provenance/lookup", params={"sha256": "0" * 64}).json()["data"] == []
        bad = client.get("/v1/provenance/lookup", params={"sha256": "ZZ" * 32})
        assert bad.status_code == 422 and "sha256" in bad.text

        # The job's PROV-JSON document: read back by the W3C PROV library; every output entity hashes to
        # what storage holds; no record value in it; another tenant gets a 404.
        document = client.get(f"/v1/jobs/{job['id']}/provenance")
        assert document.status_code == 200, document.text
        assert other.get(f"/v1/jobs/{job['id']}/provenance").status_code == 404
        check_prov_document(document.text, job["id"], tmp_path / "objects")

        cli_env = {**os.environ, "FACTORY_API_KEY": acme}
        whence = subprocess.run([sys.executable, "-m", "factory.cli", "whence", "--api-url", url],
                                input=first["text"] + "\n", capture_output=True, text=True, env=cli_env, timeout=60)
        assert whence.returncode == 0, whence.stderr + whence.stdout
        assert [json.loads(x)["item_id"] for x in whence.stdout.splitlines()] == [first["item_id"]]
        missing = subprocess.run([sys.executable, "-m", "factory.cli", "whence", "--api-url", url],
                                 input="a text nobody generated", capture_output=True, text=True, env=cli_env,
                                 timeout=60)
        assert missing.returncode == 1 and "no item of yours produced this text" in missing.stdout


def check_prov_document(text: str, job_id: str, objects: Path) -> None:
    from prov.model import ProvDocument

    parsed = ProvDocument.deserialize(content=text, format="json")
    assert len(parsed.get_records()) > 0
    doc = json.loads(text)
    assert set(doc) >= {"prefix", "entity", "activity", "agent", "used", "wasGeneratedBy", "wasAssociatedWith"}
    assert doc["activity"][f"factory:job/{job_id}"]["prov:type"] == "factory:Job"
    chunks = [a for a, v in doc["activity"].items() if v["prov:type"] == "factory:Chunk"]
    shards = {k: v for k, v in doc["entity"].items() if v["prov:type"] == "factory:ResultShard"}
    assert len(chunks) == len(shards) >= 1
    assert any(v["prov:type"] == "prov:SoftwareAgent" for v in doc["agent"].values())
    assert doc["entity"][f"factory:input/{job_id}"]["factory:records"] == 5
    outputs = {k: v for k, v in doc["entity"].items() if "prov:location" in v}
    assert len(outputs) == len(shards) + 2  # and the error file and the summary manifest
    for entity in outputs.values():
        data = (objects / entity["prov:location"]).read_bytes()  # the local store keeps a key as a path
        assert hashlib.sha256(data).hexdigest() == entity["factory:sha256"], entity["prov:location"]
    # Every relation names things the document declares.
    declared = set(doc["entity"]) | set(doc["activity"]) | set(doc["agent"])
    for relation in ("used", "wasGeneratedBy", "wasDerivedFrom", "wasInformedBy", "wasAssociatedWith"):
        for record in doc[relation].values():
            assert set(record.values()) <= declared, (relation, record)
    assert "Ana 0" not in text  # ids, hashes, times and counts only
