"""Reading a stored file line by line, and scanning an upload, with bounded memory."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from factory.config import Settings
from factory.db.models import StoredFile
from factory.errors import FileTooLarge, InvalidInput
from factory.files.service import clean_filename, iter_lines, iter_lines_at, scan_jsonl
from factory.storage.local import LocalStore


def _stored(tmp_path: Path, data: bytes) -> tuple[LocalStore, StoredFile]:
    store = LocalStore(tmp_path)
    store.put_bytes("f.jsonl", data)
    return store, StoredFile(storage_key="f.jsonl")


def test_lines_split_across_reads_and_a_last_line_without_newline(tmp_path: Path) -> None:
    lines = [b"x" * n for n in (10, 70_000, 0, 5, 140_000)]
    store, row = _stored(tmp_path, b"\n".join(lines))
    assert list(iter_lines(store, row, 1 << 20)) == list(enumerate(lines, start=1))


def test_an_overlong_line_is_cut_so_the_caller_can_report_it(tmp_path: Path) -> None:
    store, row = _stored(tmp_path, b"short\n" + b"y" * 300_000 + b"\nafter\n")
    out = list(iter_lines(store, row, 1000))
    assert [(n, len(raw)) for n, raw in out] == [(1, 5), (2, 1001), (3, 5)]


def test_each_line_comes_with_its_byte_offset_even_after_an_overlong_one(tmp_path: Path) -> None:
    data = b"a\n\n" + b"x" * 70_000 + b"\r\n" + b"y" * 300_000 + b"\nlast"
    store, row = _stored(tmp_path, data)
    out = list(iter_lines_at(store, row, 100_000))
    assert [(n, offset, len(raw)) for n, offset, raw in out] == [
        (1, 0, 1), (2, 2, 0), (3, 3, 70_001), (4, 70_005, 100_001), (5, 370_006, 4)]
    for _, offset, raw in out[:3] + out[4:]:  # the cut line aside, each line is where its offset says
        assert store.get_range("f.jsonl", offset, len(raw)) == raw


def test_scan_counts_lines_and_enforces_limits() -> None:
    settings = Settings(batch_max_lines=3, batch_max_file_bytes=2048, batch_max_line_bytes=1024)
    scanned = scan_jsonl(io.BytesIO(b'{"a":1}\n\n{"b":2}\n'), settings)
    assert (scanned.bytes, scanned.lines) == (17, 2)
    with pytest.raises(InvalidInput, match="more than 3 lines"):
        scan_jsonl(io.BytesIO(b"{}\n" * 4), settings)
    with pytest.raises(InvalidInput, match="line 2 is longer"):
        scan_jsonl(io.BytesIO(b"{}\n" + b"z" * 1500 + b"\n"), settings)
    with pytest.raises(FileTooLarge):
        scan_jsonl(io.BytesIO((b"q" * 1000 + b"\n") * 3), settings)
    with pytest.raises(InvalidInput, match="empty"):
        scan_jsonl(io.BytesIO(b"\n \n"), settings)


def test_filenames_are_cleaned() -> None:
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("C:\\x\\in.jsonl") == "in.jsonl"
    assert clean_filename("a\x00b\nc.jsonl") == "abc.jsonl"
    assert clean_filename(None) == "upload.jsonl"
    assert len(clean_filename("n" * 400)) == 255
