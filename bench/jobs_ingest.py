"""``POST /v1/jobs`` with a large inline audience, in a real API process, on SQLite and PostgreSQL.

What the request does before it answers: decode the body strictly, validate every record,
render the template for every recipient (the bounded sandbox; a template that only prints
fields substitutes them without Jinja), write the job, its chunks, one item row per
recipient and the outbox, commit, then publish one message per chunk. The clock runs from
sending the request to its answer. The target: at least 20,000 recipients a second on
both databases.

    python -m bench.jobs_ingest --write     # 20,000 recipients, median of 3 per database
    python -m bench.jobs_ingest --quick     # smoke mode for CI
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.ingest import MODEL, api_process, bench_key_headers, cpu_seconds, median_run, postgres_url, redis_url
from bench.readme import write_section

TARGET = 20_000
TEMPLATE = ("Write a two-sentence email to {{ first_name }} in {{ city }}. They last bought {{ last_purchase }}; "
            "suggest something that goes with it.")
CITIES = ["Lisbon", "Denver", "Lyon", "Pune", "Oslo", "Calgary", "Wellington", "Sapporo"]
PRODUCTS = ["trail shoes", "a rain jacket", "an espresso grinder", "a yoga mat", "a desk lamp"]


def body(recipients: int) -> bytes:
    audience = [{"id": f"cust-{i:06d}", "first_name": f"Name{i}", "city": CITIES[i % 8],
                 "last_purchase": PRODUCTS[i % 5]} for i in range(recipients)]
    return json.dumps({"kind": "personalization", "model": MODEL, "template": TEMPLATE, "audience": audience,
                       "key_field": "id", "params": {"max_new_tokens": 64}}).encode()


def run_one(backend: str, db_url: str, broker: str, data: bytes, recipients: int, work: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTORY_")}
    env.update(FACTORY_DATABASE_URL=db_url, FACTORY_BROKER_URL=broker, FACTORY_STORAGE_URL=f"file://{work}/objects",
               FACTORY_MAX_AUDIENCE=str(max(recipients, 10_000)), PYTHONUNBUFFERED="1")
    redis.Redis.from_url(broker).flushdb()
    with api_process(env, work / f"api-{backend}.log") as (url, pid), \
            httpx.Client(base_url=url, timeout=600, headers=bench_key_headers(db_url)) as http:
        start, cpu_start = time.perf_counter(), cpu_seconds(pid)
        r = http.post("/v1/jobs", content=data, headers={"Content-Type": "application/json"})
        create_s, cpu_s = time.perf_counter() - start, cpu_seconds(pid) - cpu_start
        r.raise_for_status()
        job = r.json()
    assert job["counts"]["total"] == recipients, job["counts"]
    client = redis.Redis.from_url(broker)
    queued = client.llen(f"gen.{MODEL}")
    client.flushdb()
    assert queued == -(-recipients // 8), queued
    return {"backend": backend, "create_s": create_s, "cpu_s": cpu_s, "per_s": recipients / create_s,
            "queued": queued}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smoke mode: 2,000 recipients, one run")
    ap.add_argument("--write", action="store_true", help="record the table in bench/README.md")
    ap.add_argument("--recipients", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=None)
    args = ap.parse_args()
    repeat = args.repeat or (1 if args.quick else 3)
    recipients = args.recipients or (2_000 if args.quick else 20_000)
    data = body(recipients)
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="factory-bench-") as tmp, redis_url() as broker:
        work = Path(tmp)
        db = f"{broker}/{1 + uuid.uuid4().int % 15}"
        rows.append(median_run(repeat, lambda i: run_one("sqlite", f"sqlite:///{work}/jobs-{i}.db", db, data,
                                                          recipients, work)))

        def on_postgres(i: int) -> dict[str, Any]:
            with postgres_url() as pg:
                if pg is None:
                    raise LookupError("PostgreSQL went away between runs")
                return run_one("postgresql", pg, db, data, recipients, work)

        with postgres_url() as probe:
            available = probe is not None
        if available:
            rows.append(median_run(repeat, on_postgres))
    header = ("| database | recipients | body (MB) | request (s) | runs (s) | recipients/s | vs 20,000 target "
              "| API CPU (s) |\n|---|---|---|---|---|---|---|---|")
    table = "\n".join([header] + [
        f"| {r['backend']} | {recipients:,} | {len(data) / 1e6:.1f} | {r['create_s']:.2f} | {r['spread']} "
        f"| {r['per_s']:,.0f} | **{r['per_s'] / TARGET:.2f}x** | {r['cpu_s']:.2f} |" for r in rows])
    meta = (f"median of {repeat} run(s) per database, each in a fresh uvicorn process and database; chunk size 8 "
            f"({rows[0]['queued']:,} messages on Redis); python {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"{platform.machine()}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
            "`python -m bench.jobs_ingest --write`")
    print(table)
    print(meta)
    if args.write:
        write_section("jobs-ingest", table, meta)


if __name__ == "__main__":
    main()
