from collections.abc import Iterator
from pathlib import Path

import pytest

from factory.errors import NotFound
from factory.storage.keys import job_results_prefix, result_shard_key
from factory.storage.local import LocalStore


def test_shard_key_is_deterministic_and_server_built() -> None:
    key = result_shard_key("default", "job_" + "a" * 28, 7)
    assert key == f"tenants/default/jobs/job_{'a' * 28}/results/chunk-000007.jsonl"
    assert key.startswith(job_results_prefix("default", "job_" + "a" * 28))


@pytest.mark.parametrize("job_id", ["../etc", "job_../../x", "job_" + "g" * 28, ""])
def test_shard_key_refuses_malformed_ids(job_id: str) -> None:
    with pytest.raises(ValueError):
        result_shard_key("default", job_id, 0)


def test_local_store_round_trip_and_listing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    store.put_bytes("a/b/one.jsonl", b"1\n")
    store.put_bytes("a/b/one.jsonl", b"2\n")  # overwrite in place
    store.put_bytes("a/c/two.jsonl", b"x")
    assert store.get_bytes("a/b/one.jsonl") == b"2\n"
    assert list(store.list_keys("a/")) == ["a/b/one.jsonl", "a/c/two.jsonl"]
    assert list(store.list_keys("a/b/")) == ["a/b/one.jsonl"]
    assert store.exists("a/c/two.jsonl") and not store.exists("a/zzz")
    with pytest.raises(NotFound):
        store.get_bytes("a/zzz")


def test_local_store_confines_keys(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    with pytest.raises(ValueError):
        store.put_bytes("../outside", b"x")
    assert not (tmp_path / "outside").exists()


def test_local_store_streams_files_in_and_out(tmp_path: Path) -> None:
    import io

    store = LocalStore(tmp_path / "objects")
    data = b"x" * 200_000
    store.put_file("f/content.jsonl", io.BytesIO(data))
    assert b"".join(store.iter_bytes("f/content.jsonl", 1 << 16)) == data
    assert [len(p) for p in store.iter_bytes("f/content.jsonl", 1 << 16)] == [65536, 65536, 65536, 3392]
    with pytest.raises(NotFound):
        list(store.iter_bytes("f/missing"))


def test_file_keys_are_server_built() -> None:
    from factory.storage.keys import file_content_key

    assert file_content_key("default", "file_" + "b" * 28) == f"tenants/default/files/file_{'b' * 28}/content.jsonl"
    with pytest.raises(ValueError):
        file_content_key("default", "../../etc/passwd")


def test_a_stored_object_reads_as_a_stream_chunk_by_chunk(tmp_path: Path) -> None:
    from factory.storage.streams import ChunkStream, open_object

    store = LocalStore(tmp_path / "objects")
    content = b"".join(f"line {i}\n".encode() for i in range(1000))
    store.put_bytes("a/data.csv", content)
    with open_object(store, "a/data.csv", chunk_size=7) as stream:  # lines straddle every chunk
        assert stream.readline() == b"line 0\n"
        assert list(stream)[-1] == b"line 999\n"
    handed_out: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(100):
            handed_out.append(i)
            yield b"x" * 10

    early = ChunkStream(chunks())
    assert early.read(25) == b"x" * 10  # a raw read returns at most one chunk
    early.close()  # a reader that stops early stops the download: nothing more is fetched
    assert handed_out == [0]
