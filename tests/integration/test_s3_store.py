"""The S3 backend against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import pytest

from factory.config import Settings
from factory.errors import NotFound
from factory.storage import close_stores, open_store
from tests.services import SeaweedS3


def test_s3_round_trip_list_and_overwrite(s3_server: SeaweedS3, s3_bucket: str, request: pytest.FixtureRequest) -> None:
    settings = Settings(storage_url=f"s3://{s3_bucket}/prefix", s3_endpoint_url=s3_server.endpoint,
                        s3_access_key_id="test", s3_secret_access_key="test")
    store = open_store(settings)
    request.addfinalizer(close_stores)
    store.put_bytes("jobs/j1/results/chunk-000000.jsonl", b'{"a":1}\n', "application/x-ndjson")
    store.put_bytes("jobs/j1/results/chunk-000001.jsonl", b'{"a":2}\n')
    store.put_bytes("jobs/j1/results/chunk-000000.jsonl", b'{"a":3}\n')  # a redelivered chunk overwrites
    assert store.get_bytes("jobs/j1/results/chunk-000000.jsonl") == b'{"a":3}\n'
    assert list(store.list_keys("jobs/j1/")) == ["jobs/j1/results/chunk-000000.jsonl",
                                                 "jobs/j1/results/chunk-000001.jsonl"]
    # The bucket was created on first use and the prefix is applied on the server side.
    raw = s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert sorted(o["Key"] for o in raw) == ["prefix/jobs/j1/results/chunk-000000.jsonl",
                                             "prefix/jobs/j1/results/chunk-000001.jsonl"]
    assert store.exists("jobs/j1/results/chunk-000001.jsonl")
    assert not store.exists("jobs/j1/nope")
    with pytest.raises(NotFound):
        store.get_bytes("jobs/j1/nope")
    assert store.describe("k") == f"s3://{s3_bucket}/prefix/k"


def test_s3_streamed_upload_and_read(s3_server: SeaweedS3, s3_bucket: str, request: pytest.FixtureRequest) -> None:
    """put_file goes multipart above 8 MiB; iter_bytes reads in bounded pieces."""
    import io

    settings = Settings(storage_url=f"s3://{s3_bucket}", s3_endpoint_url=s3_server.endpoint,
                        s3_access_key_id="test", s3_secret_access_key="test")
    store = open_store(settings)
    request.addfinalizer(close_stores)
    data = b"".join(b'{"line": %d}\n' % i for i in range(900_000))  # ~12 MiB: two parts
    store.put_file("files/big.jsonl", io.BytesIO(data), "application/jsonl")
    pieces = list(store.iter_bytes("files/big.jsonl", 1 << 16))
    assert b"".join(pieces) == data and max(len(p) for p in pieces) <= 1 << 16
    with pytest.raises(NotFound):
        list(store.iter_bytes("files/nope.jsonl"))
    # A byte range (how a worker reads its chunk's lines of a batch file), also across the part boundary.
    for offset, length in [(0, 13), ((8 << 20) - 5, 40), (len(data) - 7, 100)]:
        assert store.get_range("files/big.jsonl", offset, length) == data[offset:offset + length]
    with pytest.raises(NotFound):
        store.get_range("files/nope.jsonl", 0, 10)
