"""The pipeline's ceiling: what the factory costs per item when generation costs nothing.

With the no-op (fake) generator, every second is the factory's own: writing the job,
publishing, claiming, recording, result shards, finalizing. Measured side by side in one
run, on SQLite and PostgreSQL, real Redis, local storage, real worker processes:

1. **ceiling**: a personalization job of N items, submitted in this process through the
   same service and relay the API uses, run by one worker process (``factory worker
   --pool solo``), timed from submit until the job has succeeded (every result in the
   database and in storage, the job finalized);
2. **naive**: the same items run as one Celery task per item (``bench/naive_app.py``: load,
   record, one object per item, commit) by one worker process, timed from publishing
   until every item has succeeded;
3. **scale**: 10x the items through the factory: the time ratio and the worker's peak RSS;
4. **scale-out**: 1, 2 and 4 worker processes on the same job size.

    python -m bench.pipeline --write    # about five minutes on a 2-core CPU
    python -m bench.pipeline --quick    # smoke mode for CI
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, select

from bench.ingest import peak_rss_mb, postgres_url, redis_url
from bench.naive_app import NAIVE_QUEUE, NAIVE_TASK
from bench.readme import write_section
from factory import queue
from factory.config import Settings
from factory.db.base import DEFAULT_TENANT
from factory.db.migrate import upgrade
from factory.db.models import Item, ItemState, Job, JobStatus
from factory.db.session import get_engine, get_sessionmaker
from factory.outbox import relay
from factory.personalization import service as personalization_service
from factory.personalization.schemas import JobCreate

REPO = Path(__file__).resolve().parents[1]
TARGET_ITEMS_PER_S = 2_000


def job_body(n: int) -> JobCreate:
    return JobCreate.model_validate({
        "kind": "personalization", "template": "Write to {{ name }} in {{ city }}.", "params": {"seed": 1},
        "audience": [{"id": f"r{i:07d}", "name": f"N{i}", "city": "Lisbon"} for i in range(n)]})


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")}
    env.update(FACTORY_DATABASE_URL=settings.database_url, FACTORY_BROKER_URL=str(settings.broker_url),
               FACTORY_STORAGE_URL=settings.storage_url, FACTORY_GENERATOR="fake",
               FACTORY_MAX_AUDIENCE=str(settings.max_audience), PYTHONUNBUFFERED="1")
    return env


@contextmanager
def processes(argvs: list[list[str]], env: dict[str, str], log: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    with log.open("ab") as out:
        procs = [subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT) for argv in argvs]
        try:
            yield procs
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def factory_workers(n: int) -> list[list[str]]:
    return [[sys.executable, "-m", "factory.cli", "worker", "--pool", "solo", "--loglevel", "WARNING"]
            for _ in range(n)]


def submit(settings: Settings, n: int) -> str:
    with get_sessionmaker(settings.database_url)() as session:
        created = personalization_service.create_job(session, settings, DEFAULT_TENANT, job_body(n))
        relay.commit_then_publish(session, settings, created.outbox_ids)
        return created.job.id


def wait_job(settings: Settings, job_id: str, procs: list[subprocess.Popen[bytes]], timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    with get_sessionmaker(settings.database_url)() as session:
        while True:
            status = session.scalar(select(Job.status).where(Job.id == job_id))
            session.rollback()
            if status == JobStatus.SUCCEEDED:
                return
            if status in (JobStatus.FAILED, JobStatus.CANCELLED) or time.monotonic() > deadline \
                    or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"job {job_id} ended as {status} (or a worker died)")
            time.sleep(0.05)


def run_factory(settings: Settings, items: int, workers: int, work: Path) -> dict[str, Any]:
    with processes(factory_workers(workers), env_for(settings), work / "workers.log") as procs:
        wait_job(settings, submit(settings, 8 * workers), procs)  # warm-up: every worker up and connected
        start = time.perf_counter()
        wait_job(settings, submit(settings, items), procs)
        elapsed = time.perf_counter() - start
        rss = max(peak_rss_mb(p.pid) for p in procs)
    return {"items": items, "workers": workers, "s": elapsed, "per_s": items / elapsed, "rss_mb": rss}


def run_naive(settings: Settings, items: int, work: Path) -> dict[str, Any]:
    """The same items, one task each: written like a job (never published), then sent as item tasks."""
    with get_sessionmaker(settings.database_url)() as session:
        created = personalization_service.create_job(session, settings, DEFAULT_TENANT, job_body(items))
        session.commit()  # its chunk messages stay in the outbox: only the item tasks run
        job_id = created.job.id
        item_ids = list(session.scalars(select(Item.id).where(Item.job_id == job_id).order_by(Item.seq)))
    argv = [[sys.executable, "-m", "celery", "-A", "bench.naive_app", "worker", "--pool", "solo", "-Q", NAIVE_QUEUE,
             "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]]
    with processes(argv, env_for(settings), work / "naive.log") as procs, \
            get_sessionmaker(settings.database_url)() as session:
        time.sleep(3)  # the worker connects (it only consumes what is published after)
        start = time.perf_counter()
        queue.send_many(settings, NAIVE_TASK, NAIVE_QUEUE, [(f"naive-{i}", [item_id]) for i, item_id in
                                                            enumerate(item_ids)])
        deadline = time.monotonic() + 1800
        while True:
            done = session.scalar(select(func.count()).select_from(Item)
                                  .where(Item.job_id == job_id, Item.state == ItemState.SUCCEEDED))
            session.rollback()
            if done == items:
                break
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError(f"naive run stalled at {done}/{items}")
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
    return {"items": items, "s": elapsed, "per_s": items / elapsed}


def measure(backend: str, db_url: str, broker: str, items: int, scale: int, work: Path) -> dict[str, Any]:
    upgrade(db_url)
    settings = Settings(database_url=db_url, broker_url=broker, storage_url=f"file://{work}/objects-{backend}",
                        max_audience=items * scale)
    redis.Redis.from_url(broker).flushdb()
    row: dict[str, Any] = {"backend": backend}
    row["factory"] = run_factory(settings, items, 1, work)
    row["naive"] = run_naive(settings, items, work)
    row["scale"] = run_factory(settings, items * scale, 1, work) if scale > 1 else None
    row["out"] = [run_factory(settings, items, n, work) for n in (2, 4)]
    get_engine(db_url).dispose()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke mode: 400 items, no 10x run")
    ap.add_argument("--write", action="store_true", help="record the tables in bench/README.md")
    ap.add_argument("--items", type=int, default=None)
    args = ap.parse_args()
    items = args.items or (400 if args.quick else 4_000)
    scale = 1 if args.quick else 10
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="factory-bench-") as tmp, redis_url() as broker, ExitStack() as stack:
        work = Path(tmp)
        db = f"{broker}/{1 + uuid.uuid4().int % 15}"
        rows.append(measure("sqlite", f"sqlite:///{work}/pipeline.db", db, items, scale, work))
        pg = stack.enter_context(postgres_url())
        if pg is not None:
            rows.append(measure("postgresql", pg, db, items, scale, work))
    table = ("| database | items | factory, 1 worker (items/s) | vs 2,000 target | naive one task per item (items/s) "
             "| factory / naive | 10x items: time ratio | worker peak RSS (MB), 1x / 10x | 2 workers (items/s) "
             "| 4 workers (items/s) |\n|---|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        f, n, s = r["factory"], r["naive"], r["scale"]
        table += (f"| {r['backend']} | {items:,} | {f['per_s']:,.0f} | **{f['per_s'] / TARGET_ITEMS_PER_S:.2f}x** "
                  f"| {n['per_s']:,.0f} | **{f['per_s'] / n['per_s']:.1f}x** "
                  f"| {(s['s'] / f['s']) if s else float('nan'):.1f} | {f['rss_mb']:.0f} / "
                  f"{s['rss_mb'] if s else float('nan'):.0f} | {r['out'][0]['per_s']:,.0f} "
                  f"| {r['out'][1]['per_s']:,.0f} |\n")
    meta = (f"no-op (fake) generator, chunk size 8, local file storage, Redis; one `--pool solo` worker process "
            f"unless said; python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}; load "
            f"average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; `python -m bench.pipeline --write`")
    print(table)
    print(meta)
    if args.quick:
        assert all(r["factory"]["per_s"] > r["naive"]["per_s"] for r in rows), "chunking was not faster than naive"
    if args.write:
        write_section("pipeline", table.rstrip("\n"), meta)


if __name__ == "__main__":
    main()
