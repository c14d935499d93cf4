"""DELETE /v1/files/{id} erases what was copied from the file, on SQLite and PostgreSQL with a real Redis.

Campaign audiences, augmentation datasets and batch inputs: after the delete, no row and no object
holds a value of the file, the rows the ledger needs are still there, and a job that was running
on it is cancelled and erased by the reconciler once it ended. The last test does it on real S3
and stops S3 mid-way: nothing changes, and the retry finishes the job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from factory.batches import chunks as batch_chunks
from factory.batches import claim as batch_claim
from factory.batches import finalize as batch_finalize
from factory.config import Settings
from factory.db.models import AugmentationSourceRow, Batch, Item, ItemState, Job
from factory.db.session import get_sessionmaker
from factory.jobs import execution
from factory.reliability.reconciler import Reconciler
from factory.storage import open_store
from factory.storage.keys import job_prefix
from tests import campaign_data as data
from tests.inprocess import run_to_the_end
from tests.keys import api_test_client
from tests.privacy_checks import objects_with, rows_with
from tests.rows import count_rows
from tests.services import SeaweedS3

CANARY = "CANARY-e5a1-personal-value"


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                    chunk_size=4, max_audience=100, batch_max_file_bytes=64 * 1024, batch_max_line_bytes=16 * 1024,
                    reconcile_grace_s=0)


def _upload(client: TestClient, content: bytes, filename: str, purpose: str = "user_data") -> str:
    r = client.post("/v1/files", files={"file": (filename, content)}, data={"purpose": purpose})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _campaign_from_file(client: TestClient) -> tuple[str, str]:
    """A segment campaign whose uploaded audience carries the canary (a key, a name, an interest: a ninth
    segment); (file, job)."""
    assert client.post("/v1/brands", json=data.brand()).status_code == 201
    for name in ("autumn-email-segment", "autumn-sms-segment"):
        assert client.post("/v1/templates", json=data.template(name)).status_code == 201
    rows = data.audience_rows()
    rows[0].update(id=f"{CANARY}-key", first_name=f"{CANARY}-name", interest=f"{CANARY}-interest")
    file_id = _upload(client, data.csv_bytes(rows), "audience.csv")
    body = data.segment_campaign(audience={"file_id": file_id, "format": "csv", "key_column": "id"})
    r = client.post("/v1/campaigns", json=body)
    assert r.status_code == 202, r.text
    return file_id, str(r.json()["id"])


def _items(settings: Settings, job_id: str) -> list[Item]:
    with get_sessionmaker(settings.database_url)() as s:
        return list(s.scalars(select(Item).where(Item.job_id == job_id).order_by(Item.seq)))


def _assert_erased(settings: Settings, job_id: str, states: list[ItemState]) -> None:
    """No value of the file left; the job's items still there, in the same states, emptied."""
    assert rows_with(settings, CANARY) == []
    assert objects_with(settings, CANARY) == []
    assert list(open_store(settings).list_keys(job_prefix("default", job_id))) == []
    items = _items(settings, job_id)
    assert [i.state for i in items] == states
    assert all((i.key, i.record, i.prompt, i.request, i.text, i.fields) == (i.id, {}, "", None, None, None)
               for i in items)


def test_deleting_an_audience_file_erases_what_its_finished_campaign_copied(client: TestClient,
                                                                             settings: Settings) -> None:
    file_id, job_id = _campaign_from_file(client)
    inline = client.post("/v1/campaigns", json=data.segment_campaign()).json()["id"]  # not made from the file
    run_to_the_end(settings, job_id, f"Hi {CANARY}-name, autumn is here")
    run_to_the_end(settings, inline, "Hi Ravi, autumn is here")
    before = client.get(f"/v1/jobs/{job_id}").json()
    # The canary is everywhere a copy goes (so the assertions below can fail).
    assert {"items.record", "items.request", "items.prompt", "items.text"} <= set(rows_with(settings, CANARY))
    assert any(k.endswith("campaign/audience.jsonl") for k in objects_with(settings, CANARY))

    r = client.delete(f"/v1/files/{file_id}")
    assert r.status_code == 200 and r.json() == {"id": file_id, "object": "file", "deleted": True}

    _assert_erased(settings, job_id, [ItemState.SUCCEEDED] * 18)
    assert client.get(f"/v1/files/{file_id}").status_code == 404
    assert client.delete(f"/v1/files/{file_id}").status_code == 404
    after = client.get(f"/v1/jobs/{job_id}").json()
    assert (after["status"], after["counts"]) == (before["status"], before["counts"]) == ("succeeded", after["counts"])
    # The campaign made from an inline audience keeps everything.
    kept = _items(settings, inline)
    assert len(kept) == 16 and all(i.text == "Hi Ravi, autumn is here" and i.record for i in kept)
    assert list(open_store(settings).list_keys(job_prefix("default", inline)))


def test_a_campaign_still_running_on_a_deleted_file_is_cancelled_and_erased_once_it_ended(
        client: TestClient, settings: Settings) -> None:
    file_id, job_id = _campaign_from_file(client)
    assert client.delete(f"/v1/files/{file_id}").status_code == 200
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelling"
    reconciler = Reconciler(settings)
    assert reconciler.run_once().jobs_erased == 0  # not ended yet: nothing is erased under it
    with get_sessionmaker(settings.database_url)() as s:
        execution.finish_job(s, job_id)  # what its finalize task does
        s.commit()
    result = reconciler.run_once()
    assert (result.leader, result.jobs_erased, result.failed_steps) == (True, 1, [])
    _assert_erased(settings, job_id, [ItemState.CANCELLED] * 18)
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    assert reconciler.run_once().jobs_erased == 0  # once


def test_deleting_a_dataset_file_erases_the_source_rows_and_items_of_its_augmentation_job(
        client: TestClient, settings: Settings) -> None:
    rows = [{"id": f"r{i}", "text": f"{CANARY} message {i} about my order", "label": "refund"} for i in range(4)]
    content = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    file_id = _upload(client, content, "dataset.jsonl")
    r = client.post("/v1/jobs", json={"kind": "augmentation", "dataset": {"file_id": file_id, "format": "jsonl"},
                                      "methods": [{"method": "eda", "k": 2}], "params": {"seed": 11}})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    run_to_the_end(settings, job_id, f"{CANARY} augmented")
    assert count_rows(settings.database_url, AugmentationSourceRow) == 4
    assert client.delete(f"/v1/files/{file_id}").status_code == 200
    assert count_rows(settings.database_url, AugmentationSourceRow) == 0
    _assert_erased(settings, job_id, [ItemState.SUCCEEDED] * 8)
    assert client.get(f"/v1/jobs/{job_id}").json()["counts"]["succeeded"] == 8


def _chat_line(custom_id: str) -> bytes:
    body = {"model": "smollm2-135m-instruct", "max_tokens": 8,
            "messages": [{"role": "user", "content": f"Write to {CANARY} about the order"}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": body}).encode() + b"\n"


def test_deleting_a_batch_input_cancels_the_batch_and_erases_its_items_and_output_files(
        client: TestClient, settings: Settings) -> None:
    file_id = _upload(client, b"".join(_chat_line(f"{CANARY}-{i}") for i in range(6)), "in.jsonl", "batch")
    batch = client.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                             "completion_window": "24h"}).json()
    store = open_store(settings)
    with get_sessionmaker(settings.database_url)() as s:
        job = s.scalars(select(Job).join(Batch, Batch.job_id == Job.id).where(Batch.id == batch["id"])).one()
        job_id, input_key = job.id, job.options[batch_chunks.INPUT_KEY]
    assert client.delete(f"/v1/files/{file_id}").status_code == 200
    assert client.get(f"/v1/batches/{batch['id']}").json()["status"] == "cancelling"
    assert store.exists(input_key)  # its finalize step still answers the lines from it
    with get_sessionmaker(settings.database_url)() as s:  # what its finalize task does
        job = s.get(Job, job_id)
        assert job is not None
        batch_claim.write_unclaimed_items(s, settings, store, job)
        batch_finalize.finalize_batch(s, store, job)
        execution.finish_job(s, job_id)
        s.commit()
    ended = client.get(f"/v1/batches/{batch['id']}").json()
    assert ended["status"] == "cancelled" and ended["error_file_id"] is not None
    assert not store.exists(input_key)
    assert CANARY in client.get(f"/v1/files/{ended['error_file_id']}/content").text

    assert Reconciler(settings).run_once().jobs_erased == 1
    _assert_erased(settings, job_id, [ItemState.CANCELLED] * 6)
    out = client.get(f"/v1/batches/{batch['id']}").json()
    assert (out["status"], out["request_counts"]) == ("cancelled", ended["request_counts"])
    assert (out["output_file_id"], out["error_file_id"]) == (None, None)
    assert client.get(f"/v1/files/{ended['error_file_id']}").status_code == 404


@pytest.fixture
def s3_settings(db_url: str, broker_url: str, s3_server: SeaweedS3, s3_bucket: str) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"s3://{s3_bucket}",
                    s3_endpoint_url=s3_server.endpoint, s3_access_key_id="test", s3_secret_access_key="test",
                    chunk_size=4, max_audience=100, batch_max_file_bytes=64 * 1024, batch_max_line_bytes=16 * 1024)


def test_a_delete_while_s3_is_down_changes_nothing_and_its_retry_finishes_the_job(
        s3_settings: Settings, s3_server: SeaweedS3) -> None:
    settings = s3_settings
    with api_test_client(settings) as client:
        file_id, job_id = _campaign_from_file(client)
        run_to_the_end(settings, job_id, f"Hi {CANARY}-name")
        copies = rows_with(settings, CANARY)
        s3_server.stop()
        try:
            r = client.delete(f"/v1/files/{file_id}")
            assert r.status_code == 503 and r.json()["error"]["code"] == "storage_unavailable"
            assert rows_with(settings, CANARY) == copies  # rolled back whole
            assert client.get(f"/v1/files/{file_id}").status_code == 200
        finally:
            s3_server.start()
        assert client.delete(f"/v1/files/{file_id}").status_code == 200
        _assert_erased(settings, job_id, [ItemState.SUCCEEDED] * 18)
        assert client.get(f"/v1/files/{file_id}").status_code == 404
