"""Campaign audiences uploaded to /v1/files (purpose user_data), on SQLite and PostgreSQL with a real Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from factory.config import Settings
from factory.db.models import Item, Job, OutboxMessage, StoredFile
from factory.db.session import get_sessionmaker
from tests import campaign_data as data
from tests.rows import count_rows

CANARY = "CANARY-7c2d-NOT-ECHOED"
UNKNOWN_FILE = "file_000000000000000000000000000000"


@pytest.fixture
def settings(db_url: str, broker_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, broker_url=broker_url, storage_url=f"file://{tmp_path}/objects",
                    chunk_size=4, max_audience=100, batch_max_file_bytes=64 * 1024,
                    batch_max_line_bytes=16 * 1024)


def _setup(client: TestClient) -> None:
    assert client.post("/v1/brands", json=data.brand()).status_code == 201
    for name in ("autumn-email-segment", "autumn-sms-segment"):
        assert client.post("/v1/templates", json=data.template(name)).status_code == 201


def _upload(client: TestClient, content: bytes, filename: str = "audience.csv", purpose: str = "user_data") -> str:
    r = client.post("/v1/files", files={"file": (filename, content)}, data={"purpose": purpose})
    assert r.status_code == 200, r.text
    assert r.json()["purpose"] == purpose and r.json()["bytes"] == len(content)
    return str(r.json()["id"])


def _from_file(file_id: str, fmt: str = "csv", **audience: Any) -> dict[str, Any]:
    return data.segment_campaign(audience={"file_id": file_id, "format": fmt, "key_column": "id", **audience})


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _stored_audience(settings: Settings, job_id: str) -> list[dict[str, Any]]:
    path = (Path(settings.storage_url.removeprefix("file://")) / "tenants/default/jobs" / job_id
            / "campaign/audience.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_campaign_reads_its_audience_from_an_uploaded_file(client: TestClient, settings: Settings,
                                                             fmt: str) -> None:
    _setup(client)
    rows = data.audience_rows()
    content = data.AUDIENCE_CSV.read_bytes() if fmt == "csv" else _jsonl(rows)
    file_id = _upload(client, content, f"audience.{fmt}")
    r = client.post("/v1/campaigns", json=_from_file(file_id, fmt))
    assert r.status_code == 202, r.text
    c = r.json()
    assert (c["mode"], c["recipients"], c["segments"], c["counts"]["total"]) == ("segment", 240, 8, 16)
    assert count_rows(settings.database_url, Item) == 16
    # The same items as the same audience given inline.
    inline = client.post("/v1/campaigns", json=data.segment_campaign())
    assert inline.status_code == 202, inline.text
    with get_sessionmaker(settings.database_url)() as s:
        def items(job_id: str) -> list[tuple[str, Any, str]]:
            return [(i.key, i.record, i.prompt) for i in s.scalars(select(Item).where(Item.job_id == job_id)
                                                                    .order_by(Item.seq))]
        assert items(c["id"]) == items(inline.json()["id"])
    stored = _stored_audience(settings, c["id"])
    assert [x["key"] for x in stored] == [row["id"] for row in rows]
    assert stored[0]["merge"] == {"first_name": rows[0]["first_name"]}
    # The upload is still there, unchanged, for the next campaign.
    assert client.get(f"/v1/files/{file_id}/content").content == content


def test_a_column_mapping_and_key_column_apply_to_an_uploaded_file(client: TestClient, settings: Settings) -> None:
    _setup(client)
    rows = [{"customer": r["id"], "given_name": r["first_name"], "tier": r["tier"], "interest": r["interest"]}
            for r in data.audience_rows()[:12]]
    file_id = _upload(client, data.csv_bytes(rows))
    body = data.segment_campaign(audience={"file_id": file_id, "format": "csv", "key_column": "customer",
                                           "columns": {"first_name": "given_name"}})
    r = client.post("/v1/campaigns", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["recipients"] == 12
    stored = _stored_audience(settings, r.json()["id"])
    assert [(x["key"], x["merge"]["first_name"]) for x in stored] == [(r["customer"], r["given_name"]) for r in rows]


def _bad_files() -> list[tuple[str, bytes | None, str, dict[str, Any], int, str, str]]:
    rows = data.audience_rows()[:5]
    no_key = [{k: v for k, v in r.items() if k != "id"} for r in rows]
    dupes = [*rows, rows[1]]
    canary_dupes = [*rows, {**rows[1], "first_name": CANARY}]
    return [
        # (case, uploaded content, purpose, audience overrides, status, field, message)
        ("unknown file", None, "user_data", {}, 404, "audience.file_id", "no such file"),
        ("batch file", _jsonl(rows), "batch", {}, 422, "audience.file_id", "purpose 'user_data'"),
        ("missing key column", data.csv_bytes(no_key), "user_data", {}, 422, "audience.key_column",
         "no key column 'id'"),
        ("duplicate keys", data.csv_bytes(dupes), "user_data", {}, 422, "audience.key_column",
         "row 6 repeats a recipient key"),
        ("duplicate keys, canary", data.csv_bytes(canary_dupes), "user_data", {}, 422, "audience.key_column",
         "row 6 repeats a recipient key"),
        ("non-UTF-8", data.csv_bytes(rows).replace(b"Ravi", b"R\xe4vi"), "user_data", {}, 422, "audience.file_id",
         "not valid UTF-8 (line 2)"),
        ("jsonl read as jsonl, not json", data.csv_bytes(rows), "user_data", {"format": "jsonl"}, 422,
         "audience.file_id", "line 1 is not valid JSON"),
        ("missing mapped column", data.csv_bytes(rows), "user_data", {"columns": {"first_name": "given"}}, 422,
         "audience.columns.first_name", "no column 'given'"),
        ("encoding with a file", data.csv_bytes(rows), "user_data", {"encoding": "base64"}, 422, "audience",
         "'encoding' applies to 'data'"),
        ("file and data", data.csv_bytes(rows), "user_data", {"data": "id\n1\n"}, 422, "audience",
         "give 'records'"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_files())), ids=lambda i: _bad_files()[i][0])
def test_bad_audience_files_are_4xx_naming_the_field_with_nothing_written(
    case: int, client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    _setup(client)
    _, content, purpose, overrides, status, field, message = _bad_files()[case]
    file_id = _upload(client, content, purpose=purpose) if content is not None else UNKNOWN_FILE
    r = client.post("/v1/campaigns", json=_from_file(file_id, **overrides))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["field"] == field and message in err["message"], err
    assert CANARY not in r.text and "cust-0002" not in r.text
    assert count_rows(settings.database_url, Job) == 0
    assert count_rows(settings.database_url, Item) == 0
    assert count_rows(settings.database_url, OutboxMessage) == 0
    assert count_rows(settings.database_url, StoredFile) == (1 if content is not None else 0)
    assert not list((tmp_path / "objects").rglob("audience.jsonl"))


def test_data_uploads_keep_the_size_limit_but_not_the_line_scan(client: TestClient, settings: Settings) -> None:
    # A data file is not scanned line by line: a line longer than the batch line limit is fine.
    long_line = b"x" * 40_000
    r = client.post("/v1/files", files={"file": ("in.jsonl", long_line)}, data={"purpose": "batch"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "file"
    assert client.post("/v1/files", files={"file": ("blob.bin", long_line)},
                       data={"purpose": "user_data"}).status_code == 200
    r = client.post("/v1/files", files={"file": ("big.csv", b"id\n" + b"1\n" * 40_000)}, data={"purpose": "user_data"})
    assert r.status_code == 413 and r.json()["error"]["param"] == "file"
    r = client.post("/v1/files", files={"file": ("empty.csv", b"")}, data={"purpose": "user_data"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "file"
    assert count_rows(settings.database_url, StoredFile) == 1
    listed = client.get("/v1/files", params={"purpose": "user_data"}).json()["data"]
    assert [f["filename"] for f in listed] == ["blob.bin"]
    # A data file cannot feed a batch.
    r = client.post("/v1/batches", json={"input_file_id": listed[0]["id"], "endpoint": "/v1/chat/completions",
                                         "completion_window": "24h"})
    assert r.status_code == 422 and r.json()["error"]["param"] == "input_file_id"
